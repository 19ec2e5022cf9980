"""`holderpo compare`: several loss presets, several seeds, one budget, one table.

    holderpo compare --losses holderpo,grpo,gspo,gmpo --seeds 3
    holderpo compare --losses holderpo,grpo --seeds 2 --config debug_cpu --out runs/cmp

Every (loss, seed) pair is one training run under the same config (the default run unless
--config or flags change it), in OUT/<loss>-s<seed>/. The warm start (behaviour cloning) and the
evaluations before RL run once per seed, in that seed's first run; the other methods start RL
from its checkpoint, so every method improves the same policy. A finished run is reused and an
interrupted one is resumed, so an interrupted comparison goes on where it stopped. After every
finished run OUT/comparison.md holds the table of the runs so far (each method against the first,
paired episode by episode), OUT/comparison.json the numbers and OUT/curves.png the learning curves.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from eval.terminal import visible


def add_parser(subparsers) -> argparse.ArgumentParser:
    from holderpo.config import add_config_flags

    parser = subparsers.add_parser(
        "compare",
        help="train several loss presets over several seeds and tabulate held-out success",
        description="Train each preset in --losses with seeds 0..N-1 under one config, then write a "
        "table (mean held-out success, its 95% t interval over seeds, training time) "
        "and learning curves. Any other flag of `holderpo train` applies to every run.",
    )
    parser.add_argument(
        "--losses", default="holderpo,grpo,gspo,gmpo", help="comma-separated presets (default: holderpo,grpo,gspo,gmpo)"
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per preset (default: 3)")
    parser.add_argument("--out", type=Path, default=Path("runs/compare"), help="folder of the runs and the table")
    parser.add_argument(
        "--transfer-games",
        default=None,
        help="also score every run's final policy, and each seed's starting policy, on these games "
        "(bigger rooms, say): a second table",
    )
    parser.add_argument(
        "--transfer-episodes", type=int, default=0, help="the first N episodes of the transfer games (default 0: all)"
    )
    parser.add_argument(
        "--transfer-max-steps", type=int, default=None, help="step limit on the transfer games (default: the run's own)"
    )
    add_config_flags(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from agents.checkpoint_format import CheckpointError
    from holderpo.comparison import ComparisonStopped, Transfer, run_comparison
    from holderpo.config import config_overrides
    from holderpo.run_folder import check_writable_folder

    try:
        check_writable_folder(args.out, "--out")
        transfer = (
            Transfer(args.transfer_games, args.transfer_episodes, args.transfer_max_steps)
            if args.transfer_games
            else None
        )
        table = run_comparison(
            args.losses, args.seeds, args.out, args.config, config_overrides(args), transfer=transfer
        )
    except (ValueError, FileNotFoundError, CheckpointError) as error:
        print(visible(f"error: {error}"))
        return 2
    except ComparisonStopped as stopped:
        print(stopped)
        return 130
    print(visible(table, keep_newlines=True))
    written = [args.out / name for name in ("comparison.md", "comparison.json", "curves.png", "success_by_p.png")]
    print(visible(f"written: {', '.join(str(path) for path in written if path.exists())}"))
    return 0
