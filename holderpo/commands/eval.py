"""`holderpo eval`: success rate of a policy on a deterministic sweep over games, and
`holderpo eval --compare A B`: the paired difference between two such results files.

    holderpo eval --games official:valid_unseen --policy runs/holderpo/final --samples 4 --out out/
    holderpo eval --compare out_grpo/results.json out_holderpo/results.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from eval.results import RESULTS_FILE, TRANSCRIPT_FILE

SCRIPTED = ("expert", "random")


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval", help="evaluate a policy's success rate on a set of games, or compare two results",
        description="Play every game of --games once (or --samples k times), in sorted order, and "
                    "report success per task type and overall with Wilson 95% intervals, pass@k, "
                    "mean steps of won episodes and the admissible-action rate. Each episode ends "
                    "won, step-limit or errored. With --compare A B, compare two results files "
                    "episode by episode instead.",
    )
    parser.add_argument("--games",
                        help="a folder of games (official layout or generated), a game file, or "
                             "official:valid_seen / official:valid_unseen / official:train from $ALFWORLD_DATA")
    parser.add_argument("--policy",
                        help="expert, random, embedded (the bundled SmolLM2), a Hugging Face id, a "
                             "training checkpoint (runs/<name>/final), or a model or LoRA adapter folder")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"), default=None,
                        help="compare two results files (or the folders holding them): paired "
                             "difference B - A on the episodes both played, with its 95%% interval")
    parser.add_argument("--samples", type=int, default=1,
                        help="play each game k times and report pass@k (default 1)")
    parser.add_argument("--decoding", choices=("constrained", "free"), default="constrained",
                        help="model policies: sample only admissible commands, or free text")
    parser.add_argument("--output-format", choices=("action", "react"), default="action",
                        help="model policies: the command alone, or <think> then <action>")
    parser.add_argument("--context", choices=("step", "full"), default="step",
                        help="model policies: step-wise prompts or the whole episode")
    parser.add_argument("--temperature", type=float, default=1.0, help="model sampling temperature")
    parser.add_argument("--max-episodes", type=int, default=None,
                        help="evaluate only the first N games of the sorted list")
    parser.add_argument("--seed", type=int, default=0, help="evaluation seed (default 0)")
    parser.add_argument("--max-steps", type=int, default=50, help="step limit per episode")
    parser.add_argument("--num-envs", type=int, default=8, help="episodes played at once")
    parser.add_argument("--workers", type=int, default=None, help="env processes (default: CPUs)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"write OUT/{RESULTS_FILE} and OUT/{TRANSCRIPT_FILE}")
    return parser


def print_summary(summary: dict, title: str) -> None:
    """The results table (a row per task type and an overall row) and the sweep's totals.

    Headers are short so the 30-character task type names fit an 80-column terminal.
    """
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True,
                  caption="n: episodes; 95% CI: Wilson interval of success; limit: step limit "
                          "reached; err: errored")
    table.add_column("task type", overflow="fold")
    for column in ("n", "success", "95% CI", f"pass@{summary['k']}", "won", "limit", "err"):
        table.add_column(column, justify="right", no_wrap=True)
    for name, row in [*summary["by_task_type"].items(), ("overall", summary)]:
        low, high = row["success_ci95"]
        outcomes = row["outcomes"]
        table.add_row(name, str(row["episodes"]), f"{100 * row['success_rate']:.1f}%",
                      f"{100 * low:.0f}-{100 * high:.0f}%", f"{100 * row['pass_at_k']:.1f}%",
                      str(outcomes["won"]), str(outcomes["step-limit"]), str(outcomes["errored"]),
                      style="bold" if name == "overall" else None)
    console = Console()
    console.print(table)
    mean_steps = summary["mean_steps_won"]
    console.print(f"mean steps of won episodes: {'-' if mean_steps is None else f'{mean_steps:.1f}'}; "
                  f"admissible actions: {100 * summary['admissible_rate']:.1f}% of {summary['steps']} steps",
                  markup=False, highlight=False)


def make_policy(args: argparse.Namespace):
    """A scripted baseline by name, or a model policy with the decoding options given."""
    from agents.baselines import BASELINES

    if args.policy in SCRIPTED:
        return BASELINES[args.policy]()
    from agents.llm_policy import DecodingConfig, LLMPolicy
    from agents.prompts import PromptConfig

    from agents.models import load_policy_model

    model, tokenizer = load_policy_model(args.policy)
    return LLMPolicy(model, tokenizer, PromptConfig(context=args.context, output_format=args.output_format),
                     DecodingConfig(decoding=args.decoding, temperature=args.temperature), name=args.policy)


def run_sweep(args: argparse.Namespace) -> int:
    from envs.games import MissingDataError, resolve_games
    from eval.evaluate import evaluate, summarize
    from eval.results import results_json, write_json_atomic
    from rollouts.transcripts import TranscriptWriter

    try:
        if args.samples < 1:
            raise ValueError(f"expected --samples >= 1, got {args.samples}")
        games = resolve_games(args.games)
        policy = make_policy(args)
    except (MissingDataError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}")
        return 2
    writer = None
    if args.out is not None:
        (args.out / TRANSCRIPT_FILE).unlink(missing_ok=True)  # a fresh sweep, a fresh file
        writer = TranscriptWriter(args.out / TRANSCRIPT_FILE, policy=policy.name)
    try:
        records = evaluate(policy, games, seed=args.seed, samples=args.samples,
                           max_episodes=args.max_episodes, max_steps=args.max_steps,
                           num_envs=args.num_envs, num_workers=args.workers,
                           on_episode_end=writer.write if writer else None, progress="evaluate")
    finally:
        if writer:
            writer.close()
    summary = summarize(records, k=args.samples)
    print_summary(summary, f"{args.policy} on {args.games} (seed {args.seed}, {args.samples} sample(s) per game)")
    if args.out is not None:
        write_json_atomic(args.out / RESULTS_FILE, results_json(
            summary, records, policy=args.policy, games=str(args.games), seed=args.seed, samples=args.samples,
            max_steps=args.max_steps))
        print(f"wrote {args.out / RESULTS_FILE} and {args.out / TRANSCRIPT_FILE}")
    return 0


def _describe(label: str, path: Path, results: dict) -> str:
    from eval.results import episode_scores
    from eval.stats import wilson_interval

    scores = episode_scores(results)
    wins = int(sum(scores.values()))
    low, high = wilson_interval(wins, len(scores))
    return (f"{label}: {path} ({results.get('policy', '?')}): {wins}/{len(scores)} won, "
            f"{100 * wins / len(scores):.1f}% (95% CI {100 * low:.1f}-{100 * high:.1f})")


def run_compare(path_a: Path, path_b: Path) -> int:
    """Print each file's success rate and the paired difference B - A on their shared episodes."""
    from eval.results import episode_scores, read_results
    from eval.stats import paired_difference

    loaded, failed = {}, False
    for label, path in (("A", path_a), ("B", path_b)):
        try:
            loaded[label] = read_results(path)
            print(_describe(label, path, loaded[label]))
        except ValueError as error:
            print(f"error: {label}: {error}")
            failed = True
    if failed:
        return 2
    a, b = episode_scores(loaded["A"]), episode_scores(loaded["B"])
    shared = set(a) & set(b)
    if not shared:
        print(f"error: A and B share no episode (A's ids look like {min(a)!r}, B's like {min(b)!r}): "
              "compare results of the same games, seed and --samples")
        return 2
    diff = paired_difference(a, b)
    interval = ("no interval" if diff.low is None
                else f"95% CI {100 * diff.low:+.1f} to {100 * diff.high:+.1f}")
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
        print("error: expected --games and --policy (or --compare A B), got "
              f"--games {args.games!r} and --policy {args.policy!r}")
        return 2
    return run_sweep(args)
