"""`holderpo eval`: success rate of a policy on a deterministic sweep over games."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

SCRIPTED = ("expert", "random")


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval", help="evaluate a policy's success rate on a set of games",
        description="Play every game of SRC once, in sorted order, and report success per task "
                    "type and overall. Each episode ends won, step-limit or errored.",
    )
    parser.add_argument("--games", required=True,
                        help="a folder of games, a game file, or official:<split> from $ALFWORLD_DATA")
    parser.add_argument("--policy", required=True,
                        help="expert, random, embedded (the bundled SmolLM2), a Hugging Face id "
                             "or a local model folder")
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
                        help="write OUT/results.json and OUT/transcripts.jsonl")
    return parser


def write_json_atomic(path: Path, value) -> None:
    """Write JSON next to its target, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(value, f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def print_summary(summary: dict, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in ("task type", "episodes", "success", "won", "step-limit", "errored"):
        table.add_column(column, justify="left" if column == "task type" else "right", no_wrap=True)
    rows = list(summary["by_task_type"].items()) + [("overall", summary)]
    for name, row in rows:
        outcomes = row["outcomes"]
        table.add_row(name, str(row["episodes"]), f"{100 * row['success_rate']:.1f}%",
                      str(outcomes["won"]), str(outcomes["step-limit"]), str(outcomes["errored"]))
    Console().print(table)


def make_policy(args: argparse.Namespace):
    """A scripted baseline by name, or a model policy with the decoding options given."""
    from agents.baselines import BASELINES

    if args.policy in SCRIPTED:
        return BASELINES[args.policy]()
    from agents.llm_policy import DecodingConfig, LLMPolicy
    from agents.models import load_model
    from agents.prompts import PromptConfig

    model, tokenizer = load_model(args.policy)
    return LLMPolicy(model, tokenizer, PromptConfig(context=args.context, output_format=args.output_format),
                     DecodingConfig(decoding=args.decoding, temperature=args.temperature), name=args.policy)


def run(args: argparse.Namespace) -> int:
    from envs.games import MissingDataError, resolve_games
    from eval.evaluate import evaluate, summarize
    from rollouts.transcripts import TranscriptWriter

    try:
        games = resolve_games(args.games)
        policy = make_policy(args)
    except (MissingDataError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}")
        return 2
    writer = None
    if args.out is not None:
        (args.out / "transcripts.jsonl").unlink(missing_ok=True)  # a fresh sweep, a fresh file
        writer = TranscriptWriter(args.out / "transcripts.jsonl", policy=policy.name)
    try:
        records = evaluate(policy, games, seed=args.seed, max_episodes=args.max_episodes,
                           max_steps=args.max_steps, num_envs=args.num_envs, num_workers=args.workers,
                           on_episode_end=writer.write if writer else None)
    finally:
        if writer:
            writer.close()
    summary = summarize(records)
    print_summary(summary, f"{args.policy} on {args.games} (seed {args.seed})")
    if args.out is not None:
        results = {
            **summary, "policy": args.policy, "games": str(args.games), "seed": args.seed,
            "max_steps": args.max_steps,
            "episode_results": [
                {"episode_id": r.episode_id, "game": r.game, "task_type": r.task_type,
                 "outcome": r.outcome, "steps": r.steps, "error": r.error}
                for r in records
            ],
        }
        write_json_atomic(args.out / "results.json", results)
        print(f"wrote {args.out / 'results.json'} and {args.out / 'transcripts.jsonl'}")
    return 0
