"""`holderpo compare`: several loss presets, several seeds, one budget, one table.

    holderpo compare --losses holderpo,grpo,gspo,gmpo --seeds 3
    holderpo compare --losses holderpo,grpo --seeds 2 --config configs/debug_cpu.yaml --out runs/cmp

Every (loss, seed) pair is one training run under the same config (the default CPU run unless
--config is given), in OUT/<loss>-s<seed>/. The warm start (behaviour cloning) and the
evaluations before RL run once per seed, in that seed's first run; the other methods start RL
from its checkpoint, so every method improves the same policy. A finished run is reused and an
interrupted one is resumed, so an interrupted comparison goes on where it stopped. After every
finished run OUT/comparison.md holds the table of the runs so far (each method against the first,
paired episode by episode), OUT/comparison.json the numbers and OUT/curves.png the learning curves.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SET_PER_RUN = ("preset", "seed", "name", "runs_dir")  # compare chooses these for each run


def add_parser(subparsers) -> argparse.ArgumentParser:
    from holderpo.config import add_config_flags

    parser = subparsers.add_parser(
        "compare", help="train several loss presets over several seeds and tabulate held-out success",
        description="Train each preset in --losses with seeds 0..N-1 under one config, then write a "
                    "table (mean held-out success, its 95% t interval over seeds, training time) "
                    "and learning curves. Any other flag of `holderpo train` applies to every run.",
    )
    parser.add_argument("--losses", default="holderpo,grpo,gspo,gmpo",
                        help="comma-separated presets (default: holderpo,grpo,gspo,gmpo)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per preset (default: 3)")
    parser.add_argument("--out", type=Path, default=Path("runs/compare"), help="folder of the runs and the table")
    parser.add_argument("--config", type=Path, default=None, help="YAML file of options (default: the CPU default)")
    add_config_flags(parser)
    return parser


def _plan(args: argparse.Namespace) -> list[tuple[str, int]]:
    from holderpo.losses import PRESETS

    losses = [name.strip() for name in args.losses.split(",") if name.strip()]
    unknown = [name for name in losses if name not in PRESETS]
    if not losses or unknown:
        raise ValueError(f"--losses: expected presets among {sorted(PRESETS)}, got {args.losses!r}")
    if args.seeds < 1:
        raise ValueError(f"--seeds: expected at least 1, got {args.seeds}")
    fixed = [f"--{name.replace('_', '-')}" for name in SET_PER_RUN if getattr(args, name) is not None]
    if fixed:
        raise ValueError(f"{', '.join(fixed)}: compare sets these for every run; use --losses, --seeds and --out")
    from holderpo.config import config_overrides, load_config
    from holderpo.run_folder import DEFAULT_CONFIG

    if not load_config(args.config or DEFAULT_CONFIG, config_overrides(args)).heldout_games:
        raise ValueError("--heldout-games: compare scores every method on held-out games; give a folder of them "
                         "(or a config that has one)")
    return [(loss, seed) for loss in losses for seed in range(args.seeds)]


def _train_or_reuse(args: argparse.Namespace, loss: str, seed: int) -> Path:
    from holderpo.checkpoint import MARKER
    from holderpo.config import config_overrides, load_config
    from holderpo.report import report_lines
    from holderpo.run_folder import DEFAULT_CONFIG, start_run

    run_dir = args.out / f"{loss}-s{seed}"
    if (run_dir / "report.json").exists():
        print(f"run: {run_dir.name} already finished: reused")
        return run_dir
    resume = (run_dir / "checkpoints").is_dir()
    source = run_dir / "config.yaml" if resume else (args.config or DEFAULT_CONFIG)
    overrides = config_overrides(args) | {"preset": loss, "seed": seed, "name": run_dir.name, "runs_dir": str(args.out)}
    warm = sorted(args.out.glob(f"*-s{seed}/checkpoints/iter_0000/{MARKER}"))
    trainer = start_run(load_config(source, overrides), run_dir if resume else None,
                        warm[0].parent if warm and not resume else None)
    report = trainer.train()
    if not report:
        raise KeyboardInterrupt  # stopped with Ctrl-C: the run saved; rerun compare to go on
    print("\n".join(report_lines(report)))
    return run_dir


def _finished(out: Path, plan: list[tuple[str, int]]) -> dict[tuple[str, int], Path]:
    """Every planned run that has finished, wherever it stands in the plan."""
    folders = {(loss, seed): out / f"{loss}-s{seed}" for loss, seed in plan}
    return {pair: folder for pair, folder in folders.items() if (folder / "report.json").exists()}


def write_summary(out: Path, folders: dict[tuple[str, int], Path], planned: int) -> str:
    """Table, numbers and curves of the runs finished so far; rewritten after every run so that
    an interrupted comparison still shows what it has."""
    from holderpo.comparison import markdown_table, method_rows, plot_curves
    from holderpo.run_logging import read_metrics

    reports, metrics = {}, {}
    for (loss, _), folder in folders.items():
        reports.setdefault(loss, []).append(json.loads((folder / "report.json").read_text()))
        metrics.setdefault(loss, []).append(read_metrics(folder / "metrics.jsonl"))
    rows = method_rows(reports, metrics)
    befores = [r["heldout_success_before"] for runs in reports.values() for r in runs]
    table = markdown_table(rows, sum(befores) / len(befores) if None not in befores else None)
    if len(folders) < planned:
        table += f"\n\nPartial: {len(folders)} of {planned} runs finished; rerun the same command to go on."
    (out / "comparison.md").write_text(table + "\n")
    (out / "comparison.json").write_text(json.dumps({"rows": [row.as_dict() for row in rows],
                                                     "runs": {f"{l}-s{s}": str(f) for (l, s), f in folders.items()},
                                                     "planned_runs": planned}, indent=2))
    plot_curves(metrics, out / "curves.png")
    return table


def run(args: argparse.Namespace) -> int:
    try:
        plan = _plan(args)
        for pair in plan:
            _train_or_reuse(args, *pair)
            table = write_summary(args.out, _finished(args.out, plan), len(plan))
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}")
        return 2
    except KeyboardInterrupt:
        finished = _finished(args.out, plan)
        if finished:
            write_summary(args.out, finished, len(plan))
        print(f"stopped; {args.out / 'comparison.md'} holds the {len(finished)} finished runs; "
              f"rerun the same command to continue the comparison")
        return 130
    print(table)
    print(f"written: {args.out / 'comparison.md'}, {args.out / 'comparison.json'}, {args.out / 'curves.png'}")
    return 0
