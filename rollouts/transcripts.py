"""Episode transcripts on disk: one JSON line per finished episode, versioned.

Each episode is appended and flushed to disk as soon as it ends, so a crash loses at most the
episodes in flight. Readers accept files whose last line was cut by such a crash (they report
it) and refuse schema versions they do not know.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rollouts.records import EpisodeRecord

SCHEMA_VERSION = 1
TURN_FIELDS = ("observation", "response", "thought", "action", "admissible", "malformed", "reward")


class TranscriptError(ValueError):
    """A transcript file cannot be read as a whole."""


def episode_to_json(record: EpisodeRecord, policy: str, model: str | None = None) -> dict[str, Any]:
    """The transcript entry of one episode: text and flags of every turn, no token arrays."""
    return {
        "schema": SCHEMA_VERSION, "episode_id": record.episode_id, "game": record.game,
        "game_id": record.game_id, "task_type": record.task_type, "task": record.task,
        "seed": record.seed, "sample": record.sample, "policy": policy, "model": model,
        "outcome": record.outcome, "error": record.error, "steps": record.steps,
        "final_observation": record.final_observation,
        "turns": [
            {**{name: getattr(turn, name) for name in TURN_FIELDS},
             "status": turn.extras.get("status"), "finish": turn.extras.get("finish")}
            for turn in record.turns
        ],
    }


class TranscriptWriter:
    """Appends episodes to a `.jsonl` file, each line flushed and synced when written."""

    def __init__(self, path: str | Path, policy: str, model: str | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.policy, self.model = policy, model
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, record: EpisodeRecord) -> None:
        self._file.write(json.dumps(episode_to_json(record, self.policy, self.model)) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "TranscriptWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


@dataclass
class Transcript:
    episodes: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # e.g. a cut last line, reported not fatal


def read_transcript(path: str | Path) -> Transcript:
    """Load a transcript file. A cut last line and lines of an unknown schema version are
    skipped and reported in `problems` (the rest is still usable); a broken line elsewhere
    raises TranscriptError naming it."""
    path = Path(path)
    if not path.is_file():
        raise TranscriptError(f"{path}: no such transcript file")
    transcript = Transcript()
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                transcript.problems.append(f"{path}:{number}: last line is cut off (interrupted run?); skipped")
                continue
            raise TranscriptError(f"{path}:{number}: not valid JSON") from None
        version = entry.get("schema") if isinstance(entry, dict) else None
        if version != SCHEMA_VERSION:
            transcript.problems.append(f"{path}:{number}: unknown transcript schema {version!r}; this "
                                       f"version of holderpo reads schema {SCHEMA_VERSION}; skipped")
            continue
        transcript.episodes.append(entry)
    return transcript
