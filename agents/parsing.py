"""Turning a model's raw output into a game command. Never raises: the env always gets a step.

Each output is classified as
- `admissible`: a well-formed command that the game accepts now;
- `inadmissible`: a well-formed command that the game does not accept now;
- `malformed`: no command could be read (empty, only end-of-sequence, no `<action>` tag, ...).
A malformed output still produces a step: its text (cut to a bound) goes to the game, where
nothing happens, so the episode and its step count go on like any other.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

ACTION_ONLY, REACT = "action", "react"
OUTPUT_FORMATS = (ACTION_ONLY, REACT)
MAX_COMMAND_CHARS = 200
_ACTION_TAG = re.compile(r"<action>(.*?)</action>", re.DOTALL)
_THINK_TAG = re.compile(r"<think>(.*?)</think>", re.DOTALL)


@dataclass(frozen=True)
class ParsedOutput:
    action: str  # what the env receives
    thought: str | None
    status: str  # admissible, inadmissible or malformed

    @property
    def malformed(self) -> bool:
        return self.status == "malformed"


def normalize_command(text: str) -> str:
    """Lower case, single spaces, no surrounding quotes or final full stop."""
    text = " ".join(text.strip().split()).lower()
    return text.strip("\"'`").rstrip(".").strip()


def _thought(text: str) -> str | None:
    match = _THINK_TAG.search(text)
    if match:
        return match.group(1).strip()
    # A constrained or capped thought may lack its opening tag: everything before </think>.
    return text.split("</think>", 1)[0].strip() if "</think>" in text else None


def parse_output(text: str, output_format: str, admissible: Sequence[str]) -> ParsedOutput:
    """Read the command out of `text` and classify it against the admissible commands."""
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"expected output_format in {list(OUTPUT_FORMATS)}, got {output_format!r}")
    thought = None
    if output_format == REACT:
        thought = _thought(text)
        match = _ACTION_TAG.search(text)
        command = normalize_command(match.group(1)) if match else ""
    else:
        lines = [line for line in text.splitlines() if line.strip()]
        command = normalize_command(lines[0]) if lines else ""
    if not command:
        fallback = " ".join(text.split())[:MAX_COMMAND_CHARS]
        return ParsedOutput(action=fallback, thought=thought, status="malformed")
    command = command[:MAX_COMMAND_CHARS]
    status = "admissible" if command in admissible else "inadmissible"
    return ParsedOutput(action=command, thought=thought, status=status)
