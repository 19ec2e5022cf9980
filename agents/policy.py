"""The interface every agent implements, scripted or learned.

The rollout loop hands a policy the current turn of every live episode at once (so an LLM can
batch its generation) and gets one decision per turn back. Evaluation can therefore run the
expert, a random agent or a model through the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence


@dataclass(frozen=True)
class Turn:
    """What a policy sees of one live episode at one turn."""

    episode_id: str  # unique within a run, stable across runs: "<game id>#<sample>"
    seed: int  # the episode's seed; policies draw their randomness from (seed, turn)
    turn: int  # 0 for the first decision
    observation: str  # the latest observation (the intro on turn 0)
    info: dict[str, Any]  # the env's info: admissible_commands, task, task_type, ...
    history: tuple[tuple[str, str], ...] = ()  # earlier (observation, action) pairs


@dataclass
class Decision:
    """A policy's answer for one turn: the command sent to the game and how it came about."""

    action: str  # what the env receives
    response: str = ""  # the raw text the policy produced (equal to action for scripted ones)
    thought: str | None = None  # reasoning text, when the policy writes one
    malformed: bool = False  # the response did not contain a well-formed action
    extras: dict[str, Any] = field(default_factory=dict)  # policy-specific records


class Policy(Protocol):
    """Anything that maps a batch of turns to one decision each."""

    name: str
    needs_expert: bool  # the env must run alfworld's expert beside the game (info["expert_action"])

    def act(self, turns: Sequence[Turn]) -> list[Decision]: ...
