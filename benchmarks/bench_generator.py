"""Figures for the procedural game generator: games/s per size, rejection rate per task type,
walkthrough length (the handcoded expert's solution) per size and task type.

    python benchmarks/bench_generator.py                       # tiny, small, alfworld; ~3 min on 2 cores
    python benchmarks/bench_generator.py --sizes tiny --num 60 --workers 1

Prints a Markdown report. Each size generates `--num` train games (task types in turn) into a
temporary folder; games/s includes expert verification and the planner cross-check sample.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

from envs.generator import SIZES, TASK_TYPES, GenerationReport, generate_games


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), help="sizes to measure")
    parser.add_argument(
        "--num", type=int, nargs="+", default=[36, 18, 12], help="games per size, one number per size (or one for all)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--planner-every", type=int, default=10)
    return parser


def markdown(reports: list[GenerationReport], workers: int) -> str:
    lines = [
        f"### Games per second ({workers} worker processes, verification included)",
        "",
        "| size | games | seconds | games/s | rejected | planner checked / disagreed |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in reports:
        lines.append(
            f"| {r.size} | {r.games} | {r.seconds:.1f} | {r.games / r.seconds:.2f} | "
            f"{sum(r.rejected.values())} | {r.planner_checked} / {r.planner_disagreed} |"
        )
    lines += [
        "",
        "### Rejected candidates per task type (rejected / candidates tried)",
        "",
        "| task type | " + " | ".join(r.size for r in reports) + " |",
        "| --- |" + " ---: |" * len(reports),
    ]
    for task_type in TASK_TYPES:
        cells = []
        for r in reports:
            rejected, kept = r.rejected[task_type], r.games_per_task[task_type]
            cells.append(f"{rejected}/{rejected + kept} ({rejected / (rejected + kept):.0%})")
        lines.append(f"| {task_type} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "### Walkthrough length per size and task type (min / median / max, mean)",
        "",
        "| task type | " + " | ".join(r.size for r in reports) + " |",
        "| --- |" + " ---: |" * len(reports),
    ]
    for task_type in TASK_TYPES:
        cells = []
        for r in reports:
            n = r.solution_lengths[task_type]
            cells.append(f"{min(n)} / {statistics.median(n):g} / {max(n)}, {statistics.mean(n):.1f}")
        lines.append(f"| {task_type} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> None:
    nums = args.num if len(args.num) == len(args.sizes) else args.num[:1] * len(args.sizes)
    reports = []
    with tempfile.TemporaryDirectory(prefix="bench-generator-") as root:
        for size, num in zip(args.sizes, nums):
            reports.append(
                generate_games(
                    f"{root}/{size}",
                    num=num,
                    seed=args.seed,
                    size=size,
                    workers=args.workers,
                    planner_every=args.planner_every,
                )
            )
    print(markdown(reports, args.workers))


if __name__ == "__main__":
    main(make_parser().parse_args())
