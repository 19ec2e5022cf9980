"""An LLM playing ALFWorld: prompts in, commands out, every token recorded for training.

`LLMPolicy.act` builds one prompt per live episode, generates all responses in one batched
call (constrained to the admissible commands, or free), parses them, and returns decisions
whose `tokens` (an `agents.policy.TokenRecord`) hold what the loss needs: prompt and response
token ids, the sampling log-probs, forced-token flags and the loss mask over the response.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from agents.constrained import ACTION, THINK, ActionConstraint
from agents.engines import GenerationEngine, HFEngine
from agents.generation import Generation
from agents.parsing import REACT, parse_output
from agents.policy import Decision, TokenRecord, Turn
from agents.prefix_cache import common_prefix_length
from agents.prompts import VERL_AGENT, PromptConfig, full_messages, step_messages

DECODINGS = ("constrained", "free")
LOSS_TOKENS = ("action", "response")  # what the loss covers of a response (see `LLMPolicy._loss_mask`)


@dataclass(frozen=True)
class DecodingConfig:
    decoding: str = "constrained"  # constrained: sample only admissible commands; free: any text
    max_new_tokens: int = 64  # cap per response (endless text is cut here)
    max_think_tokens: int = 48  # react format under constraint: cap of the free thought
    temperature: float = 1.0  # 1.0 for training, so recorded log-probs are the model's
    top_p: float = 1.0
    loss_tokens: str = "action"  # action: the command only; response: every generated token (verl-agent)
    cache_prefixes: bool = True  # step context: run the model over a game's shared prompt start once

    def __post_init__(self):
        if self.decoding not in DECODINGS:
            raise ValueError(f"expected decoding in {list(DECODINGS)}, got {self.decoding!r}")
        if self.max_new_tokens < 1:
            raise ValueError(f"expected max_new_tokens >= 1, got {self.max_new_tokens}")
        if self.loss_tokens not in LOSS_TOKENS:
            raise ValueError(f"expected loss_tokens in {list(LOSS_TOKENS)}, got {self.loss_tokens!r}")


def turn_seed(episode_seed: int, turn: int) -> int:
    """The sampling seed of one turn: a function of the episode and the turn only."""
    return int(np.random.SeedSequence([episode_seed, turn]).generate_state(1)[0])


class LLMPolicy:
    """A causal LM as an ALFWorld policy (see the module docstring)."""

    needs_expert = False

    def __init__(
        self,
        model,
        tokenizer,
        prompt: PromptConfig = PromptConfig(),
        decoding: DecodingConfig = DecodingConfig(),
        name: str = "llm",
        trunk_layers: int | None = None,
        engine: GenerationEngine | None = None,
    ):
        """`trunk_layers`: record, for training, the hidden states entering that block from the
        top (see `agents.trunk`); only where the blocks below it are frozen, and only where the
        engine records them. `engine`: what generates (`agents.engines`); by default transformers
        on `model` itself."""
        self.model, self.tokenizer = model, tokenizer
        self.prompt, self.decoding, self.name = prompt, decoding, name
        self.constrained = decoding.decoding == "constrained"
        if self.constrained and prompt.show_admissible is PromptConfig.show_admissible:
            # the constraint already restricts the choice: keep prompts short for small models
            self.prompt = dataclasses.replace(prompt, show_admissible=False)
        self._eos = tokenizer.eos_token_id
        self._encode = lambda text: tokenizer.encode(text, add_special_tokens=False)
        react = self.prompt.output_format == REACT
        self._action_end = [*self._encode("</action>"), self._eos] if react else [self._eos]
        self._think_close = self._encode("</think>") if react else None
        self._action_open = self._encode("\n<action>") if react else []
        self._conversations: dict[str, list[int]] = {}  # full mode: each episode's tokens so far
        # step context: a game's prompts share a start, which engines and training compute once
        self.shares_prefixes = decoding.cache_prefixes and self.prompt.context == "step"
        self.engine = engine or HFEngine(model, tokenizer, prefix_cache=self.shares_prefixes, trunk_layers=trunk_layers)
        self._stems: dict[tuple[str, str], list[int]] = {}  # (task, intro) -> tokens all its prompts begin with

    # -- prompts -----------------------------------------------------------------------------
    def _render(self, messages: list[dict[str, str]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self._encode(text)

    def _continuation(self, observation: str, admissible: list[str], ended_with_eos: bool) -> list[int]:
        """Tokens that follow an assistant reply in full mode: end of turn, user message, header."""
        marker = "\x00REPLY\x00"
        messages = full_messages(self.prompt, "", ((marker, marker),), [marker], observation, admissible)
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        suffix = text.split(marker)[-1]
        if ended_with_eos and suffix.startswith(self.tokenizer.eos_token):
            suffix = suffix[len(self.tokenizer.eos_token) :]
        return self._encode(suffix)

    def prompt_ids(self, turn: Turn) -> list[int]:
        """The prompt of a turn. Full mode extends the episode's own token sequence, so the
        episode's final sample holds exactly the tokens that were generated."""
        admissible = list(turn.info["admissible_commands"])
        intro = _intro(turn)
        if self.prompt.context == "step":
            return self._render(
                step_messages(self.prompt, turn.info["task"], intro, turn.history, turn.observation, admissible)
            )
        if turn.turn == 0 or turn.episode_id not in self._conversations:
            ids = self._render(full_messages(self.prompt, intro, (), [], turn.observation, admissible))
            return ids
        ids = self._conversations[turn.episode_id]
        return ids + self._continuation(turn.observation, admissible, ids[-1:] == [self._eos])

    def _stem(self, task: str, intro: str) -> list[int]:
        """The tokens every step-wise prompt of an episode begins with: its first turn's prompt,
        cut where a later turn's prompt departs from it (after the room)."""
        key = (task, intro)
        if key not in self._stems:
            if len(self._stems) >= 4096:
                self._stems.clear()
            first = self._render(step_messages(self.prompt, task, intro, (), intro, []))
            later = self._render(step_messages(self.prompt, task, intro, ((intro, "look"),), "", []))
            self._stems[key] = first[: common_prefix_length(first, later)]
        return self._stems[key]

    def prefix_lengths(self, turns: Sequence[Turn], prompts: Sequence[Sequence[int]]) -> list[int] | None:
        """How much of each prompt is its game's shared start (at least one token stays to run);
        None where prefixes are not shared."""
        if not self.shares_prefixes:
            return None
        return [
            min(common_prefix_length(prompt, self._stem(turn.info["task"], _intro(turn))), len(prompt) - 1)
            for turn, prompt in zip(turns, prompts)
        ]

    # -- constraint and loss mask -------------------------------------------------------------
    def constraint(self, admissible: Sequence[str]) -> ActionConstraint:
        """The decoding constraint of a turn (training replays it to rebuild the masks)."""
        return ActionConstraint(
            [self._encode(c) for c in sorted(admissible)],
            self._action_end,
            self._eos,
            self._think_close,
            self._action_open,
            self.decoding.max_think_tokens,
        )

    def demonstration_ids(self, command: str, thought: str = "") -> list[int]:
        """The response tokens that play `command` after `thought` (react format; empty by
        default): what behaviour cloning trains the model to write."""
        if thought and self._think_close is None:
            raise ValueError("a demonstration thought needs the react output format (--output-format react)")
        thought_ids = self._encode(thought) if thought else []
        if len(thought_ids) > self.decoding.max_think_tokens:
            raise ValueError(
                f"a demonstration thought is {len(thought_ids)} tokens, over max_think_tokens "
                f"{self.decoding.max_think_tokens}: raise --max-think-tokens ({thought!r})"
            )
        return [*thought_ids, *(self._think_close or []), *self._action_open, *self._encode(command), *self._action_end]

    def _loss_mask(self, generation: Generation, constraint: ActionConstraint | None) -> list[bool]:
        """Response tokens the loss covers, never forced ones. Under loss_tokens "action" the command's
        tokens (in a free react response the `<action>...</action>` span, none when it has no such
        span); under "response" (verl-agent) every token written, the thought and a malformed
        response included, so the very response that earned a format penalty gets its gradient."""
        whole = self.decoding.loss_tokens == "response"
        if constraint is not None:
            keep = {ACTION, THINK} if whole else {ACTION}
            phases = constraint.phases(generation.response_ids)
            return [p in keep and not f for p, f in zip(phases, generation.forced)]
        if self.prompt.output_format != REACT or whole:
            return [True] * len(generation.response_ids)
        return self._free_action_span(generation.response_ids)

    def _free_action_span(self, ids: list[int]) -> list[bool]:
        """Tokens overlapping `<action>...</action>` in a free react response."""
        text = self.tokenizer.decode(ids)
        start = text.find("<action>")
        end = text.find("</action>", start + 1) if start >= 0 else -1
        if start < 0:
            return [False] * len(ids)
        end = end + len("</action>") if end >= 0 else len(text)
        mask, position = [], 0
        for index in range(len(ids)):
            following = len(self.tokenizer.decode(ids[: index + 1]))
            mask.append(following > start and position < end)
            position = following
        return mask

    # -- acting -------------------------------------------------------------------------------
    def act(self, turns: Sequence[Turn]) -> list[Decision]:
        prompts = [self.prompt_ids(turn) for turn in turns]
        constraints = [
            self.constraint(turn.info["admissible_commands"]) if self.constrained else None for turn in turns
        ]
        prefix_lengths = self.prefix_lengths(turns, prompts)
        budget = self.decoding.max_new_tokens
        if self.constrained:  # never cut a constrained response short of its command
            budget = max(budget, *(c.max_length for c in constraints))
        generations = self.engine.generate(
            prompts,
            [turn_seed(t.seed, t.turn) for t in turns],
            constraints,
            max_new_tokens=budget,
            temperature=self.decoding.temperature,
            top_p=self.decoding.top_p,
            stop_strings=() if self.constrained or self.prompt.output_format != REACT else ("</action>",),
            prefix_lengths=prefix_lengths,
        )
        decisions = []
        for index, (turn, prompt, constraint, generation) in enumerate(zip(turns, prompts, constraints, generations)):
            parsed = parse_output(
                generation.text,
                self.prompt.output_format,
                turn.info["admissible_commands"],
                require_thought=self.prompt.style == VERL_AGENT,
            )
            if self.prompt.context == "full":
                self._conversations[turn.episode_id] = prompt + generation.response_ids
            prefix_length = prefix_lengths[index] if prefix_lengths else 0
            decisions.append(
                Decision(
                    action=parsed.action,
                    response=generation.text,
                    thought=parsed.thought,
                    malformed=parsed.malformed,
                    status=parsed.status,
                    finish=generation.finish,
                    tokens=self._token_record(turn, prompt, prefix_length, generation, constraint),
                )
            )
        return decisions

    def _token_record(
        self,
        turn: Turn,
        prompt: list[int],
        prefix_length: int,
        generation: Generation,
        constraint: ActionConstraint | None,
    ) -> TokenRecord:
        """What the loss needs of a turn; trunk states only where the engine records them (the
        prefix's once per game)."""
        prefix_states = self.engine.prefix_states(tuple(prompt[:prefix_length]))
        return TokenRecord(
            prompt_ids=prompt,
            response_ids=generation.response_ids,
            logprobs=generation.logprobs,
            forced=generation.forced,
            loss_mask=self._loss_mask(generation, constraint),
            admissible=sorted(turn.info["admissible_commands"]),
            prefix_length=prefix_length,
            trunk_states=generation.trunk_states,
            prefix_states=prefix_states,
        )


def _intro(turn: Turn) -> str:
    """The episode's first observation (it holds the room description)."""
    return turn.history[0][0] if turn.history else turn.observation
