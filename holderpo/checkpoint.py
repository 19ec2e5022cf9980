"""Checkpoints written atomically: a crash or a full disk mid-write leaves the previous one usable.

The folder layout and how a policy is read back live in `agents.checkpoint_format` (evaluation
loads policies without importing the trainer); this module writes checkpoints and reads the
trainer's own state for resume.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from agents.checkpoint_format import (  # re-exported: public names of this module before the split
    MARKER,
    MODEL_FOLDER,
    TRAINER_STATE,
    CheckpointError,
    read_info,
)
from agents.models import load_checkpoint_model

__all__ = [
    "MARKER",
    "CheckpointError",
    "latest_checkpoint",
    "load_checkpoint_model",
    "load_trainer_state",
    "read_info",
    "save_checkpoint",
]


def save_checkpoint(target: Path, model, tokenizer, optimizer, state: dict[str, Any], info: dict[str, Any]) -> None:
    """Write a checkpoint at `target`, replacing any older one there only once complete."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(staging / MODEL_FOLDER)
        tokenizer.save_pretrained(staging / MODEL_FOLDER)
        torch.save({"optimizer": optimizer.state_dict() if optimizer else None, **state}, staging / TRAINER_STATE)
        (staging / MARKER).write_text(json.dumps(info, indent=2))
        if target.exists():
            retired = target.with_name(f".{target.name}.old")
            shutil.rmtree(retired, ignore_errors=True)
            os.replace(target, retired)
            os.replace(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, target)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise CheckpointError(
            f"could not write checkpoint {target}: {error}. The previous checkpoint "
            "(if any) is intact; free disk space and resume from it."
        ) from error


def load_trainer_state(folder: Path) -> dict[str, Any]:
    """Optimizer state, trained and reference weights and the trainer's state: tensors and plain
    containers only, loaded with `weights_only` so that a crafted file cannot run code."""
    return torch.load(Path(folder) / TRAINER_STATE, weights_only=True)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint with the highest iteration in a run folder (final included)."""
    candidates = [p for p in Path(run_dir).glob("checkpoints/iter_*") if (p / MARKER).is_file()]
    final = Path(run_dir) / "final"
    if (final / MARKER).is_file():
        candidates.append(final)
    return max(candidates, key=lambda p: read_info(p)["iteration"], default=None)
