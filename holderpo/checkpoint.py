"""Checkpoints written atomically: a crash or a full disk mid-write leaves the previous one usable.

The folder layout and how a policy is read back live in `agents.checkpoint_format` (evaluation
loads policies without importing the trainer); this module writes checkpoints and reads the
trainer's own state for resume.
"""

from __future__ import annotations

import json
import os
import pickle
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

STATE_KEYS = {"weights", "optimizer", "state"}  # what every trainer_state.pt holds

__all__ = [
    "MARKER",
    "CheckpointError",
    "checkpoints_newest_first",
    "latest_checkpoint",
    "load_checkpoint_model",
    "load_trainer_state",
    "read_info",
    "save_checkpoint",
]


def save_checkpoint(
    target: Path,
    model,
    tokenizer,
    optimizer_state: dict[str, Any] | None,
    state: dict[str, Any],
    info: dict[str, Any],
    model_state: dict[str, Any] | None = None,
) -> None:
    """Write a checkpoint at `target`, replacing any older one there only once complete.
    `model_state`: the model's whole weights where it holds only a shard of them (FSDP2)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        # save_pretrained drops tied weights from the dict it is given: hand it a copy
        model.save_pretrained(staging / MODEL_FOLDER, state_dict=dict(model_state) if model_state else None)
        tokenizer.save_pretrained(staging / MODEL_FOLDER)
        torch.save({"optimizer": optimizer_state, **state}, staging / TRAINER_STATE)
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
    containers only, loaded with `weights_only` so that a crafted file cannot run code. A file
    that is cut short, empty, crafted or not ours raises CheckpointError saying so."""
    path = Path(folder) / TRAINER_STATE
    try:
        saved = torch.load(path, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, TypeError, AttributeError) as error:
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise CheckpointError(f"{path} is damaged or not a holderpo trainer state ({reason}); not loaded") from None
    if not isinstance(saved, dict) or not STATE_KEYS <= saved.keys() or not isinstance(saved["state"], dict):
        raise CheckpointError(f"{path} is not a holderpo trainer state (expected the keys {sorted(STATE_KEYS)})")
    return saved


def checkpoints_newest_first(run_dir: Path) -> list[Path]:
    """Every checkpoint of a run folder whose marker reads, highest iteration first (final included)."""
    folders = [*Path(run_dir).glob("checkpoints/iter_*"), Path(run_dir) / "final"]
    iterations = {}
    for folder in folders:
        try:
            iteration = read_info(folder).get("iteration") if (folder / MARKER).is_file() else None
        except CheckpointError:
            continue
        if type(iteration) is int:
            iterations[folder] = iteration
    return sorted(iterations, key=lambda folder: (iterations[folder], folder.name == "final"), reverse=True)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint with the highest iteration in a run folder (final included)."""
    return next(iter(checkpoints_newest_first(run_dir)), None)
