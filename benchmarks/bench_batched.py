"""Batched env throughput with 2 worker processes vs 1, and the restart time of a killed worker.

Plays the same random-admissible sweep with 1 and 2 workers in alternating rounds (8 episodes at
once, so both keep every worker busy) and reports env steps/s and the ratio.

    python benchmarks/bench_batched.py                 # fixture games
    python benchmarks/bench_batched.py --games DIR --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import time
from pathlib import Path

from agents.baselines import RandomAdmissiblePolicy
from envs.backends import open_envs
from envs.games import resolve_games
from rollouts.runner import play_episodes
from rollouts.specs import make_specs

FIXTURES = Path(__file__).parent.parent / "tests" / "fixtures" / "alfworld_data" / "json_2.1.1"


def steps_per_second(
    games: list[str], workers: int, num_envs: int, max_steps: int, seed: int, backend: str = "local"
) -> float:
    """Env steps/s of a random-admissible sweep over `games` (the workers started and warm first)."""
    specs = make_specs(games, seed)
    with open_envs(backend, num_envs, workers, max_steps=max_steps) as batch:
        batch.reset([games[0]] * num_envs)  # warm the workers' engines before timing
        start = time.perf_counter()
        records = play_episodes(batch, RandomAdmissiblePolicy(), specs)
        elapsed = time.perf_counter() - start
    return sum(record.steps for record in records) / elapsed


def restart_seconds(game: str, backend: str = "local") -> float:
    """Time from a killed worker to its replacement answering a reset."""
    with open_envs(backend, 1, 1) as batch:
        batch.reset([game])
        os.kill(batch.worker_pids()[0], signal.SIGKILL)
        start = time.perf_counter()
        batch.step({0: "look"})  # finds the dead worker and restarts it
        result = batch.reset([game])[0]
        elapsed = time.perf_counter() - start
        assert result.error is None, result.error
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", default=str(FIXTURES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=30)
    args = parser.parse_args()
    games = resolve_games(args.games)
    rates = {1: [], 2: []}
    for round_ in range(args.rounds):
        for workers in (1, 2):
            rates[workers].append(steps_per_second(games, workers, args.num_envs, args.max_steps, round_))
    restarts = [restart_seconds(games[0]) for _ in range(args.rounds)]
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    print(
        json.dumps(
            {
                "games": len(games),
                "num_envs": args.num_envs,
                "rounds": args.rounds,
                "steps_per_s_1_worker": one,
                "steps_per_s_2_workers": two,
                "ratio_2_over_1": two / one,
                "worker_restart_s_median": statistics.median(restarts),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
