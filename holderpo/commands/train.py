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


def run(args: argparse.Namespace) -> int:
    from holderpo.config import config_overrides, load_config
    from holderpo.report import report_lines
    from holderpo.run_folder import DEFAULT_CONFIG, start_run
    from holderpo.trainer import TrainingDiverged

    try:
        if args.resume is not None:
            config = load_config(args.resume / "config.yaml", config_overrides(args))
        else:
            # no config file and no games named: the default CPU run (holderpo/defaults/cpu.yaml)
            default = args.config is None and args.train_games is None
            config = load_config(DEFAULT_CONFIG if default else args.config, config_overrides(args))
        trainer = start_run(config, args.resume)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}")
        return 2
    try:
        report = trainer.train()
    except TrainingDiverged as error:
        print(f"error: {error}")
        return 1
    if report:
        print("\n".join(report_lines(report)))
        print(f"report: {trainer.run_dir / 'report.json'}")
    return 0
