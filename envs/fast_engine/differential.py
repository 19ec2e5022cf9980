"""Playing the same episode on two engines and finding where they differ.

Used by tests/envs/test_fast_engine.py (a few hundred episodes) and benchmarks/bench_engine.py
(thousands): an episode is a seeded policy, so two engines that give the same outputs see the
same commands, and the first differing output is the bug.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

# Inadmissible text an agent might send: empty, near-misses, padded, long.
GARBAGE = ["", "look around", "take moon from sky", "go to fridge 99", "  inventory  ", "x" * 300]
GARBAGE_RATE = 0.25


def play_episode(
    env, game: str, seed: int, prefix: Sequence[str] = (), random_steps: int = 0, follow_expert: bool = False
) -> list[tuple[Any, ...]]:
    """Play one episode of `env` (an AlfWorldEnv) and return every output, reset's included.

    The commands: `prefix` (e.g. part of the walkthrough), then `random_steps` seeded choices
    among the admissible commands and GARBAGE; or, with `follow_expert`, the expert's command
    at every step (the env needs `expert=True`). Stops at termination or truncation.
    """
    rng = random.Random(seed)
    observation, info = env.reset(seed=seed, options={"game": game})
    transcript: list[tuple[Any, ...]] = [(observation, info)]
    for t in range(env.max_steps):
        if follow_expert:
            action = info["expert_action"]
        elif t < len(prefix):
            action = prefix[t]
        elif t >= len(prefix) + random_steps:
            break
        elif rng.random() < GARBAGE_RATE:
            action = rng.choice(GARBAGE)
        else:
            action = rng.choice(info["admissible_commands"])
        observation, reward, terminated, truncated, info = env.step(action)
        transcript.append((action, observation, reward, terminated, truncated, info))
        if terminated or truncated:
            break
    return transcript


def first_difference(expected: list[tuple], actual: list[tuple]) -> int | None:
    """Index of the first differing output of two transcripts (None when they are equal)."""
    for step, (a, b) in enumerate(zip(expected, actual)):
        if a != b:
            return step
    return None if len(expected) == len(actual) else min(len(expected), len(actual))
