"""`holderpo train`: HölderPO on ALFWorld games, with checkpoints and exact resume.

holderpo train                        # the default run: ~30 minutes on a laptop CPU
holderpo train --config debug_cpu     # a shipped config (or a YAML file's path)
holderpo train --resume runs/<name>
torchrun --nproc_per_node 2 -m holderpo.cli train   # the same run over 2 processes (docs/scaling.md)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from eval.terminal import visible


def add_parser(subparsers) -> argparse.ArgumentParser:
    from holderpo.config import add_config_flags

    parser = subparsers.add_parser(
        "train",
        help="train an agent with HölderPO (or GRPO, GSPO, GMPO, PPO)",
        description="Collect G episodes per game, compute group advantages, update the policy "
        "with the Hölder-mean loss at the scheduled p. The defaults are the default run "
        "(a laptop CPU, the embedded model); --config overrides them, flags override both.",
    )
    parser.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="continue a run from its latest checkpoint (its own config is used)",
    )
    add_config_flags(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from agents.checkpoint_format import CheckpointError
    from holderpo.config import config_overrides
    from holderpo.distributed import join_process_group, leave_process_group
    from holderpo.report import report_lines
    from holderpo.run_folder import run_config, start_run
    from holderpo.trainer import TrainingDiverged

    try:
        config = run_config(args.config, config_overrides(args), args.resume)
        ranks = join_process_group(config.device)  # one process unless torchrun started several
    except (ValueError, FileNotFoundError, CheckpointError) as error:
        print(visible(f"error: {error}"))
        return 2
    try:
        try:
            trainer = start_run(config, args.resume, ranks=ranks)
        except (ValueError, FileNotFoundError, CheckpointError) as error:
            print(visible(f"error: {error}"))
            return 2
        try:
            report = trainer.train()
        except TrainingDiverged as error:
            print(visible(f"error: {error}"))
            return 1
    finally:
        leave_process_group()
    if report:
        for line in [*report_lines(report), f"report: {trainer.run_dir / 'report.json'}"]:
            print(visible(line))
    return 0
