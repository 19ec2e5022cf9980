"""Results files of an evaluation sweep (`OUT/results.json`) and the versions every run records.

`holderpo eval --out` writes them, `holderpo eval --compare` and training read them; the file
holds the summary, the sweep's settings, the package versions and one entry per episode, which
comparisons pair on `episode_id`.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rollouts.records import EpisodeRecord

if TYPE_CHECKING:  # the command line imports this module to build its parser: keep it light
    from eval.evaluate import EvalSummary

RESULTS_FILE = "results.json"
TRANSCRIPT_FILE = "transcripts.jsonl"
VERSIONED_PACKAGES = ("alfworld", "textworld", "torch", "transformers", "gymnasium")


def package_versions() -> dict[str, str]:
    """Python's version and those of the packages a result depends on ("not installed" if absent)."""
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def write_json_atomic(path: Path, value: Any) -> None:
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


def results_json(
    summary: EvalSummary,
    records: Sequence[EpisodeRecord],
    *,
    policy: str,
    games: str,
    seed: int,
    samples: int,
    max_steps: int,
) -> dict:
    """What `OUT/results.json` holds: the summary, the sweep's settings and versions, and one
    entry per episode (which `--compare` pairs on `episode_id`)."""
    return {
        **summary.to_json(),
        "policy": policy,
        "games": games,
        "seed": seed,
        "samples": samples,
        "max_steps": max_steps,
        "versions": package_versions(),
        "episode_results": [
            {
                "episode_id": r.episode_id,
                "game": r.game,
                "game_id": r.game_id,
                "sample": r.sample,
                "task_type": r.task_type,
                "outcome": r.outcome,
                "steps": r.steps,
                "error": r.error,
            }
            for r in records
        ],
    }


def read_results(path: Path) -> dict:
    """A results file written by `holderpo eval --out` (or the folder holding it), checked
    for the per-episode entries that a comparison needs."""
    path = path / RESULTS_FILE if path.is_dir() else path
    hint = "write one with `holderpo eval ... --out DIR`"
    if not path.is_file():
        raise ValueError(f"{path}: no such results file; {hint}")
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise ValueError(f"{path}: the file is empty (an interrupted run?); {hint}")
    try:
        results = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error}); {hint}") from None
    episodes = results.get("episode_results") if isinstance(results, dict) else None
    if not isinstance(episodes, list):
        raise ValueError(
            f"{path}: expected a JSON object with a list 'episode_results', got none "
            f"(written by an older evaluator?); {hint}"
        )
    if not episodes:
        raise ValueError(f"{path}: holds no episodes (the sweep played nothing); {hint}")
    return results


def episode_scores(results: dict) -> dict[str, float]:
    """episode_id -> 1.0 if won else 0.0."""
    return {entry["episode_id"]: float(entry["outcome"] == "won") for entry in results["episode_results"]}
