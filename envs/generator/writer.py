"""Writing game folders so that a crash or a full disk never leaves half a game behind.

Each game is written into a hidden staging folder next to its final place and renamed into
place with one `os.replace`; on any OSError the staging folder is removed before the error
propagates. Loaders that walk the tree (alfworld's, ours) therefore see whole games or none.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

GAME_FILES = ("traj_data.json", "initial_state.pddl", "game.tw-pddl")
STAGING_PREFIX = ".partial-"


def existing_games(folder: Path) -> list[Path]:
    """Game folders (or leftovers of interrupted writes) below `folder`."""
    if not folder.is_dir():
        return []
    found = {p.parent for name in GAME_FILES for p in folder.rglob(name)}
    found |= set(folder.rglob(f"{STAGING_PREFIX}*"))
    return sorted(found)


def prepare_split_folder(out_dir: Path, split: str, overwrite: bool) -> Path:
    """Create `out_dir/split`, refusing to mix new games with old ones unless `overwrite`.

    Only the split's own folder is checked and replaced, so train, valid and test can be
    generated into one `out_dir` by three runs.
    """
    split_dir = out_dir / split
    old = existing_games(split_dir)
    if old and not overwrite:
        raise FileExistsError(
            f"expected an output folder without games, got {len(old)} game folders under {split_dir} "
            f"(e.g. {old[0]}); pass --overwrite to replace them or choose another --out"
        )
    if old:
        shutil.rmtree(split_dir)
    split_dir.mkdir(parents=True, exist_ok=True)
    return split_dir


def write_game(final_dir: Path, files: dict[str, bytes]) -> Path:
    """Write `files` as the folder `final_dir`, all or nothing."""
    staging = final_dir.parent / f"{STAGING_PREFIX}{final_dir.name}"
    try:
        staging.mkdir(parents=True)
        for name, data in files.items():
            _write_bytes(staging / name, data)
        os.replace(staging, final_dir)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_if_empty(final_dir.parent)
        raise
    return final_dir


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "xb") as f:
        f.write(data)


def _remove_if_empty(folder: Path) -> None:
    """Drop a task folder that the failed write created and left empty."""
    try:
        folder.rmdir()
    except OSError:
        pass  # not empty (earlier games live there) or already gone
