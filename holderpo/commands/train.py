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


def start_run(config, resume_dir: Path | None = None, warm_start_from: Path | None = None):
    """Games, trainer and run folder of one run (new, or resumed from `resume_dir`; a new run
    may start from another run's warm-start checkpoint): what `holderpo train` and
    `holderpo compare` do before training."""
    from holderpo.trainer import Trainer, ensure_games, write_run_info

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


def print_report(report: dict) -> None:
    before, after, gain = report["heldout_success_before"], report["heldout_success_after"], report["rl_gain"]
    if before is not None:
        print(f"held-out success: random {report['heldout_success_random']:.3f}, untrained "
              f"{report['heldout_success_untrained']:.3f}, before RL {before:.3f}, after RL {after:.3f}")
        interval = "" if gain["low"] is None else f" (95% CI {100 * gain['low']:+.1f} to {100 * gain['high']:+.1f})"
        print(f"RL gain: {100 * gain['mean']:+.1f} points on {gain['n']} paired episodes{interval}")
    print(f"run: {report['run']} done in {report['wall_seconds']:.0f} s")


def run(args: argparse.Namespace) -> int:
    from holderpo.config import load_config
    from holderpo.trainer import TrainingDiverged

    try:
        if args.resume is not None:
            config = load_config(args.resume / "config.yaml", _overrides(args))
        else:
            # no config file and no games named: the default CPU run (holderpo/defaults/cpu.yaml)
            default = args.config is None and args.train_games is None
            config = load_config(DEFAULT_CONFIG if default else args.config, _overrides(args))
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
        print_report(report)
        print(f"report: {trainer.run_dir / 'report.json'}")
    return 0
