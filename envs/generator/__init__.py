"""Procedural ALFWorld games: official layout and formats, verified by alfworld's experts.

    from envs.generator import generate_games
    report = generate_games("games/", num=60, seed=0, split="train", size="tiny")

Modules, one job each: `vocabulary` (what exists where, from alfworld's tables), `scene`
(sampling a task and scene per size), `pddl` (the file texts), `verify` (expert runs),
`writer` (all-or-nothing folder writes), `generate` (the loop and its report).
"""

from envs.generator.generate import GenerationReport, generate_games, outdated_games
from envs.generator.scene import SIZES
from envs.generator.vocabulary import SPLITS, TASK_TYPES

__all__ = ["GenerationReport", "SIZES", "SPLITS", "TASK_TYPES", "generate_games", "outdated_games"]
