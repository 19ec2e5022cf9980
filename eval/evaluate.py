"""Deterministic success-rate evaluation: every game of a sorted list, each played once (or k times).

Each episode's seed comes from (evaluation seed, game id, sample), never from its position in a
batch, so a result does not depend on batch size, worker count or which games ran beside it.
"""

from __future__ import annotations

import zlib
from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from agents.policy import Policy
from envs.batched import BatchedAlfWorld
from envs.games import read_task_type
from rollouts.records import OUTCOMES, EpisodeRecord, EpisodeSpec
from rollouts.runner import play_episodes


def game_id(game: str | Path) -> str:
    """A stable, readable name for a game: "<task folder>/<trial folder>"."""
    folder = Path(game).parent
    return f"{folder.parent.name}/{folder.name}"


def episode_seed(seed: int, game: str, sample: int) -> int:
    """A seed for one episode, from the evaluation seed, the game's id and the sample index."""
    entropy = [seed, zlib.crc32(game_id(game).encode()), sample]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def make_specs(games: Sequence[str], seed: int, samples: int = 1,
               max_episodes: int | None = None) -> list[EpisodeSpec]:
    """Episodes for a sweep over the sorted games, each played `samples` times."""
    if samples < 1:
        raise ValueError(f"expected samples >= 1, got {samples}")
    ordered = sorted(games)
    if max_episodes is not None:
        if max_episodes < 1:
            raise ValueError(f"expected max_episodes >= 1, got {max_episodes}")
        ordered = ordered[:max_episodes]
    return [
        EpisodeSpec(game=game, game_id=game_id(game), task_type=read_task_type(Path(game)),
                    sample=sample, seed=episode_seed(seed, game, sample), group=index)
        for index, game in enumerate(ordered)
        for sample in range(samples)
    ]


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
    trust_game_files: bool = False,
    on_episode_end: Callable[[EpisodeRecord], None] | None = None,
) -> list[EpisodeRecord]:
    """Play the sweep and return one record per episode, in sweep order.

    `max_episodes` keeps the first N games of the sorted list (each still played `samples`
    times).
    """
    specs = make_specs(games, seed, samples, max_episodes)
    num_envs = min(num_envs, len(specs))
    with BatchedAlfWorld(num_envs, num_workers, max_steps=max_steps, expert=policy.needs_expert,
                         trust_game_files=trust_game_files) as batch:
        return play_episodes(batch, policy, specs, on_episode_end)


def _rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def summarize(records: Sequence[EpisodeRecord]) -> dict:
    """Success rate overall and per task type, outcome counts and admissible-action rate."""
    outcomes = Counter(record.outcome for record in records)
    by_task_type = {}
    for task_type in sorted({record.task_type for record in records}):
        group = [record for record in records if record.task_type == task_type]
        by_task_type[task_type] = {
            "episodes": len(group),
            "success_rate": _rate(sum(r.won for r in group), len(group)),
            "admissible_rate": _rate(sum(r.admissible_actions for r in group), sum(r.steps for r in group)),
            "outcomes": {outcome: sum(r.outcome == outcome for r in group) for outcome in OUTCOMES},
        }
    steps = sum(record.steps for record in records)
    return {
        "episodes": len(records),
        "success_rate": _rate(outcomes["won"], len(records)),
        "by_task_type": by_task_type,
        "outcomes": {outcome: outcomes[outcome] for outcome in OUTCOMES},
        "admissible_rate": _rate(sum(record.admissible_actions for record in records), steps),
        "steps": steps,
    }
