"""Per-iteration metrics: `metrics.jsonl` always, one experiment tracker beside it (TensorBoard
when installed, or Weights & Biases), and PNG plots at the end."""

from __future__ import annotations

import importlib.util
import json
import math
import numbers
import os
from pathlib import Path
from typing import Any, Protocol

# the `tracker` option's values (holderpo.config); metrics.jsonl is written whichever is chosen
TRACKERS = ("tensorboard", "wandb")
WANDB_RUN_ID_FILE = "wandb_run_id"  # in the run folder: a resumed run continues the same wandb run

# (metric keys drawn together, panel title); a panel is left out when none of its keys was logged
PLOTTED = (
    (("rollout/success_rate",), "train success rate"),
    (("rollout/return_mean",), "mean return"),
    (("eval/success_rate",), "held-out success rate"),
    (("loss/policy",), "policy loss"),
    (("loss/kl",), "KL to reference"),
    (("schedule/p",), "Hölder exponent p"),
    # where the exponent acts: rho_p's spread over p in [-2, 2], the response length T, and the
    # gradient weights' entropy against its largest value log T
    (("exponent/spread",), "log rho_p spread over p in [-2, 2]"),
    (("exponent/tokens",), "loss tokens per sample T"),
    (("loss/weight_entropy", "exponent/log_tokens"), "entropy of W_t, and log T"),
)


class TrackerUnavailable(ValueError):
    """The chosen tracker's package is not installed (a ValueError, so that `holderpo train`
    reports it as a bad option, before any work)."""


def require_tracker(tracker: str) -> None:
    """Raise TrackerUnavailable when `tracker` cannot run here. Looks the package up without
    importing it (wandb takes a second to import), so config validation stays quick."""
    if tracker == "wandb" and importlib.util.find_spec("wandb") is None:
        raise _wandb_missing()


def _wandb_missing() -> TrackerUnavailable:
    return TrackerUnavailable(
        '--tracker wandb: the wandb package is not installed; pip install -e ".[wandb]", or use --tracker tensorboard'
    )


class Tracker(Protocol):
    """Where the scalar metrics go besides metrics.jsonl."""

    def log(self, step: int, scalars: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class TensorBoardTracker:
    """Scalars under RUN_DIR/tensorboard; a resumed run adds event files to the same folder."""

    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for key, value in scalars.items():
            self._writer.add_scalar(key, value, step)

    def close(self) -> None:
        self._writer.close()


class WandbTracker:
    """One wandb run per run folder. Its id is kept in RUN_DIR/wandb_run_id, so that a resumed
    run continues the same wandb run; online or offline is wandb's own choice (`WANDB_MODE`)."""

    def __init__(self, run_dir: Path, config: dict[str, Any] | None, run_name: str | None):
        try:
            import wandb
        except ImportError:
            raise _wandb_missing() from None
        run_dir = Path(run_dir)
        id_file = run_dir / WANDB_RUN_ID_FILE
        run_id = id_file.read_text().strip() if id_file.is_file() else None
        self._run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or "holderpo",
            name=run_name or run_dir.name,
            config=config,
            dir=str(run_dir),  # wandb's files go to RUN_DIR/wandb
            id=run_id,
            resume="allow" if run_id else None,
        )
        id_file.write_text(self._run.id + "\n")

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self._run.log(scalars, step=step)

    def close(self) -> None:
        self._run.finish()


def open_tracker(
    tracker: str, run_dir: Path, config: dict[str, Any] | None = None, run_name: str | None = None
) -> Tracker | None:
    """The tracker named `tracker`; None for TensorBoard when it is not installed (it is optional)."""
    if tracker == "wandb":
        return WandbTracker(run_dir, config, run_name)
    if tracker != "tensorboard":
        raise ValueError(f"tracker: expected one of {list(TRACKERS)}, got {tracker!r}")
    try:
        return TensorBoardTracker(run_dir)
    except ImportError:
        return None


def finite_scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The metrics a tracker can plot: real numbers, not NaN or inf (None, text and lists stay
    in metrics.jsonl only)."""
    return {key: value for key, value in metrics.items() if isinstance(value, numbers.Real) and math.isfinite(value)}


class RunLogger:
    """Appends each iteration's metrics to RUN_DIR/metrics.jsonl (a resumed run goes on in the
    same file) and sends its finite scalars to the tracker, at step = iteration."""

    def __init__(
        self,
        run_dir: Path,
        tracker: str = "tensorboard",
        config: dict[str, Any] | None = None,
        run_name: str | None = None,
    ):
        self.path = Path(run_dir) / "metrics.jsonl"
        # the tracker first: if it cannot start, no file is left open
        self._tracker = open_tracker(tracker, run_dir, config, run_name)
        self._file = open(self.path, "a", encoding="utf-8")

    def log(self, iteration: int, metrics: dict[str, Any]) -> None:
        self._file.write(json.dumps({"iteration": iteration, **metrics}) + "\n")
        self._file.flush()
        if self._tracker is not None:
            self._tracker.log(iteration, finite_scalars(metrics))

    def close(self) -> None:
        self._file.close()
        if self._tracker is not None:
            self._tracker.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_metrics(metrics_path: Path, out_path: Path) -> Path:
    """One PNG with a panel per main curve (panels without data are left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    panels = [(keys, title) for keys, title in PLOTTED if any(key in row for row in rows for key in keys)]
    figure, axes = plt.subplots(1, max(len(panels), 1), figsize=(4 * max(len(panels), 1), 3.2), squeeze=False)
    for axis, (keys, title) in zip(axes[0], panels):
        for key in keys:
            points = [(row["iteration"], row[key]) for row in rows if key in row]
            axis.plot([x for x, _ in points], [y for _, y in points], marker="o", markersize=3, label=key)
        if len(keys) > 1:
            axis.legend(fontsize=7)
        axis.set_title(title)
        axis.set_xlabel("iteration")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out_path, dpi=100)
    plt.close(figure)
    return Path(out_path)
