"""The fast engine (envs.fast_engine) against the stock textworld engine: speed, memory, agreement.

Both sides are `AlfWorldEnv`, with engine="fast" and engine="stock"; nothing else differs.

    speed    steps/s, first reset of a game (load + reset) and reset of a seen game; rounds
             alternate stock and fast in one process, the same seeded random walks on both
    memory   peak RSS of one worker process per engine, each playing the same episodes
    sweep    differential check: the same seeded episodes (random walks with inadmissible text,
             walkthrough prefixes, expert walks) on both engines, every output compared
    profile  cProfile of each engine on the same walks: top entries by own time

    python benchmarks/bench_engine.py speed --games GAMES_DIR --rounds 3
    python benchmarks/bench_engine.py memory --games GAMES_DIR
    python benchmarks/bench_engine.py sweep --games TINY_DIR 160 --games BIG_DIR 34 --workers 2
    python benchmarks/bench_engine.py profile --games GAMES_DIR
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import multiprocessing as mp
import pstats
import random
import resource
import statistics
import subprocess
import sys
import time

from envs import AlfWorldEnv, load_game
from envs.fast_engine import assets, grammar
from envs.fast_engine.differential import first_difference, play_episode
from envs.games import resolve_games

ENGINES = ("stock", "fast")


def forget_fast_caches() -> None:
    """Make the next load of every game a first load for the fast engine (cold caches)."""
    assets.clear_cache()
    grammar.parse_symbols.cache_clear()
    grammar.parse_query.cache_clear()


# -- speed ------------------------------------------------------------------------------------
def speed_round(engine: str, games: list[str], steps: int, seed: int) -> dict[str, float]:
    """One pass over the games: first reset, reset again, then a seeded random walk per game."""
    env, rng = AlfWorldEnv(max_steps=steps, engine=engine), random.Random(seed)
    env.reset(options={"game": games[-1]})  # build the engine (imports, fast-downward) untimed
    forget_fast_caches()
    first_resets, seen_resets, step_time, n_steps = [], [], 0.0, 0
    for game in games:
        start = time.perf_counter()
        env.reset(options={"game": game})
        first_resets.append(time.perf_counter() - start)
        start = time.perf_counter()
        _, info = env.reset(options={"game": game})
        seen_resets.append(time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(steps):
            _, _, terminated, truncated, info = env.step(rng.choice(info["admissible_commands"]))
            n_steps += 1
            if terminated or truncated:
                break
        step_time += time.perf_counter() - start
    return {
        "steps_per_s": n_steps / step_time,
        "first_reset_s": statistics.median(first_resets),
        "seen_reset_s": statistics.median(seen_resets),
    }


def run_speed(args: argparse.Namespace) -> dict:
    games = resolve_games(args.games)
    rounds: dict[str, list[dict]] = {engine: [] for engine in ENGINES}
    for round_ in range(args.rounds):
        for engine in ENGINES:  # alternating, so machine noise hits both alike
            rounds[engine].append(speed_round(engine, games, args.steps, seed=round_))
            print(engine, round_, rounds[engine][-1], file=sys.stderr, flush=True)
    medians = {
        engine: {key: statistics.median(r[key] for r in rows) for key in rows[0]} for engine, rows in rounds.items()
    }
    return {
        "games": len(games),
        "rounds": args.rounds,
        "steps_per_game": args.steps,
        **medians,
        "speedup_fast_over_stock": {
            "steps_per_s": medians["fast"]["steps_per_s"] / medians["stock"]["steps_per_s"],
            "first_reset": medians["stock"]["first_reset_s"] / medians["fast"]["first_reset_s"],
            "seen_reset": medians["stock"]["seen_reset_s"] / medians["fast"]["seen_reset_s"],
        },
    }


# -- memory -----------------------------------------------------------------------------------
def run_worker(args: argparse.Namespace) -> dict:
    """What one worker process does: `slots` envs play every game in turn, like BatchedAlfWorld."""
    games = resolve_games(args.games)
    envs = [AlfWorldEnv(max_steps=args.steps, engine=args.engine) for _ in range(args.slots)]
    for index, game in enumerate(games):
        for slot, env in enumerate(envs):
            play_episode(env, game, seed=index * args.slots + slot, random_steps=args.steps)
    # ru_maxrss is in KiB on Linux.
    return {
        "engine": args.engine,
        "slots": args.slots,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_memory(args: argparse.Namespace) -> dict:
    peaks: dict[str, list[float]] = {engine: [] for engine in ENGINES}
    for _ in range(args.rounds):
        for engine in ENGINES:
            command = [
                sys.executable,
                __file__,
                "worker",
                "--engine",
                engine,
                "--games",
                args.games,
                "--slots",
                str(args.slots),
                "--steps",
                str(args.steps),
            ]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            peaks[engine].append(json.loads(output)["peak_rss_mib"])
    medians = {engine: statistics.median(values) for engine, values in peaks.items()}
    return {
        "slots_per_worker": args.slots,
        "peak_rss_mib": medians,
        "ratio_fast_over_stock": medians["fast"] / medians["stock"],
    }


# -- sweep ------------------------------------------------------------------------------------
def episode_plan(sources: list[tuple[str, int]]) -> list[tuple[str, int, str]]:
    """(game, seed, kind) for every episode: per game, mostly random walks, some walkthrough
    prefixes (one of them the whole walkthrough, which wins) and some expert walks."""
    kinds = ["random"] * 6 + ["prefix"] * 2 + ["expert"] * 2  # repeated in this order
    plan = []
    for source, per_game in sources:
        for game in resolve_games(source):
            plan += [(game, len(plan) + i, kinds[i % len(kinds)]) for i in range(per_game)]
    return plan


def sweep_worker(job: tuple[list[tuple[str, int, str]], int, int]) -> dict:
    plan, max_steps, random_steps = job
    envs = {
        (engine, expert): AlfWorldEnv(max_steps=max_steps, expert=expert, engine=engine)
        for engine in ENGINES
        for expert in (False, True)
    }
    walkthroughs: dict[str, list[str]] = {}
    mismatches, steps = [], 0
    for game, seed, kind in plan:
        walkthrough = walkthroughs.setdefault(game, load_game(game).walkthrough)
        prefix = []
        if kind == "prefix":
            prefix = walkthrough[: random.Random(seed).randint(1, len(walkthrough))]
        transcripts = [
            play_episode(
                envs[engine, kind == "expert"],
                game,
                seed,
                prefix,
                random_steps=random_steps,
                follow_expert=kind == "expert",
            )
            for engine in ENGINES
        ]
        steps += len(transcripts[0]) - 1
        step = first_difference(*transcripts)
        if step is not None:
            mismatches.append({"game": game, "seed": seed, "kind": kind, "output": step})
    return {"episodes": len(plan), "steps": steps, "mismatches": mismatches}


def run_sweep(args: argparse.Namespace) -> dict:
    plan = episode_plan([(source, int(per_game)) for source, per_game in args.games])
    jobs = [(plan[i :: args.workers], args.max_steps, args.random_steps) for i in range(args.workers)]
    start = time.perf_counter()
    with mp.get_context("spawn").Pool(args.workers) as pool:
        results = pool.map(sweep_worker, jobs)
    mismatches = [m for r in results for m in r["mismatches"]]
    return {
        "episodes": sum(r["episodes"] for r in results),
        "episodes_by_kind": {kind: sum(k == kind for *_, k in plan) for kind in ("random", "prefix", "expert")},
        "games": len({game for game, *_ in plan}),
        "steps_per_engine": sum(r["steps"] for r in results),
        "workers": args.workers,
        "seconds": round(time.perf_counter() - start, 1),
        "mismatched_episodes": len(mismatches),
        "mismatches": mismatches[:20],
    }


# -- profile ----------------------------------------------------------------------------------
def run_profile(args: argparse.Namespace) -> dict:
    games = resolve_games(args.games)[: args.num_games]
    report = {}
    for engine in ENGINES:
        forget_fast_caches()
        env = AlfWorldEnv(max_steps=args.steps, engine=engine)
        profiler = cProfile.Profile()
        profiler.enable()
        for index, game in enumerate(games):
            for episode in range(args.episodes):  # the first one loads the game
                play_episode(env, game, seed=100 * index + episode, random_steps=args.steps)
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(args.top)
        report[engine] = text.getvalue()
    return report


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    speed = commands.add_parser("speed", help="steps/s and reset times, alternating rounds")
    speed.add_argument("--games", required=True, help="a folder of games (e.g. generated, --size alfworld)")
    speed.add_argument("--rounds", type=int, default=3)
    speed.add_argument("--steps", type=int, default=30, help="random steps per game per round")
    memory = commands.add_parser("memory", help="peak RSS of one worker process per engine")
    memory.add_argument("--games", required=True)
    memory.add_argument("--rounds", type=int, default=1)
    memory.add_argument("--slots", type=int, default=4, help="envs per worker process")
    memory.add_argument("--steps", type=int, default=10)
    worker = commands.add_parser("worker", help="(used by memory) one worker's run, prints its peak RSS")
    worker.add_argument("--engine", choices=ENGINES, required=True)
    worker.add_argument("--games", required=True)
    worker.add_argument("--slots", type=int, required=True)
    worker.add_argument("--steps", type=int, required=True)
    sweep = commands.add_parser("sweep", help="differential check of both engines over many episodes")
    sweep.add_argument(
        "--games",
        nargs=2,
        action="append",
        required=True,
        metavar=("SOURCE", "EPISODES_PER_GAME"),
        help="games and how many episodes to play on each; repeat for several sources",
    )
    sweep.add_argument("--workers", type=int, default=2)
    sweep.add_argument("--max-steps", type=int, default=40, help="step limit (expert walks play up to it)")
    sweep.add_argument("--random-steps", type=int, default=4, help="random steps per walk (after any prefix)")
    profile = commands.add_parser("profile", help="cProfile of both engines, top entries by own time")
    profile.add_argument("--games", required=True)
    profile.add_argument("--num-games", type=int, default=4)
    profile.add_argument("--episodes", type=int, default=3, help="episodes per game")
    profile.add_argument("--steps", type=int, default=20, help="random steps per episode")
    profile.add_argument("--top", type=int, default=10)
    return parser


def main() -> None:
    args = make_parser().parse_args()
    run = {"speed": run_speed, "memory": run_memory, "worker": run_worker, "sweep": run_sweep, "profile": run_profile}[
        args.command
    ]
    result = run(args)
    if args.command == "profile":
        for engine, text in result.items():
            print(f"## {engine}\n{text}")
    else:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
