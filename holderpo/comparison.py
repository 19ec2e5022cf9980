"""A loss comparison: its runs, one row per method, and the learning curves.

`holderpo compare` trains every (method, seed) pair under one config (`run_comparison`); the
summaries turn their `report.json` and `metrics.jsonl` files into the table and the plot. Seeds
are the replicates: the interval of a method's held-out success is a t interval over its seeds,
so it shows how much the result moves from one training run to the next, not only the episode
noise.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from envs.games import find_games
from eval.results import RESULTS_FILE
from eval.stats import mean_interval, paired_difference
from eval.sweep import sweep

if TYPE_CHECKING:
    from holderpo.config import TrainConfig
    from holderpo.losses import LossPreset

SET_PER_RUN = ("preset", "seed", "name", "runs_dir")  # the comparison chooses these for each run


class ComparisonStopped(Exception):
    """Ctrl-C stopped a comparison; the finished runs' summary is written, and rerunning the same
    command goes on where it stopped."""


@dataclass(frozen=True)
class MethodRow:
    method: str
    seeds: int
    success_after: float  # mean over seeds of the held-out success after RL
    low: float | None  # its 95% t interval over seeds (None with one seed)
    high: float | None
    gain: float  # mean over seeds of (after - before), the RL phase's own effect
    train_minutes: float  # mean over seeds of rollout + update time
    difference: dict | None = None  # paired after-RL difference from the first method (see paired_rows)

    def as_dict(self) -> dict:
        return asdict(self)


def training_seconds(metrics: Sequence[Mapping]) -> float:
    """Time spent training (collecting and updating), leaving out evaluation."""
    return sum(m.get("time/rollout", 0.0) + m.get("time/update", 0.0) for m in metrics)


def method_rows(
    reports: Mapping[str, Sequence[Mapping]], metrics: Mapping[str, Sequence[Sequence[Mapping]]]
) -> list[MethodRow]:
    """One row per method from its runs' reports and metrics (both listed in seed order)."""
    rows = []
    for method, runs in reports.items():
        after = [r["heldout_success_after"] for r in runs]
        mean, low, high = mean_interval(after)
        gains = [r["heldout_success_after"] - r["heldout_success_before"] for r in runs]
        minutes = [training_seconds(m) / 60 for m in metrics[method]]
        rows.append(MethodRow(method, len(runs), mean, low, high, sum(gains) / len(gains), sum(minutes) / len(minutes)))
    return paired_rows(rows, reports)


def episodes_after(runs: Sequence[Mapping]) -> dict[str, float]:
    """A method's held-out wins after RL over all its runs, keyed by seed and episode: two methods'
    runs of the same seed played the same episodes, so their keys pair up."""
    return {
        f"s{run['config']['seed']}/{episode}": won
        for run in runs
        for episode, won in run["heldout_after"]["won"].items()
    }


def paired_rows(rows: Sequence[MethodRow], reports: Mapping[str, Sequence[Mapping]]) -> list[MethodRow]:
    """Each row after the first with its difference from the first method, paired episode by
    episode over the seeds both have run.

    With 3 seeds the t interval over seeds is wide (t = 4.3); pairing the episodes removes the
    game-to-game variation and shows whether two trained policies differ beyond episode noise.
    It treats episodes as independent, so it does not cover how much a method moves from one
    training run to the next: read it beside the per-method interval.
    """
    if not rows:
        return []
    reference = episodes_after(reports[rows[0].method])
    paired = [rows[0]]
    for row in rows[1:]:
        episodes = episodes_after(reports[row.method])
        shared = reference.keys() & episodes.keys()  # none: no seed in common yet
        paired.append(replace(row, difference=paired_difference(reference, episodes)._asdict() if shared else None))
    return paired


def markdown_table(rows: Sequence[MethodRow], before: float | None = None) -> str:
    """The comparison as a Markdown table (percentages)."""
    first = rows[0].method if rows else "the first method"
    lines = [
        "| method | seeds | held-out success after RL | 95% interval (t over seeds) | gain over start "
        f"| training minutes | minus {first}, paired episodes (95%) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        interval = "n/a (1 seed)" if row.low is None else f"{100 * row.low:.1f} to {100 * row.high:.1f}"
        lines.append(
            f"| {row.method} | {row.seeds} | {100 * row.success_after:.1f}% | {interval} | "
            f"{100 * row.gain:+.1f} | {row.train_minutes:.1f} | {_difference_cell(row.difference)} |"
        )
    if before is not None:
        lines.append(
            f"\nEvery run starts from the same policy per seed; its mean held-out success is {100 * before:.1f}%."
        )
    return "\n".join(lines)


def _difference_cell(difference: Mapping | None) -> str:
    if difference is None:
        return "-"
    interval = (
        "" if difference["low"] is None else f" ({100 * difference['low']:+.1f} to {100 * difference['high']:+.1f})"
    )
    return f"{100 * difference['mean']:+.1f}{interval} on {difference['n']}"


def mean_curve(runs: Sequence[Sequence[Mapping]], key: str) -> list[float]:
    """Per iteration, the mean of `key` over the runs that logged it that far."""
    length = max((len(run) for run in runs), default=0)
    curve = []
    for index in range(length):
        values = [run[index][key] for run in runs if index < len(run) and key in run[index]]
        curve.append(sum(values) / len(values) if values else float("nan"))
    return curve


def plot_curves(
    metrics: Mapping[str, Sequence[Sequence[Mapping]]], out_path: Path, key: str = "rollout/success_rate"
) -> Path:
    """Learning curves (mean over seeds) of every method in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for method, runs in metrics.items():
        curve = mean_curve(runs, key)
        axis.plot(range(1, len(curve) + 1), curve, marker="o", label=f"{method} ({len(runs)} seeds)")
    axis.set_xlabel("iteration")
    axis.set_ylabel(key.replace("/", " ").replace("_", " "))
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out_path, dpi=120)
    plt.close(figure)
    return out_path


def plot_success_by_exponent(rows: Sequence[MethodRow], out_path: Path) -> Path | None:
    """Held-out success after RL against p for the methods that hold p constant (`preset@P`), with
    their intervals over seeds; annealed methods and the others as horizontal reference lines.
    None (nothing drawn) with fewer than two constant-p methods."""
    constant = [(Method.parse(r.method).p, r) for r in rows]
    points = sorted((p[0], r) for p, r in constant if p is not None and p[0] == p[1])
    if len(points) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    xs = [p for p, _ in points]
    ys = [100 * r.success_after for _, r in points]
    errors = [
        [100 * (r.success_after - r.low) if r.low is not None else 0 for _, r in points],
        [100 * (r.high - r.success_after) if r.high is not None else 0 for _, r in points],
    ]
    axis.errorbar(xs, ys, yerr=errors, marker="o", capsize=4, label="constant p (95% t interval over seeds)")
    for p, r in constant:
        if p is None or p[0] != p[1]:
            axis.axhline(100 * r.success_after, linestyle="--", alpha=0.6, color=f"C{1 + len(axis.lines) % 8}")
            axis.annotate(r.method, (xs[-1], 100 * r.success_after), fontsize=8, va="bottom", ha="right")
    axis.set_xlabel("p")
    axis.set_ylabel("held-out success after RL (%)")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out_path, dpi=120)
    plt.close(figure)
    return out_path


# -- running a comparison ----------------------------------------------------------------------
@dataclass(frozen=True)
class Method:
    """One method of a comparison, as `--losses` names it: a preset, and for a preset that anneals
    p, optionally its exponent: `holderpo@1` holds p = 1 for the whole run (sequence clip and all
    else unchanged), `holderpo@2..-2` goes from 2 to -2 along the config's p_schedule."""

    name: str
    preset: str
    p: tuple[float, float] | None = None  # (p_start, p_end); equal ends: a constant p

    @classmethod
    def parse(cls, spec: str) -> Method:
        from holderpo.losses import PRESETS

        preset, at, exponent = spec.partition("@")
        if preset not in PRESETS:
            raise ValueError(f"--losses: expected presets among {sorted(PRESETS)}, got {preset!r} in {spec!r}")
        if not at:
            return cls(spec, preset)
        if not PRESETS[preset].annealed:
            annealed = sorted(name for name, p in PRESETS.items() if p.annealed)
            raise ValueError(f"--losses {spec}: only presets that anneal p take @P or @P0..P1 ({annealed})")
        try:
            ends = [float(end) for end in exponent.split("..")]
        except ValueError:
            ends = []
        if len(ends) not in (1, 2) or not all(math.isfinite(end) for end in ends):
            raise ValueError(
                f"--losses {spec}: expected {preset}@P (a constant p) or {preset}@P0..P1, e.g. holderpo@2..-2"
            )
        return cls(spec, preset, (ends[0], ends[-1]))

    def overrides(self) -> dict[str, Any]:
        """The config options this method sets besides its preset."""
        if self.p is None:
            return {}
        start, end = self.p
        return {"p_start": start, "p_end": end} | ({"p_schedule": "constant"} if start == end else {})


@dataclass(frozen=True)
class Transfer:
    """A second held-out set every method is scored on after RL (and every seed's starting policy
    before it): bigger rooms, say, to see whether what a method learned carries over."""

    games: str
    episodes: int = 0  # the first N episodes (0: all)
    max_steps: int | None = None  # None: each run's own step limit

    def __post_init__(self):
        if self.episodes < 0:
            raise ValueError(f"--transfer-episodes: expected >= 0 (0: all), got {self.episodes}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"--transfer-max-steps: expected >= 1, got {self.max_steps}")


def score_transfer(out: Path, run_dir: Path, seed: int, transfer: Transfer, base: TrainConfig, echo) -> None:
    """Play `transfer`'s games with the run's final policy (OUT/<run>/transfer) and, once per seed,
    with the policy every run of that seed started from (OUT/transfer-before-s<seed>); each sweep
    is skipped when its results are already there."""
    warm = seed_warm_start(out, seed)
    start = str(warm) if warm else base.model  # no warm start: RL started from the model itself
    for policy, folder in ((start, out / f"transfer-before-s{seed}"), (str(run_dir / "final"), run_dir / "transfer")):
        if not (folder / RESULTS_FILE).exists():
            echo(f"transfer: {policy} on {transfer.games}")
            sweep(
                policy,
                transfer.games,
                {"max_steps": transfer.max_steps},
                seed=seed,
                max_episodes=transfer.episodes or None,
                num_envs=base.num_envs,
                out=folder,
                overwrite=True,
                engine=base.engine,
                echo=echo,
            )


def transfer_reports(out: Path, folders: Mapping[tuple[str, int], Path]) -> dict[str, list[dict]] | None:
    """Per method, report-like records of its transfer sweeps (before and after RL, and which
    episodes were won), as `method_rows` reads them; None until every finished run has both."""
    reports: dict[str, list[dict]] = {}
    for (loss, seed), folder in folders.items():
        paths = (out / f"transfer-before-s{seed}" / RESULTS_FILE, folder / "transfer" / RESULTS_FILE)
        if not all(path.exists() for path in paths):
            return None
        before, after = (json.loads(path.read_text()) for path in paths)
        won = {e["episode_id"]: int(e["outcome"] == "won") for e in after["episode_results"]}
        reports.setdefault(loss, []).append(
            {
                "config": {"seed": seed},
                "heldout_success_before": before["success_rate"],
                "heldout_success_after": after["success_rate"],
                "heldout_after": {"won": won},
            }
        )
    return reports


def plan_runs(losses: str, seeds: int) -> list[tuple[str, int]]:
    """The (method, seed) pairs of `--losses a,b,c --seeds N`, each method checked (`Method.parse`),
    seed by seed: a comparison stopped part-way holds whole seeds, every method on the same ones,
    so its table already pairs them."""
    names = [name.strip() for name in losses.split(",") if name.strip()]
    if not names:
        raise ValueError(f"--losses: expected comma-separated presets, got {losses!r}")
    for name in names:
        Method.parse(name)
    if seeds < 1:
        raise ValueError(f"--seeds: expected at least 1, got {seeds}")
    return [(loss, seed) for seed in range(seeds) for loss in names]


def method_overrides(base: TrainConfig, loss: str) -> dict[str, Any]:
    """What a method's run changes in the shared config: its preset, its exponent (`Method`), and
    the clip range. A config's `clip_low`/`clip_high` are the range of the config's own `preset`,
    so every other method trains at its published range (GSPO's 3e-4/4e-4 is a thousand times
    tighter than 0.2)."""
    method = Method.parse(loss)
    clip = {} if method.preset == base.preset else {"clip_low": -1.0, "clip_high": -1.0}
    return {"preset": method.preset} | method.overrides() | clip


def method_presets(base: TrainConfig, losses: Sequence[str]) -> dict[str, LossPreset]:
    """Each method's effective loss settings under `base`, built as its run's trainer builds them."""
    from holderpo.trainer import loss_preset

    return {loss: loss_preset(replace(base, **method_overrides(base, loss))) for loss in losses}


def settings_lines(base: TrainConfig, losses: Sequence[str]) -> list[str]:
    """What `compare` prints before training: every method's objective and clip range, and a note
    when the config's own clip range is left to its preset."""
    presets = method_presets(base, losses)
    lines = [f"loss {preset.describe(base.iterations, base.estimator)}" for preset in presets.values()]
    overridden = base.clip_low != -1.0 or base.clip_high != -1.0
    others = [loss for loss in losses if Method.parse(loss).preset != base.preset]
    if overridden and others:
        lines.append(
            f"note: the config's clip range applies to its preset {base.preset} only; "
            f"{', '.join(others)} use their published ranges"
        )
    return lines


def seed_warm_start(out: Path, seed: int) -> Path | None:
    """The warm-start checkpoint a method's run of `seed` made in OUT (the one every run of that
    seed starts RL from), or None while there is none."""
    from holderpo.checkpoint import MARKER

    warm = sorted(out.glob(f"*-s{seed}/checkpoints/iter_0000/{MARKER}"))
    return warm[0].parent if warm else None


def train_or_reuse(
    out: Path,
    source: str | Path | None,
    overrides: dict[str, Any],
    loss: str,
    seed: int,
    echo: Callable[[str], None] = print,
) -> Path:
    """Run `loss` with `seed` in OUT/<loss>-s<seed>: reused when finished, resumed when
    interrupted, and started from the seed's warm-start checkpoint where another method made one."""
    from holderpo.report import report_lines
    from holderpo.run_folder import run_config, start_run

    run_dir = out / f"{loss}-s{seed}"
    if (run_dir / "report.json").exists():
        echo(f"run: {run_dir.name} already finished: reused")
        return run_dir
    resume = run_dir if (run_dir / "checkpoints").is_dir() else None
    overrides = overrides | {"seed": seed, "name": run_dir.name, "runs_dir": str(out)}
    trainer = start_run(
        run_config(None if resume else source, overrides, resume),
        resume,
        None if resume else seed_warm_start(out, seed),
    )
    report = trainer.train()
    if not report:
        raise KeyboardInterrupt  # stopped with Ctrl-C: the run saved; rerun compare to go on
    echo("\n".join(report_lines(report)))
    return run_dir


def finished_runs(out: Path, plan: Sequence[tuple[str, int]]) -> dict[tuple[str, int], Path]:
    """Every planned run that has finished, wherever it stands in the plan."""
    folders = {(loss, seed): out / f"{loss}-s{seed}" for loss, seed in plan}
    return {pair: folder for pair, folder in folders.items() if (folder / "report.json").exists()}


def write_summary(
    out: Path, folders: Mapping[tuple[str, int], Path], planned: int, transfer_games: str | None = None
) -> str:
    """Table, numbers and curves of the runs finished so far (with `transfer_games`, a second
    table of the transfer sweeps); rewritten after every run so that an interrupted comparison
    still shows what it has."""
    from holderpo.run_logging import read_metrics

    reports, metrics = {}, {}
    for (loss, _), folder in folders.items():
        reports.setdefault(loss, []).append(json.loads((folder / "report.json").read_text()))
        metrics.setdefault(loss, []).append(read_metrics(folder / "metrics.jsonl"))
    rows = method_rows(reports, metrics)
    befores = [r["heldout_success_before"] for runs in reports.values() for r in runs]
    table = markdown_table(rows, sum(befores) / len(befores) if None not in befores else None)
    summary = {"rows": [row.as_dict() for row in rows]}
    transfer = transfer_reports(out, folders) if transfer_games else None
    if transfer:
        transfer_rows = method_rows(transfer, metrics)
        befores = [r["heldout_success_before"] for runs in transfer.values() for r in runs]
        table += f"\n\nTransfer: the same policies on {transfer_games}.\n\n"
        table += markdown_table(transfer_rows, sum(befores) / len(befores))
        summary["transfer_rows"] = [row.as_dict() for row in transfer_rows]
    if len(folders) < planned:
        table += f"\n\nPartial: {len(folders)} of {planned} runs finished; rerun the same command to go on."
    (out / "comparison.md").write_text(table + "\n")
    runs = {f"{loss}-s{seed}": str(folder) for (loss, seed), folder in folders.items()}
    (out / "comparison.json").write_text(json.dumps(summary | {"runs": runs, "planned_runs": planned}, indent=2))
    plot_curves(metrics, out / "curves.png")
    plot_success_by_exponent(rows, out / "success_by_p.png")
    return table


def run_comparison(
    losses: str,
    seeds: int,
    out: Path,
    source: str | Path | None,
    overrides: dict[str, Any],
    echo: Callable[[str], None] = print,
    transfer: Transfer | None = None,
) -> str:
    """`holderpo compare`: train every (method, seed) pair under the config `source` plus
    `overrides`, rewriting the summary in `out` after each run; returns the final table. With
    `transfer`, each run is also scored on the transfer games (`score_transfer`).

    Raises ComparisonStopped on Ctrl-C, after writing the summary of the runs finished so far.
    """
    from holderpo.run_folder import run_config

    plan = plan_runs(losses, seeds)
    fixed = [f"--{name.replace('_', '-')}" for name in SET_PER_RUN if name in overrides]
    if fixed:
        raise ValueError(f"{', '.join(fixed)}: compare sets these for every run; use --losses, --seeds and --out")
    base = run_config(source, overrides)
    if transfer and not find_games(transfer.games).games:
        raise ValueError(f"--transfer-games: no playable games in {transfer.games}")
    if not base.heldout_games:
        raise ValueError(
            "--heldout-games: compare scores every method on held-out games; give a folder of them "
            "(or a config that has one)"
        )
    methods = list(dict.fromkeys(loss for loss, _ in plan))
    for line in settings_lines(base, methods):
        echo(line)
    try:
        for loss, seed in plan:
            run_dir = train_or_reuse(out, source, overrides | method_overrides(base, loss), loss, seed, echo)
            if transfer:
                score_transfer(out, run_dir, seed, transfer, base, echo)
            table = write_summary(out, finished_runs(out, plan), len(plan), transfer and transfer.games)
    except KeyboardInterrupt:
        finished = finished_runs(out, plan)
        if finished:
            write_summary(out, finished, len(plan), transfer and transfer.games)
        raise ComparisonStopped(
            f"stopped; {out / 'comparison.md'} holds the {len(finished)} finished runs; "
            "rerun the same command to continue the comparison"
        ) from None
    return table
