"""Summaries of a loss comparison: one row per method, and the learning curves.

`holderpo compare` trains every (method, seed) pair under one config; this module turns their
`report.json` and `metrics.jsonl` files into the table and the plot. Seeds are the replicates:
the interval of a method's held-out success is a t interval over its seeds, so it shows how much
the result moves from one training run to the next, not only the episode noise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Mapping, Sequence

from eval.stats import mean_interval, paired_difference


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


def method_rows(reports: Mapping[str, Sequence[Mapping]], metrics: Mapping[str, Sequence[Sequence[Mapping]]]
                ) -> list[MethodRow]:
    """One row per method from its runs' reports and metrics (both listed in seed order)."""
    rows = []
    for method, runs in reports.items():
        after = [r["heldout_success_after"] for r in runs]
        mean, low, high = mean_interval(after)
        gains = [r["heldout_success_after"] - r["heldout_success_before"] for r in runs]
        minutes = [training_seconds(m) / 60 for m in metrics[method]]
        rows.append(MethodRow(method, len(runs), mean, low, high, sum(gains) / len(gains),
                              sum(minutes) / len(minutes)))
    return paired_rows(rows, reports)


def episodes_after(runs: Sequence[Mapping]) -> dict[str, float]:
    """A method's held-out wins after RL over all its runs, keyed by seed and episode: two methods'
    runs of the same seed played the same episodes, so their keys pair up."""
    return {f"s{run['config']['seed']}/{episode}": won for run in runs
            for episode, won in run["heldout_after"]["won"].items()}


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
    lines = ["| method | seeds | held-out success after RL | 95% interval (t over seeds) | gain over start "
             f"| training minutes | minus {first}, paired episodes (95%) |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        interval = "n/a (1 seed)" if row.low is None else f"{100 * row.low:.1f} to {100 * row.high:.1f}"
        lines.append(f"| {row.method} | {row.seeds} | {100 * row.success_after:.1f}% | {interval} | "
                     f"{100 * row.gain:+.1f} | {row.train_minutes:.1f} | {_difference_cell(row.difference)} |")
    if before is not None:
        lines.append(f"\nEvery run starts from the same policy per seed; its mean held-out success is "
                     f"{100 * before:.1f}%.")
    return "\n".join(lines)


def _difference_cell(difference: Mapping | None) -> str:
    if difference is None:
        return "-"
    interval = "" if difference["low"] is None else \
        f" ({100 * difference['low']:+.1f} to {100 * difference['high']:+.1f})"
    return f"{100 * difference['mean']:+.1f}{interval} on {difference['n']}"


def mean_curve(runs: Sequence[Sequence[Mapping]], key: str) -> list[float]:
    """Per iteration, the mean of `key` over the runs that logged it that far."""
    length = max((len(run) for run in runs), default=0)
    curve = []
    for index in range(length):
        values = [run[index][key] for run in runs if index < len(run) and key in run[index]]
        curve.append(sum(values) / len(values) if values else float("nan"))
    return curve


def plot_curves(metrics: Mapping[str, Sequence[Sequence[Mapping]]], out_path: Path,
                key: str = "rollout/success_rate") -> Path:
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
