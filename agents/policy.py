"""The interface every agent implements, scripted or learned.

The rollout loop hands a policy the current turn of every live episode at once (so an LLM can
batch its generation) and gets one decision per turn back. Evaluation can therefore run the
expert, a random agent or a model through the same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # only LLM policies hold tensors; scripted ones run without torch
    import torch


@dataclass(frozen=True)
class Turn:
    """What a policy sees of one live episode at one turn."""

    episode_id: str  # unique within a run, stable across runs: "<game id>#<sample>"
    seed: int  # the episode's seed; policies draw their randomness from (seed, turn)
    turn: int  # 0 for the first decision
    observation: str  # the latest observation (the intro on turn 0)
    info: dict[str, Any]  # the env's info: admissible_commands, task, task_type, ...
    history: tuple[tuple[str, str], ...] = ()  # earlier (observation, action) pairs


@dataclass(frozen=True)
class TokenRecord:
    """The tokens of one generated response, as the loss needs them (R: response length).

    A learned policy records them at sampling time so that training never re-generates: the
    update scores the same tokens under the current, old and reference models.
    """

    prompt_ids: list[int]  # the prompt; in full context it extends the episode's previous turn
    response_ids: list[int]  # (R,) the sampled response, end token included
    logprobs: list[float]  # (R,) sampling log-probs, under the decoding constraint when there is one
    forced: list[bool]  # (R,) the only allowed continuation: probability 1, never in the loss
    loss_mask: list[bool]  # (R,) tokens the loss covers: the action (optionally the thought), not forced ones
    admissible: list[str]  # the turn's admissible commands, sorted: training rebuilds the constraint from them
    prefix_length: int = 0  # leading prompt tokens shared by the game's other prompts (scored once)
    # With a frozen trunk (see `agents.trunk`): hidden states entering the first trained block, so
    # the update runs only the top blocks. (prompt tail + R - 1, hidden), the tail being the prompt
    # after its shared prefix; and (prefix_length, hidden) over that prefix (None when it is empty).
    trunk_states: torch.Tensor | None = None
    prefix_states: torch.Tensor | None = None


@dataclass
class Decision:
    """A policy's answer for one turn: the command sent to the game and how it came about."""

    action: str  # what the env receives
    response: str = ""  # the raw text the policy produced (equal to action for scripted ones)
    thought: str | None = None  # reasoning text, when the policy writes one
    malformed: bool = False  # the response did not contain a well-formed action
    # What a transcript keeps of a generated response (None for scripted policies): the parser's
    # verdict (admissible, inadmissible or malformed) and why generation stopped (eos, stop, length).
    status: str | None = None
    finish: str | None = None
    tokens: TokenRecord | None = None  # what training needs; None for scripted policies


class Policy(Protocol):
    """Anything that maps a batch of turns to one decision each."""

    name: str
    needs_expert: bool  # the env must run alfworld's expert beside the game (info["expert_action"])

    def act(self, turns: Sequence[Turn]) -> list[Decision]: ...
