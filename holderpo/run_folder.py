"""A run folder before training starts: its config, its games (generated once where asked), the
trainer, the resolved config, the versions and a fingerprint of the game data (`run_info.json`);
and the run of `holderpo sft`, behaviour cloning alone."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from eval.results import package_versions
from holderpo.config import TrainConfig, load_config
from rollouts.specs import game_id


def games_fingerprint(paths: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(game_id(path).encode())
        digest.update(hashlib.sha256(Path(path).read_bytes()).digest())
    return digest.hexdigest()


def ensure_games(config: TrainConfig, echo: Callable[[str], None] = print) -> None:
    """Generate the train / held-out games first where the config asks for it and none are there.

    The games are built in a scratch folder beside the target and moved into place only when all
    are written, so an interrupted generation is redone by the next run, never reused half-done.
    """
    from envs.generator import SPLITS, generate_games

    for source, count in ((config.train_games, config.generate_train), (config.heldout_games, config.generate_heldout)):
        folder = Path(source)
        if not count or not source or source.startswith("official:") or any(folder.rglob("game.tw-pddl")):
            continue
        if folder.name not in SPLITS:
            raise ValueError(
                f"generated games go to <root>/<split>: expected a games folder ending in one of "
                f"{list(SPLITS)}, got {source}"
            )
        echo(f"generating {count} {config.generate_size} games in {folder} (once; later runs reuse them)")
        scratch = folder.parent / f".generating-{folder.name}"
        generate_games(
            scratch,
            count,
            config.generate_seed,
            split=folder.name,
            size=config.generate_size,
            overwrite=True,
            workers=os.cpu_count() or 1,  # the games do not depend on the worker count
        )
        if folder.exists():
            folder.rmdir()  # an empty leftover: it held no games
        os.replace(scratch / folder.name, folder)
        scratch.rmdir()


def write_run_info(config: TrainConfig, run_dir: Path, train_games: Sequence[str], heldout: Sequence[str]) -> None:
    """The resolved config, seed, versions and a fingerprint of the game data."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    info = {
        "seed": config.seed,
        "versions": package_versions(),
        "train_games": {"count": len(train_games), "sha256": games_fingerprint(train_games)},
        "heldout_games": {"count": len(heldout), "sha256": games_fingerprint(heldout) if heldout else None},
    }
    (run_dir / "run_info.json").write_text(json.dumps(info, indent=2))


def run_config(source: str | Path | None, overrides: dict[str, Any], resume_dir: Path | None = None) -> TrainConfig:
    """The config of a new run (the defaults, then the config `source`, then `overrides`), or of
    the run in `resume_dir` (its own config.yaml, then `overrides`)."""
    if resume_dir is None:
        return load_config(source, overrides)
    if source is not None:
        raise ValueError(
            f"--config: a resumed run keeps its own config ({Path(resume_dir) / 'config.yaml'}); "
            f"got --config {source}: drop it, or give single options as flags"
        )
    return load_config(Path(resume_dir) / "config.yaml", overrides)


def start_run(config, resume_dir: Path | None = None, warm_start_from: Path | None = None):
    """Games, trainer and run folder of one run (new, or resumed from `resume_dir`; a new run
    may start from another run's warm-start checkpoint): what `holderpo train` and
    `holderpo compare` do before training."""
    from holderpo.trainer import Trainer

    if resume_dir is None:
        if not config.name:
            config.name = f"{config.preset}-s{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = Path(config.runs_dir) / config.name
        if (run_dir / "final").exists():
            raise ValueError(f"run folder {run_dir} already holds a finished run: pick another --name")
    else:
        run_dir = resume_dir
    print(f"run: {config.name} ({run_dir})")
    ensure_games(config)
    trainer = Trainer(config, run_dir, resume=resume_dir is not None, warm_start_from=warm_start_from)
    if resume_dir is None:
        write_run_info(config, run_dir, trainer.train_games, trainer.heldout_games)
    return trainer


def warm_start_run(config: TrainConfig, echo: Callable[[str], None] = print) -> Path:
    """`holderpo sft`: behaviour cloning alone, in a run folder of its own. Returns its final
    checkpoint, a policy for `holderpo eval --policy` and a `--model` for `holderpo train`."""
    from holderpo.trainer import Trainer

    if config.sft_epochs < 1:
        raise ValueError(f"--sft-epochs: behaviour cloning needs at least 1 epoch, got {config.sft_epochs}")
    config.name = config.name or f"sft-s{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(config.runs_dir) / config.name
    echo(f"run: {config.name} ({run_dir})")
    ensure_games(config, echo)
    trainer = Trainer(config, run_dir, echo=echo)
    write_run_info(config, run_dir, trainer.train_games, trainer.heldout_games)
    trainer.warm_start()
    trainer.save(run_dir / "final")
    return run_dir / "final"
