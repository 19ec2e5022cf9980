"""`holderpo eval`'s sweep: a policy named as on the command line, played over a set of games, with
its transcripts and results file written where asked.

The policy plays by its settings (`agents.policy_settings`): a training checkpoint by its run's,
unless a flag overrides one; the one-line account of where each came from goes to `echo` before
any episode starts, after the list of game folders the sweep skips (and why).

Every check of the sweep's inputs (the out folder, the games, the settings, the policy) runs
before the first episode, and the out folder is cleared only then: bad input costs no sweep and
loses no earlier results. Ctrl-C raises `SweepInterrupted`, whose message says what is on disk.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.policy_settings import describe_sources, make_policy, resolve_settings
from envs.backends import prepare_env_backend
from envs.games import find_games
from eval.evaluate import EvalSummary, evaluate, summarize
from eval.results import (
    RESULTS_FILE,
    TRANSCRIPT_FILE,
    check_out_folder,
    clear_out_folder,
    results_json,
    write_json_atomic,
)
from rollouts.transcripts import TranscriptWriter

LISTED_SKIPS = 20  # skipped folders named one per line; results.json lists them all


@dataclass(frozen=True)
class SweepResult:
    """What a sweep reports: its statistics, and what it found but did not play."""

    summary: EvalSummary
    skipped: list[tuple[str, str]]  # (game folder, why) for every folder found but not played


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a sweep; the message says what it left on disk."""


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
    env_backend: str = "local",
    ray_address: str | None = None,
    out: Path | None = None,
    overwrite: bool = False,
    engine: str = "hf",
    echo: Callable[[str], None] = print,
) -> SweepResult:
    """Play every game of `games` (a folder, a game file or official:<split>) `samples` times with
    the policy `policy_name` (a scripted baseline, a model, a training checkpoint) and summarise.

    `flags` are the policy settings given on the command line (None: not given). With `out`,
    OUT/transcripts.jsonl gets every episode as it ends and OUT/results.json the summary, the
    skipped folders and the per-episode results; an `out` holding an earlier run's files is
    refused unless `overwrite`. `engine` generates a model's responses (`agents.engines`);
    `env_backend` ("local" or "ray") and `ray_address` choose where the envs run
    (`envs.backends.open_envs`), which changes no result.
    """
    if out is not None:
        check_out_folder(out, overwrite)
    if num_workers is not None and num_workers > num_envs:
        raise ValueError(f"--workers {num_workers}: expected at most --num-envs ({num_envs}), one slot per worker")
    scan = find_games(games)
    for line in skipped_lines(scan.skipped):
        echo(line)
    settings, sources = resolve_settings(policy_name, flags)
    echo(describe_sources(settings, sources))
    prepare_env_backend(env_backend, ray_address)  # a missing Ray or a wrong address, before the model loads
    policy = make_policy(policy_name, settings, engine)
    writer = None
    if out is not None:
        clear_out_folder(out)
        writer = TranscriptWriter(out / TRANSCRIPT_FILE, policy=policy.name)
    try:
        with writer or contextlib.nullcontext():
            records = evaluate(
                policy,
                scan.games,
                seed=seed,
                samples=samples,
                max_episodes=max_episodes,
                max_steps=settings.max_steps,
                num_envs=num_envs,
                num_workers=num_workers,
                env_backend=env_backend,
                ray_address=ray_address,
                on_episode_end=writer.write if writer else None,
                progress="evaluate",
            )
    except KeyboardInterrupt:  # the transcript is closed: every episode written is on disk, whole
        raise SweepInterrupted(left_on_disk(out)) from None
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
                skipped=scan.skipped,
            ),
        )
    return SweepResult(summary, scan.skipped)


def skipped_lines(skipped: Sequence[tuple[str, str]], limit: int | None = LISTED_SKIPS) -> list[str]:
    """How many game folders a sweep skips and why, the first `limit` (None: all) one per line."""
    if not skipped:
        return []
    shown = skipped if limit is None else skipped[:limit]
    lines = [f"skipped {len(skipped)} game folder(s):", *(f"  {folder}: {reason}" for folder, reason in shown)]
    if len(skipped) > len(shown):
        lines.append(f"  ... and {len(skipped) - len(shown)} more")
    return lines


def left_on_disk(out: Path | None) -> str:
    """What an interrupted sweep leaves: the episodes that finished, and no results file."""
    if out is None:
        return "interrupted; nothing was written (no --out)"
    path = out / TRANSCRIPT_FILE
    with open(path, "rb") as transcript:
        episodes = sum(1 for _ in transcript)
    return (
        f"interrupted: {episodes} finished episode(s) in {path}, no {RESULTS_FILE}; "
        "rerun with --overwrite to evaluate again"
    )
