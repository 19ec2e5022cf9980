"""Wrapper overhead of AlfWorldEnv next to the stock textworld PDDL env, on the same games.

Both sides play the same seeded random walks over admissible commands; rounds alternate between
the two so that machine noise hits both alike. Reports median steps/s and reset times, and the
ratios (ours / stock).

    python benchmarks/bench_env.py                      # fixture games
    python benchmarks/bench_env.py --games DIR --rounds 5 --steps 40
    python benchmarks/bench_env.py --engine stock      # AlfWorldEnv on the stock engine too

AlfWorldEnv plays on its default engine ("fast", see envs/fast_engine) unless --engine says
otherwise; benchmarks/bench_engine.py compares the two engines.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

from bench_engine import speed_round

from envs.games import resolve_games

FIXTURES = Path(__file__).parent.parent / "tests" / "fixtures" / "alfworld_data" / "json_2.1.1"


def stock_env():
    import textworld
    from alfworld.agents.environment.alfred_tw_env import AlfredDemangler
    from textworld.envs import PddlEnv

    return AlfredDemangler(PddlEnv(textworld.EnvInfos(admissible_commands=True, won=True)))


def run_stock(games: list[str], steps: int, seed: int) -> tuple[float, float, float]:
    env, rng = stock_env(), random.Random(seed)
    first_resets, resets, step_time, n_steps = [], [], 0.0, 0
    for game in games:
        start = time.perf_counter()
        env.load(game)
        state = env.reset()
        first_resets.append(time.perf_counter() - start)
        start = time.perf_counter()
        state = env.reset()
        resets.append(time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(steps):
            state, _, done = env.step(rng.choice(state["admissible_commands"]))
            n_steps += 1
            if done:
                break
        step_time += time.perf_counter() - start
    return n_steps / step_time, statistics.median(first_resets), statistics.median(resets)


def run_ours(games: list[str], steps: int, seed: int, engine: str) -> tuple[float, float, float]:
    """The same walks through AlfWorldEnv (bench_engine's timing loop, which also times the stock engine)."""
    timed = speed_round(engine, games, steps, seed)
    return timed["steps_per_s"], timed["first_reset_s"], timed["seen_reset_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", default=str(FIXTURES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30, help="random steps per game per round")
    parser.add_argument("--engine", choices=("fast", "stock"), default="fast", help="AlfWorldEnv's engine")
    args = parser.parse_args()
    games = resolve_games(args.games)
    results = {"stock": [], "ours": []}
    for round_ in range(args.rounds):
        results["stock"].append(run_stock(games, args.steps, seed=round_))
        results["ours"].append(run_ours(games, args.steps, seed=round_, engine=args.engine))
    medians = {name: [statistics.median(r[i] for r in rows) for i in range(3)] for name, rows in results.items()}
    report = {
        "games": len(games),
        "rounds": args.rounds,
        "engine": args.engine,
        "stock": dict(zip(("steps_per_s", "first_reset_s", "reset_s"), medians["stock"])),
        "ours": dict(zip(("steps_per_s", "first_reset_s", "reset_s"), medians["ours"])),
    }
    report["ratio_ours_over_stock"] = {key: report["ours"][key] / report["stock"][key] for key in report["ours"]}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
