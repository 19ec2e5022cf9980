"""One training process against two (torchrun, gloo), on the same short run, in one sitting.

Runs `holderpo train` with the embedded model on the debug config's games (no held-out sweep, no
warm start) once in one process and once over two ranks, and reports the seconds per iteration
spent in rollouts and in the update (means over the iterations, from each run's metrics.jsonl),
the ratios, and whether both runs trained the same (equal rollout metrics and final weights).
The two ranks run in a network namespace of their own with only the loopback interface (needs
`unshare` and `ip`: root, or user namespaces).

    python benchmarks/bench_ranks.py --iterations 3 --finetune top
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from holderpo.checkpoint import load_trainer_state

REPO = Path(__file__).resolve().parent.parent


def run(ranks: int, runs: Path, name: str, options: list[str]) -> float:
    """Train once on `ranks` processes; the wall seconds of the whole command."""
    command = [sys.executable, "-m", "holderpo.cli", "train", *options, "--runs-dir", str(runs), "--name", name]
    if ranks > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks)]
        command = ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *launcher, *command[1:]]
    tick = time.time()
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True)
    return time.time() - tick


def iteration_times(run_dir: Path) -> dict[str, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {key: sum(row[key] for row in rows) / len(rows) for key in ("time/rollout", "time/update")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--finetune", default="top", choices=("top", "lora", "full"))
    args = parser.parse_args()
    options = [
        "--config", "debug_cpu", "--heldout-games", "", "--sft-epochs", "0", "--finetune", args.finetune,
        "--iterations", str(args.iterations), "--checkpoint-every", "0", "--games-per-iteration", "4",
    ]  # fmt: skip
    runs = Path(tempfile.mkdtemp(prefix="bench-ranks-"))
    try:
        walls = {ranks: run(ranks, runs, f"ranks{ranks}", options) for ranks in (1, 2)}
        times = {ranks: iteration_times(runs / f"ranks{ranks}") for ranks in (1, 2)}
        rollouts = [
            [{k: v for k, v in json.loads(line).items() if k.startswith("rollout/")} for line in path.open()]
            for path in (runs / f"ranks{r}" / "metrics.jsonl" for r in (1, 2))
        ]
        same_rollouts = rollouts[0] == rollouts[1]
        weights = [load_trainer_state(runs / f"ranks{r}" / "final")["weights"] for r in (1, 2)]
        difference = max(float((weights[0][n] - weights[1][n]).abs().max()) for n in weights[0])
    finally:
        shutil.rmtree(runs, ignore_errors=True)
    report = {
        "machine": f"{torch.get_num_threads()} torch threads in this process",
        "options": options,
        "seconds_per_iteration": {f"{r} rank(s)": {k: round(v, 2) for k, v in times[r].items()} for r in (1, 2)},
        "rollout_ratio_1_over_2": round(times[1]["time/rollout"] / times[2]["time/rollout"], 2),
        "update_ratio_1_over_2": round(times[1]["time/update"] / times[2]["time/update"], 2),
        "command_seconds": {f"{r} rank(s)": round(w, 1) for r, w in walls.items()},
        "same_rollouts": same_rollouts,
        "final_weights_max_difference": difference,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
