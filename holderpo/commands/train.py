"""`holderpo train`: HölderPO on ALFWorld games, with checkpoints and exact resume.

    holderpo train --config configs/debug_cpu.yaml
    holderpo train --resume runs/<name>
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    from holderpo.config import add_config_flags

    parser = subparsers.add_parser(
        "train", help="train an agent with HölderPO (or GRPO, GSPO, GMPO, PPO)",
        description="Collect G episodes per game, compute group advantages, update the policy "
                    "with the Hölder-mean loss at the scheduled p. Options come from the defaults, "
                    "then --config FILE, then flags.",
    )
    parser.add_argument("--config", type=Path, default=None, help="YAML file of options")
    parser.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                        help="continue a run from its latest checkpoint (its own config is used)")
    add_config_flags(parser)
    return parser


def _overrides(args: argparse.Namespace) -> dict:
    from holderpo.config import TrainConfig

    return {name: getattr(args, name) for name in TrainConfig.__dataclass_fields__ if getattr(args, name) is not None}


DEFAULT_CONFIG = Path(__file__).parent.parent / "defaults" / "cpu.yaml"


def run(args: argparse.Namespace) -> int:
    from holderpo.config import load_config
    from holderpo.trainer import Trainer, TrainingDiverged, ensure_games, write_run_info

    try:
        if args.resume is not None:
            run_dir = args.resume
            config = load_config(run_dir / "config.yaml", _overrides(args))
        else:
            # no config file and no games named: the default CPU run (holderpo/defaults/cpu.yaml)
            default = args.config is None and args.train_games is None
            config = load_config(DEFAULT_CONFIG if default else args.config, _overrides(args))
            if not config.name:
                config.name = f"{config.preset}-s{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
            run_dir = Path(config.runs_dir) / config.name
            if (run_dir / "final").exists():
                raise ValueError(f"run folder {run_dir} already holds a finished run: pick another --name")
        print(f"run: {config.name} ({run_dir})")
        ensure_games(config)
        trainer = Trainer(config, run_dir, resume=args.resume is not None)
        if args.resume is None:
            write_run_info(config, run_dir, trainer.train_games, trainer.heldout_games)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}")
        return 2
    try:
        report = trainer.train()
    except TrainingDiverged as error:
        print(f"error: {error}")
        return 1
    if report:
        before, after = report["heldout_success_before"], report["heldout_success_after"]
        if before is not None:
            print(f"held-out success: before {before:.3f}, after {after:.3f}")
        print(f"run: {config.name} done in {report['wall_seconds']:.0f} s; report: {run_dir / 'report.json'}")
    return 0
