"""`holderpo sft`: behaviour cloning on the expert walkthroughs of training games (a warm start).

Takes the same options as `holderpo train` (model, fine-tuning mode, prompts, decoding); the
result is a checkpoint that `holderpo eval --policy` and `holderpo train --model` accept.

    holderpo sft --train-games games/train --sft-epochs 3 --name warm
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    from holderpo.config import add_config_flags

    parser = subparsers.add_parser(
        "sft", help="behaviour cloning on the expert's walkthroughs (warm start)",
        description="Supervised learning on the stored walkthroughs of the training games, with the "
                    "same prompts, response tokens and constraint masks as RL.",
    )
    parser.add_argument("--config", type=Path, default=None, help="YAML file of options")
    add_config_flags(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from holderpo.config import config_overrides, load_config
    from holderpo.run_folder import write_run_info
    from holderpo.trainer import Trainer

    try:
        config = load_config(args.config, config_overrides(args))
        config.sft_epochs = config.sft_epochs or 3
        config.name = config.name or f"sft-s{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = Path(config.runs_dir) / config.name
        trainer = Trainer(config, run_dir)
        write_run_info(config, run_dir, trainer.train_games, trainer.heldout_games)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}")
        return 2
    print(f"run: {config.name} ({run_dir})")
    trainer.warm_start()
    trainer.save(run_dir / "final")
    print(f"saved {run_dir / 'final'}: evaluate it with holderpo eval --policy {run_dir / 'final'}")
    return 0
