"""`holderpo eval`'s sweep: a policy named as on the command line, played over a set of games, with
its transcripts and results file written where asked.

The policy plays by its settings (`agents.policy_settings`): a training checkpoint by its run's,
unless a flag overrides one; the one-line account of where each came from goes to `echo` before
any episode starts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from agents.policy_settings import describe_sources, make_policy, resolve_settings
from envs.games import resolve_games
from eval.evaluate import EvalSummary, evaluate, summarize
from eval.results import RESULTS_FILE, TRANSCRIPT_FILE, results_json, write_json_atomic
from rollouts.transcripts import TranscriptWriter


def sweep(
    policy_name: str,
    games: str,
    flags: Mapping[str, Any],
    *,
    seed: int = 0,
    samples: int = 1,
    max_episodes: int | None = None,
    num_envs: int = 8,
    num_workers: int | None = None,
    out: Path | None = None,
    echo: Callable[[str], None] = print,
) -> EvalSummary:
    """Play every game of `games` (a folder, a game file or official:<split>) `samples` times with
    the policy `policy_name` (a scripted baseline, a model, a training checkpoint) and summarise.

    `flags` are the policy settings given on the command line (None: not given). With `out`,
    OUT/transcripts.jsonl gets every episode as it ends and OUT/results.json the summary and the
    per-episode results.
    """
    if samples < 1:
        raise ValueError(f"expected --samples >= 1, got {samples}")
    game_files = resolve_games(games)
    settings, sources = resolve_settings(policy_name, flags)
    echo(describe_sources(settings, sources))
    policy = make_policy(policy_name, settings)
    writer = None
    if out is not None:
        (out / TRANSCRIPT_FILE).unlink(missing_ok=True)  # a fresh sweep, a fresh file
        writer = TranscriptWriter(out / TRANSCRIPT_FILE, policy=policy.name)
    try:
        records = evaluate(
            policy,
            game_files,
            seed=seed,
            samples=samples,
            max_episodes=max_episodes,
            max_steps=settings.max_steps,
            num_envs=num_envs,
            num_workers=num_workers,
            on_episode_end=writer.write if writer else None,
            progress="evaluate",
        )
    finally:
        if writer:
            writer.close()
    summary = summarize(records, k=samples)
    if out is not None:
        write_json_atomic(
            out / RESULTS_FILE,
            results_json(
                summary,
                records,
                policy=policy_name,
                games=str(games),
                seed=seed,
                samples=samples,
                max_steps=settings.max_steps,
            ),
        )
    return summary
