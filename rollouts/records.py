"""What an episode leaves behind: its turns, outcome and identity."""

from __future__ import annotations

from dataclasses import dataclass, field

from agents.policy import TokenRecord

OUTCOMES = ("won", "step-limit", "errored")


@dataclass(frozen=True)
class EpisodeSpec:
    """One episode to play: which game, which sample of it, with which seed, in which group."""

    game: str  # game.tw-pddl path
    game_id: str  # stable name of the game ("<task folder>/<trial folder>"), for ids and seeds
    task_type: str
    sample: int  # 0..k-1 when a game is played k times
    seed: int
    group: int = 0  # episodes of one group share a game (GRPO)

    @property
    def episode_id(self) -> str:
        return f"{self.game_id}#{self.sample}"


@dataclass
class TurnRecord:
    """One turn: what the agent saw, what it produced and what the game answered."""

    observation: str  # shown to the agent before it acted
    action: str
    response: str
    thought: str | None
    admissible: bool
    malformed: bool
    reward: float
    status: str | None = None  # the policy's `Decision.status` (None for scripted policies)
    finish: str | None = None  # the policy's `Decision.finish` (None for scripted policies)
    tokens: TokenRecord | None = None  # what training needs; None for scripted policies and in transcripts


@dataclass
class EpisodeRecord:
    """A finished episode. `outcome` is won, step-limit (truncated) or errored."""

    episode_id: str
    game: str
    game_id: str
    task_type: str
    task: str
    sample: int
    seed: int
    group: int
    outcome: str = "errored"
    error: str | None = None
    final_observation: str = ""
    turns: list[TurnRecord] = field(default_factory=list)
    # who played it, as a transcript names them (None until written: `TranscriptWriter` adds them)
    policy: str | None = None
    model: str | None = None

    @property
    def won(self) -> bool:
        return self.outcome == "won"

    @property
    def steps(self) -> int:
        return len(self.turns)

    @property
    def admissible_actions(self) -> int:
        return sum(turn.admissible for turn in self.turns)
