"""Env throughput of the two batched-env backends on this machine: local worker processes against
Ray actors, same games, slots, workers and seeded random-admissible sweep.

Rounds alternate between the backends so that machine noise hits both alike; reports median env
steps/s of each and the ratio (ray / local), plus what Ray costs once (starting a local instance
and the first actors) and per failure (a killed worker replaced and answering a reset).

    python benchmarks/bench_env_backends.py                       # fixture games, 8 slots, 2 workers
    python benchmarks/bench_env_backends.py --games DIR --rounds 5 --workers 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from bench_batched import FIXTURES, restart_seconds, steps_per_second

from envs.backends import ENV_BACKENDS
from envs.games import resolve_games
from envs.ray_envs import RayBatchedAlfWorld


def ray_start_seconds(workers: int) -> float:
    """Time to start Ray on this machine and have `workers` env actors answer."""
    start = time.perf_counter()
    with RayBatchedAlfWorld(workers, workers):
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", default=str(FIXTURES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=30)
    args = parser.parse_args()
    games = resolve_games(args.games)
    started = ray_start_seconds(args.workers)  # first, so no round pays for it
    rates = {backend: [] for backend in ENV_BACKENDS}
    for round_ in range(args.rounds):
        for backend in ENV_BACKENDS:
            rate = steps_per_second(games, args.workers, args.num_envs, args.max_steps, round_, backend)
            rates[backend].append(rate)
    restarts = {backend: [restart_seconds(games[0], backend) for _ in range(args.rounds)] for backend in ENV_BACKENDS}
    local, ray = statistics.median(rates["local"]), statistics.median(rates["ray"])
    print(
        json.dumps(
            {
                "games": len(games),
                "num_envs": args.num_envs,
                "workers": args.workers,
                "rounds": args.rounds,
                "steps_per_s_local": local,
                "steps_per_s_ray": ray,
                "ratio_ray_over_local": ray / local,
                "steps_per_s_each_round": rates,
                "ray_start_s": started,
                "worker_restart_s_median": {backend: statistics.median(times) for backend, times in restarts.items()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
