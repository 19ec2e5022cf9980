"""Checkpoints written atomically: a crash or a full disk mid-write leaves the previous one usable.

A checkpoint folder holds
- `model/`: the LoRA adapter, or the whole model (full and top-layer fine-tuning), in
  transformers' own format, with the tokenizer;
- `trainer_state.pt`: optimizer state, the iteration it resumes at, and bookkeeping;
- `holderpo_checkpoint.json`: the resolved config and versions, which also marks the folder as
  ours so that `holderpo eval --policy FOLDER` knows how to load it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

MARKER = "holderpo_checkpoint.json"


class CheckpointError(OSError):
    """A checkpoint could not be written or read; the message says which and why."""


def save_checkpoint(target: Path, model, tokenizer, optimizer, state: dict[str, Any], info: dict[str, Any]) -> None:
    """Write a checkpoint at `target`, replacing any older one there only once complete."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(staging / "model")
        tokenizer.save_pretrained(staging / "model")
        torch.save({"optimizer": optimizer.state_dict() if optimizer else None, **state}, staging / "trainer_state.pt")
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
        raise CheckpointError(f"could not write checkpoint {target}: {error}. The previous checkpoint "
                              "(if any) is intact; free disk space and resume from it.") from error


def read_info(folder: Path) -> dict[str, Any]:
    marker = Path(folder) / MARKER
    if not marker.is_file():
        raise CheckpointError(f"{folder} is not a holderpo checkpoint (no {MARKER})")
    return json.loads(marker.read_text())


def load_trainer_state(folder: Path) -> dict[str, Any]:
    return torch.load(Path(folder) / "trainer_state.pt", weights_only=False)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint with the highest iteration in a run folder (final included)."""
    candidates = [p for p in Path(run_dir).glob("checkpoints/iter_*") if (p / MARKER).is_file()]
    final = Path(run_dir) / "final"
    if (final / MARKER).is_file():
        candidates.append(final)
    return max(candidates, key=lambda p: read_info(p)["iteration"], default=None)


def load_checkpoint_model(folder: Path, dtype: str = "float32", device: str = "cpu"):
    """`(model, tokenizer)` of a checkpoint: a LoRA adapter is applied to its base model."""
    from agents.models import load_model

    folder = Path(folder)
    info = read_info(folder)
    model_dir = folder / "model"
    if (model_dir / "adapter_config.json").is_file():
        from peft import PeftModel

        base, tokenizer = load_model(info["config"]["model"], dtype, device)
        return PeftModel.from_pretrained(base, model_dir).merge_and_unload().eval(), tokenizer
    return load_model(str(model_dir), dtype, device)
