"""A run folder before training starts: its config, its games (generated once where asked), the
trainer, the resolved config, the versions and the game sets, fingerprinted and with every folder
they skip (`run_info.json`); and the run of `holderpo sft`, behaviour cloning alone."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from envs.games import GAME_FILE, GameScan
from eval.results import package_versions
from eval.sweep import skipped_lines
from eval.terminal import visible
from holderpo.config import TrainConfig, load_config
from holderpo.distributed import SINGLE, Ranks
from rollouts.specs import game_id

if TYPE_CHECKING:
    from holderpo.trainer import Trainer


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
    from envs.generator import SPLITS, generate_games, outdated_games

    for source, count in ((config.train_games, config.generate_train), (config.heldout_games, config.generate_heldout)):
        folder = Path(source)
        asked = count and source and not source.startswith("official:")
        if not asked or folder.is_file():  # a file is checked as a game
            continue
        if any(folder.rglob(GAME_FILE)):
            if outdated := outdated_games(folder):
                echo(
                    visible(
                        f"warning: {outdated} games in {folder} come from an earlier version of the "
                        "generator (its expert's pick_two walkthroughs wander); move the folder away to have "
                        "them generated again"
                    )
                )
            continue
        if folder.name not in SPLITS:
            raise ValueError(
                f"generated games go to <root>/<split>: expected a games folder ending in one of "
                f"{list(SPLITS)}, got {source}"
            )
        echo(visible(f"generating {count} {config.generate_size} games in {folder} (once; later runs reuse them)"))
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


def game_set_info(source: str, scan: GameScan) -> dict[str, Any]:
    """A game set as run_info.json records it: where from, how many games, their fingerprint, and
    every folder skipped with why."""
    return {
        "source": source,
        "count": len(scan.games),
        "sha256": games_fingerprint(scan.games) if scan.games else None,
        "skipped": [{"folder": folder, "reason": reason} for folder, reason in scan.skipped],
    }


def write_run_info(config: TrainConfig, run_dir: Path, train: GameScan, heldout: GameScan) -> None:
    """The resolved config, seed, versions and the game sets (fingerprints, skipped folders)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    info = {
        "seed": config.seed,
        "versions": package_versions(),
        "train_games": game_set_info(config.train_games, train),
        "heldout_games": game_set_info(config.heldout_games, heldout),
    }
    (run_dir / "run_info.json").write_text(json.dumps(info, indent=2))


def announce_game_sets(trainer: Trainer, echo: Callable[[str], None]) -> None:
    """Say what the run plays on, and the folders its game sets skip and why, before it starts
    (a folder's name is data: shown through `visible`)."""
    sets = [("train games", trainer.cfg.train_games, trainer.train_scan)]
    if trainer.cfg.heldout_games:
        sets.append(("held-out games", trainer.cfg.heldout_games, trainer.heldout_scan))
    for label, source, scan in sets:
        for line in [f"{label}: {source}: {len(scan.games)} playable game(s)", *skipped_lines(scan.skipped)]:
            echo(visible(line))


def check_writable_folder(folder: Path, option: str) -> None:
    """Refuse, before any work, a folder option that names a file (or a place inside one) or a
    place the user cannot write: a run would find out only when it first saves, after loading the
    model. Creates nothing, so that an option refused later leaves no folder behind."""
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    if not existing.is_dir():
        where = "exists" if existing == folder else f"is inside {existing}, which exists"
        raise ValueError(f"{option} {folder}: {where} and is not a folder; choose a folder (it is created if missing)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {folder}: {existing} cannot be written by you; choose another folder")


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


def start_run(config, resume_dir: Path | None = None, warm_start_from: Path | None = None, ranks: Ranks = SINGLE):
    """Games, trainer and run folder of one run (new, or resumed from `resume_dir`; a new run
    may start from another run's warm-start checkpoint): what `holderpo train` and
    `holderpo compare` do before training. Under torchrun every rank calls this; rank 0 names
    the run, generates the games and writes the folder, the others use what it made."""
    from holderpo.trainer import Trainer

    if resume_dir is None:
        check_writable_folder(Path(config.runs_dir), "--runs-dir")
        config.name = ranks.broadcast(config.name or f"{config.preset}-s{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}")
        run_dir = Path(config.runs_dir) / config.name
        if (run_dir / "final").exists():
            raise ValueError(f"run folder {run_dir} already holds a finished run: pick another --name")
    else:
        run_dir = resume_dir
    say = print if ranks.is_main else _quiet
    say(visible(f"run: {config.name} ({run_dir})"))
    ranks.on_main(lambda: ensure_games(config))
    trainer = Trainer(config, run_dir, resume=resume_dir is not None, warm_start_from=warm_start_from, ranks=ranks)
    announce_game_sets(trainer, say)
    if resume_dir is None and ranks.is_main:
        write_run_info(config, run_dir, trainer.train_scan, trainer.heldout_scan)
    return trainer


def _quiet(line: str) -> None:
    """What ranks other than 0 print: nothing (rank 0 speaks for the run)."""


def warm_start_run(config: TrainConfig, echo: Callable[[str], None] = print) -> Path:
    """`holderpo sft`: behaviour cloning alone, in a run folder of its own. Returns its final
    checkpoint, a policy for `holderpo eval --policy` and a `--model` for `holderpo train`."""
    from holderpo.trainer import Trainer

    if config.sft_epochs < 1:
        raise ValueError(f"--sft-epochs: behaviour cloning needs at least 1 epoch, got {config.sft_epochs}")
    check_writable_folder(Path(config.runs_dir), "--runs-dir")
    config.name = config.name or f"sft-s{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(config.runs_dir) / config.name
    echo(visible(f"run: {config.name} ({run_dir})"))
    ensure_games(config, echo)
    trainer = Trainer(config, run_dir, echo=echo)
    announce_game_sets(trainer, echo)
    write_run_info(config, run_dir, trainer.train_scan, trainer.heldout_scan)
    trainer.warm_start()
    trainer.save(run_dir / "final")
    return run_dir / "final"
