"""What a training checkpoint folder holds.

Training (`holderpo.checkpoint`) writes these folders; `agents.models.load_model` reads a policy
back from one, so loading a model never imports the trainer.

A checkpoint folder holds
- `model/`: the LoRA adapter, or the whole model (full and top-layer fine-tuning), in
  transformers' own format, with the tokenizer;
- `trainer_state.pt`: optimizer state, the iteration it resumes at, and bookkeeping;
- `holderpo_checkpoint.json` (the marker): the resolved config of the run and the iteration.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MARKER = "holderpo_checkpoint.json"
MODEL_FOLDER = "model"
TRAINER_STATE = "trainer_state.pt"


class CheckpointError(OSError):
    """A checkpoint could not be written or read; the message says which and why."""


def is_checkpoint(folder: str | Path) -> bool:
    return (Path(folder).expanduser() / MARKER).is_file()


def read_info(folder: str | Path) -> dict[str, Any]:
    """The marker's content: `iteration`, `config` (the run's resolved options) and `run`."""
    marker = Path(folder) / MARKER
    if not marker.is_file():
        raise CheckpointError(f"{folder} is not a holderpo checkpoint (no {MARKER})")
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise CheckpointError(f"{marker} is damaged ({type(error).__name__}: {error})") from None
    if not isinstance(info, dict):
        raise CheckpointError(f"{marker} is damaged: expected a JSON object, got {type(info).__name__}")
    return info
