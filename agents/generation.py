"""Batched generation that records exactly what the loss needs.

One `model.generate` call serves every live episode (left padding; transformers derives
position ids from the attention mask and keeps a KV cache; prompt beginnings shared across
turns can come from a `PrefixCache`). Two logits processors do the work:

- `ConstraintProcessor` masks each row's logits to the tokens its `ActionConstraint` allows;
- `SeededSampler` samples each row with its own generator, seeded per (episode, turn), so an
  episode does not depend on which others share its batch, and records the log-probability of
  the sampled token under the distribution actually sampled from (masked, tempered, top-p).

The sampler hands generate a one-hot score row, so generate runs in greedy mode and simply
takes the token we drew.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from agents.constrained import ActionConstraint, State
from agents.prefix_cache import KV_CACHE, PrefixCache
from agents.trunk import TrunkRecorder


@dataclass
class Generation:
    """One row's response."""

    response_ids: list[int]
    logprobs: list[float]  # sampling log-prob of each response token
    allowed_counts: list[int]  # how many tokens were allowed (0: unconstrained)
    text: str
    finish: str  # "eos", "stop" (a stop string) or "length" (max_new_tokens)
    # with `trunk_layers`: (prompt tail + response tokens but the last, hidden) states entering
    # block -trunk_layers; the tail is the prompt after its cached prefix
    trunk_states: torch.Tensor | None = None

    @property
    def forced(self) -> list[bool]:
        """Tokens that were the only allowed continuation: probability 1 under any policy."""
        return [count == 1 for count in self.allowed_counts]


class ConstraintProcessor(LogitsProcessor):
    """Masks each row's scores to the tokens its constraint allows (rows without one are free)."""

    def __init__(self, constraints: Sequence[ActionConstraint | None], prompt_length: int):
        self.constraints = list(constraints)
        self.prompt_length = prompt_length
        self.states: list[State | None] = [c.start() if c else None for c in constraints]
        self.allowed_counts: list[list[int]] = [[] for _ in constraints]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.prompt_length
        for row, constraint in enumerate(self.constraints):
            if constraint is None:
                self.allowed_counts[row].append(0)
                continue
            if step > 0:  # account for the token generate appended since the last call
                token = int(input_ids[row, -1])
                allowed = constraint.allowed(self.states[row])
                # finished rows receive padding, which need not be allowed: stop tracking them
                if allowed is None or token in allowed:
                    self.states[row] = constraint.advance(self.states[row], token)
            allowed = constraint.allowed(self.states[row])
            self.allowed_counts[row].append(0 if allowed is None else len(allowed))
            if allowed is not None:
                mask = torch.full_like(scores[row], float("-inf"))
                mask[list(allowed)] = 0.0
                scores[row] = scores[row] + mask
        return scores


class SeededSampler(LogitsProcessor):
    """Samples each row from softmax(scores / temperature) (top-p filtered) with its own generator."""

    def __init__(self, seeds: Sequence[int], temperature: float = 1.0, top_p: float = 1.0):
        if temperature <= 0:
            raise ValueError(f"expected temperature > 0, got {temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"expected 0 < top_p <= 1, got {top_p}")
        self.generators = [torch.Generator().manual_seed(int(seed) % 2**63) for seed in seeds]
        self.temperature = temperature
        self.top_p = top_p
        self.logprobs: list[list[float]] = [[] for _ in seeds]

    def _filter_top_p(self, logprobs: torch.Tensor) -> torch.Tensor:
        if self.top_p >= 1.0:
            return logprobs
        sorted_logprobs, order = torch.sort(logprobs, descending=True)
        cumulative = sorted_logprobs.exp().cumsum(-1)
        drop = cumulative - sorted_logprobs.exp() >= self.top_p  # keep the token crossing top_p
        filtered = logprobs.clone()
        filtered[order[drop]] = float("-inf")
        return torch.log_softmax(filtered, dim=-1)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        chosen = torch.full_like(scores, float("-inf"))
        for row, generator in enumerate(self.generators):
            logprobs = torch.log_softmax(scores[row].float() / self.temperature, dim=-1)
            logprobs = self._filter_top_p(logprobs)
            if not torch.isfinite(logprobs.exp().sum()):
                raise FloatingPointError(
                    "the model produced NaN or infinite logits: its weights have "
                    "diverged; resume from an earlier checkpoint with a lower --lr"
                )
            token = int(torch.multinomial(logprobs.exp(), 1, generator=generator))
            self.logprobs[row].append(float(logprobs[token]))
            chosen[row, token] = 0.0
        return chosen


def _response_end(ids: list[int], eos_id: int, text_of, stop_strings: Sequence[str]) -> tuple[int, str]:
    """Length of the real response inside a padded generated row, and why it ended."""
    for end in range(1, len(ids) + 1):
        if ids[end - 1] == eos_id:
            return end, "eos"
        if stop_strings and any(text_of(ids[:end]).endswith(s) for s in stop_strings):
            return end, "stop"
    return len(ids), "length"


def _layout(
    prompts: Sequence[Sequence[int]], prefix_lengths: Sequence[int], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Input ids and attention mask: [padding, prefix, padding, tail] per row, so that all
    prefixes end at one column (where the prefix cache ends) and all tails at the last."""
    width = max(prefix_lengths)
    tail = max(len(p) - k for p, k in zip(prompts, prefix_lengths))
    ids, mask = [], []
    for prompt, k in zip(prompts, prefix_lengths):
        gap, rest = width - k, tail - (len(prompt) - k)
        ids.append([pad_id] * gap + list(prompt[:k]) + [pad_id] * rest + list(prompt[k:]))
        mask.append([0] * gap + [1] * k + [0] * rest + [1] * (len(prompt) - k))
    return torch.tensor(ids), torch.tensor(mask)


def length_buckets(lengths: Sequence[int], ratio: float = 1.5, slack: int = 32) -> list[list[int]]:
    """Row indices grouped by length (ascending) so that padding wastes little work.

    A batched prompt pass costs (rows x longest row): one 280-token observation (the game's
    `help` text, say) would make every 30-token row pay for 280. A group ends where the next row
    is longer than `ratio` times the group's shortest plus `slack`; short rows never split.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    buckets: list[list[int]] = []
    for index in order:
        if buckets and lengths[index] <= ratio * lengths[buckets[-1][0]] + slack:
            buckets[-1].append(index)
        else:
            buckets.append([index])
    return buckets


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: Sequence[Sequence[int]],
    seeds: Sequence[int],
    constraints: Sequence[ActionConstraint | None] | None = None,
    *,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_p: float = 1.0,
    stop_strings: Sequence[str] = (),
    prefix_lengths: Sequence[int] | None = None,
    prefix_cache: PrefixCache | None = None,
    trunk_layers: int | None = None,
) -> list[Generation]:
    """Generate one response per prompt (token ids), batched: one call per group of rows of
    similar length (`length_buckets`). Each row samples with its own seed, so the grouping
    changes the work done, never the result.

    With `prefix_cache`, the first `prefix_lengths[b]` tokens of prompt b come from the cache
    instead of a model pass (each must be shorter than its prompt). Position ids follow the
    attention mask, so the gaps of the layout change nothing but the work done.

    With `trunk_layers`, each generation also keeps the hidden states that entered block
    -trunk_layers (`Generation.trunk_states`), so that training can run only the top blocks.
    """
    constraints = list(constraints) if constraints is not None else [None] * len(prompts)
    prefix_lengths = list(prefix_lengths) if prefix_cache is not None and prefix_lengths else [0] * len(prompts)
    if any(not 0 <= k < len(p) for p, k in zip(prompts, prefix_lengths)):
        raise ValueError("each prefix length must be at least 0 and shorter than its prompt")
    generations: list[Generation | None] = [None] * len(prompts)
    for rows in length_buckets([len(p) - k for p, k in zip(prompts, prefix_lengths)]):
        done = _generate_rows(
            model,
            tokenizer,
            [prompts[i] for i in rows],
            [seeds[i] for i in rows],
            [constraints[i] for i in rows],
            [prefix_lengths[i] for i in rows],
            prefix_cache,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            stop_strings=stop_strings,
            trunk_layers=trunk_layers,
        )
        for row, generation in zip(rows, done):
            generations[row] = generation
    return generations


def _generate_rows(
    model,
    tokenizer,
    prompts,
    seeds,
    constraints,
    prefix_lengths,
    prefix_cache,
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    stop_strings: Sequence[str],
    trunk_layers: int | None,
) -> list[Generation]:
    """One `model.generate` call over the given rows."""
    eos_id = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    input_ids, attention_mask = _layout(prompts, prefix_lengths, pad_id)
    length = input_ids.shape[1]
    past = prefix_cache.batch([tuple(p[:k]) for p, k in zip(prompts, prefix_lengths)]) if any(prefix_lengths) else None
    device = next(model.parameters()).device
    constraint_processor = ConstraintProcessor(constraints, length)
    sampler = SeededSampler(seeds, temperature, top_p)
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        stop_strings=list(stop_strings) or None,
    )
    recorder = TrunkRecorder(model, trunk_layers) if trunk_layers else contextlib.nullcontext()
    with recorder:
        output = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            **{KV_CACHE: past},
            generation_config=config,
            logits_processor=LogitsProcessorList([constraint_processor, sampler]),
            tokenizer=tokenizer if stop_strings else None,
            # transformers would keep FSDP ranks generating in step; ours generate on gathered
            # weights (`holderpo.parallel`), each for its own episodes, and must not wait for others
            synced_gpus=False,
        )
    generations = []
    for row in range(len(prompts)):
        ids = output[row, length:].tolist()
        end, finish = _response_end(ids, eos_id, lambda t: tokenizer.decode(t), stop_strings)
        ids = ids[:end]
        generations.append(
            Generation(
                response_ids=ids,
                logprobs=sampler.logprobs[row][:end],
                allowed_counts=constraint_processor.allowed_counts[row][:end],
                text=tokenizer.decode(ids, skip_special_tokens=True),
                finish=finish,
                trunk_states=_row_states(recorder.calls, row, len(prompts[row]) - prefix_lengths[row], end)
                if trunk_layers
                else None,
            )
        )
    return generations


def _row_states(calls: list[torch.Tensor], row: int, tail: int, response: int) -> torch.Tensor:
    """One row's recorded trunk states: the last `tail` columns of the prompt pass, then one
    per decoding step for the response's tokens but the last (which is never fed back)."""
    steps = [call[row, -1:] for call in calls[1:response]]
    return torch.cat([calls[0][row, -tail:], *steps])
