"""Which episodes a sweep or a training iteration plays: games, samples and their seeds.

Each episode's seed comes from (run seed, game id, sample), never from its position in a batch,
so a result does not depend on batch size, worker count or which games ran beside it.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from envs.games import read_task_type
from rollouts.records import EpisodeSpec


def game_id(game: str | Path) -> str:
    """A stable, readable name for a game: "<task folder>/<trial folder>"."""
    folder = Path(game).parent
    return f"{folder.parent.name}/{folder.name}"


def episode_seed(seed: int, game: str, sample: int) -> int:
    """A seed for one episode, from the evaluation seed, the game's id and the sample index."""
    entropy = [seed, zlib.crc32(game_id(game).encode()), sample]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def episode_spec(game: str, sample: int, seed: int, group: int) -> EpisodeSpec:
    """The spec of one episode of `game`, named and typed from the game's own files."""
    return EpisodeSpec(
        game=game, game_id=game_id(game), task_type=read_task_type(Path(game)), sample=sample, seed=seed, group=group
    )


def make_specs(games: Sequence[str], seed: int, samples: int = 1, max_episodes: int | None = None) -> list[EpisodeSpec]:
    """Episodes for a sweep over the sorted games, each played `samples` times."""
    if samples < 1:
        raise ValueError(f"expected samples >= 1, got {samples}")
    ordered = sorted(games)
    if max_episodes is not None:
        if max_episodes < 1:
            raise ValueError(f"expected max_episodes >= 1, got {max_episodes}")
        ordered = ordered[:max_episodes]
    return [
        episode_spec(game, sample, episode_seed(seed, game, sample), group=index)
        for index, game in enumerate(ordered)
        for sample in range(samples)
    ]


def iteration_games(games: Sequence[str], iteration: int, per_iteration: int, seed: int) -> list[str]:
    """The games of one iteration: consecutive draws from seeded permutations of the game list.

    A pure function of its arguments, so a resumed run draws exactly what the original would.
    """
    drawn = []
    for k in range(iteration * per_iteration, (iteration + 1) * per_iteration):
        epoch, position = divmod(k, len(games))
        order = np.random.default_rng(np.random.SeedSequence([seed, epoch])).permutation(len(games))
        drawn.append(games[order[position]])
    return drawn


def iteration_specs(games: Sequence[str], iteration: int, group_size: int, seed: int) -> list[EpisodeSpec]:
    """G episodes per game; group g holds game g; seeds from (run seed, iteration, group, sample)."""
    return [
        episode_spec(
            game,
            sample,
            int(np.random.SeedSequence([seed, iteration, group, sample]).generate_state(1)[0]),
            group=group,
        )
        for group, game in enumerate(games)
        for sample in range(group_size)
    ]
