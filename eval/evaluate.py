"""Deterministic success-rate evaluation: every game of a sorted list, each played once (or k times).

Each episode's seed comes from (evaluation seed, game id, sample), never from its position in a
batch, so a result does not depend on batch size, worker count or which games ran beside it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from agents.policy import Policy
from envs.backends import open_envs
from eval.stats import pass_at_k, wilson_interval
from rollouts.records import OUTCOMES, EpisodeRecord
from rollouts.runner import play_episodes
from rollouts.specs import episode_seed, game_id, make_specs  # noqa: F401  (re-exported: their old home)


def evaluate(
    policy: Policy,
    games: Sequence[str],
    *,
    seed: int = 0,
    samples: int = 1,
    max_episodes: int | None = None,
    max_steps: int = 50,
    num_envs: int = 8,
    num_workers: int | None = None,
    env_backend: str = "local",
    ray_address: str | None = None,
    trust_game_files: bool = False,
    on_episode_end: Callable[[EpisodeRecord], None] | None = None,
    progress: str | None = None,
) -> list[EpisodeRecord]:
    """Play the sweep and return one record per episode, in sweep order.

    `max_episodes` keeps the first N games of the sorted list (each still played `samples`
    times); `env_backend` and `ray_address` choose where the envs run (`envs.backends.open_envs`:
    the records are the same on either); `progress` names a progress bar (None: none).
    """
    specs = make_specs(games, seed, samples, max_episodes)
    num_envs = min(num_envs, len(specs))  # a short sweep needs fewer slots, and no more workers than slots
    num_workers = min(num_workers, num_envs) if num_workers else None
    with open_envs(
        env_backend,
        num_envs,
        num_workers,
        ray_address,
        max_steps=max_steps,
        expert=policy.needs_expert,
        trust_game_files=trust_game_files,
    ) as batch:
        return play_episodes(batch, policy, specs, on_episode_end, progress)


@dataclass(frozen=True)
class GroupStats:
    """The statistics reported for any set of episodes: the whole sweep, or one task type."""

    episodes: int
    success_rate: float  # won / episodes (0.0 for no episodes)
    success_ci95: tuple[float, float]  # Wilson 95% interval of the success rate
    pass_at_k: float  # unbiased pass@k over games, k from the summary
    mean_steps_won: float | None  # None when no episode was won
    admissible_rate: float  # admissible actions / steps
    outcomes: dict[str, int]  # episodes per outcome, every outcome of `OUTCOMES` in its order
    steps: int  # turns played over all episodes

    def to_json(self) -> dict[str, Any]:
        """The row as results files hold it (the interval as a list)."""
        return asdict(self) | {"success_ci95": list(self.success_ci95)}


@dataclass(frozen=True)
class EvalSummary:
    """What `summarize` reports: the whole sweep and each task type, with the k of pass@k."""

    overall: GroupStats
    k: int
    by_task_type: dict[str, GroupStats]  # sorted by task type

    def rows(self) -> list[tuple[str, GroupStats]]:
        """(name, stats) of each task type, then ("overall", ...): the lines of a results table."""
        return [*self.by_task_type.items(), ("overall", self.overall)]

    def to_json(self) -> dict[str, Any]:
        """The summary as results files hold it: the overall row's fields at the top, then k and
        the rows by task type."""
        return {
            **self.overall.to_json(),
            "k": self.k,
            "by_task_type": {name: row.to_json() for name, row in self.by_task_type.items()},
        }


def _rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _group_stats(records: Sequence[EpisodeRecord], k: int) -> GroupStats:
    won = [record for record in records if record.won]
    wins_per_game = Counter(record.game_id for record in won)
    samples_per_game = Counter(record.game_id for record in records)
    steps = sum(record.steps for record in records)
    return GroupStats(
        episodes=len(records),
        success_rate=_rate(len(won), len(records)),
        success_ci95=wilson_interval(len(won), len(records)),
        pass_at_k=pass_at_k([(n, wins_per_game[game]) for game, n in samples_per_game.items()], k),
        mean_steps_won=sum(record.steps for record in won) / len(won) if won else None,
        admissible_rate=_rate(sum(record.admissible_actions for record in records), steps),
        outcomes={outcome: sum(r.outcome == outcome for r in records) for outcome in OUTCOMES},
        steps=steps,
    )


def summarize(records: Sequence[EpisodeRecord], k: int | None = None) -> EvalSummary:
    """Success rate (with its Wilson 95% interval), pass@k, mean steps of won episodes,
    admissible-action rate and outcome counts, overall and per task type.

    `k` defaults to the fewest samples any game has (the `--samples` of the sweep), so pass@k
    with one sample per game is the success rate averaged over games. `mean_steps_won` is None
    when no episode was won.
    """
    samples_per_game = Counter(record.game_id for record in records)
    k = k if k is not None else min(samples_per_game.values(), default=1)
    by_task_type = {
        task_type: _group_stats([r for r in records if r.task_type == task_type], k)
        for task_type in sorted({record.task_type for record in records})
    }
    return EvalSummary(_group_stats(records, k), k, by_task_type)
