"""Episode transcripts on disk: one JSON line per finished episode, versioned.

Each episode is appended and flushed to disk as soon as it ends, so a crash loses at most the
episodes in flight. The reader gives back the `EpisodeRecord`s the runner wrote (without their
token records, which transcripts do not keep); it accepts files whose last line was cut by such
a crash and skips lines that are not episodes of the schema it knows, reporting both.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rollouts.records import OUTCOMES, EpisodeRecord, TurnRecord

SCHEMA_VERSION = 1
TURN_FIELDS = ("observation", "response", "thought", "action", "admissible", "malformed", "reward", "status", "finish")


class TranscriptError(ValueError):
    """A transcript file cannot be read as a whole."""


def episode_to_json(record: EpisodeRecord, policy: str, model: str | None = None) -> dict[str, Any]:
    """The transcript entry of one episode: text and flags of every turn, no token arrays."""
    return {
        "schema": SCHEMA_VERSION,
        "episode_id": record.episode_id,
        "game": record.game,
        "game_id": record.game_id,
        "task_type": record.task_type,
        "task": record.task,
        "seed": record.seed,
        "sample": record.sample,
        "policy": policy,
        "model": model,
        "outcome": record.outcome,
        "error": record.error,
        "steps": record.steps,
        "final_observation": record.final_observation,
        "turns": [{name: getattr(turn, name) for name in TURN_FIELDS} for turn in record.turns],
    }


# The JSON types a field may hold (a bool is never taken for a number).
TEXT, OPTIONAL_TEXT, INTEGER, NUMBER, FLAG, LIST = (str,), (str, type(None)), (int,), (int, float), (bool,), (list,)
_REQUIRED = object()


def _field(entry: dict, name: str, kinds: tuple[type, ...], default: Any = _REQUIRED) -> Any:
    """entry[name], checked against `kinds`; `default` where an optional field is absent."""
    value = entry.get(name, default)
    if value is _REQUIRED:
        raise ValueError(f"missing field {name!r}")
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        expected = " or ".join("null" if kind is type(None) else kind.__name__ for kind in kinds)
        raise ValueError(f"field {name!r}: expected {expected}, got {type(value).__name__}")
    return value


def _turn_from_json(entry: Any, number: int) -> TurnRecord:
    if not isinstance(entry, dict):
        raise ValueError(f"turn {number}: expected an object, got {type(entry).__name__}")
    try:
        return TurnRecord(
            observation=_field(entry, "observation", TEXT),
            action=_field(entry, "action", TEXT),
            response=_field(entry, "response", TEXT),
            thought=_field(entry, "thought", OPTIONAL_TEXT, None),
            admissible=_field(entry, "admissible", FLAG),
            malformed=_field(entry, "malformed", FLAG),
            reward=float(_field(entry, "reward", NUMBER)),
            status=_field(entry, "status", OPTIONAL_TEXT, None),
            finish=_field(entry, "finish", OPTIONAL_TEXT, None),
        )
    except ValueError as error:
        raise ValueError(f"turn {number}: {error}") from None


def episode_from_json(entry: dict) -> EpisodeRecord:
    """The record of one transcript entry, the inverse of `episode_to_json` (its schema version
    checked by the caller). Fields a writer may leave out (policy, model, thought, error, status,
    finish) read as None; transcripts keep no group, so it reads as 0. Raises ValueError naming
    the first field that does not fit the schema."""
    outcome = _field(entry, "outcome", TEXT)
    if outcome not in OUTCOMES:
        raise ValueError(f"field 'outcome': expected one of {list(OUTCOMES)}, got {outcome!r}")
    return EpisodeRecord(
        episode_id=_field(entry, "episode_id", TEXT),
        game=_field(entry, "game", TEXT),
        game_id=_field(entry, "game_id", TEXT),
        task_type=_field(entry, "task_type", TEXT),
        task=_field(entry, "task", TEXT),
        sample=_field(entry, "sample", INTEGER),
        seed=_field(entry, "seed", INTEGER),
        group=0,
        outcome=outcome,
        error=_field(entry, "error", OPTIONAL_TEXT, None),
        final_observation=_field(entry, "final_observation", TEXT),
        turns=[_turn_from_json(turn, number) for number, turn in enumerate(_field(entry, "turns", LIST), start=1)],
        policy=_field(entry, "policy", OPTIONAL_TEXT, None),
        model=_field(entry, "model", OPTIONAL_TEXT, None),
    )


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

    def __enter__(self) -> TranscriptWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


@dataclass
class Transcript:
    episodes: list[EpisodeRecord] = field(default_factory=list)  # in file order
    problems: list[str] = field(default_factory=list)  # e.g. a cut last line, reported not fatal


def read_transcript(path: str | Path) -> Transcript:
    """Load a transcript file. A cut last line, lines of an unknown schema version and lines
    that are not episodes of the known schema are skipped and reported in `problems` (the rest
    is still usable); a line that is not JSON elsewhere raises TranscriptError naming it."""
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
            transcript.problems.append(
                f"{path}:{number}: unknown transcript schema {version!r}; this "
                f"version of holderpo reads schema {SCHEMA_VERSION}; skipped"
            )
            continue
        try:
            transcript.episodes.append(episode_from_json(entry))
        except ValueError as error:
            transcript.problems.append(
                f"{path}:{number}: not an episode of transcript schema {SCHEMA_VERSION} ({error}); skipped"
            )
    return transcript
