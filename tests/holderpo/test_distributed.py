"""Training over several processes, for real: torchrun starts the ranks, gloo connects them on the
CPU, each in a network namespace of its own that holds only the loopback interface (torchrun's
rendezvous store listens on every interface; nothing here may listen beyond 127.0.0.1)."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from holderpo.checkpoint import load_trainer_state
from holderpo.distributed import sample_layout
from tests.conftest import FIXTURE_GAMES, TEST_RUN_OPTIONS, run_flags

REPO = Path(__file__).parent.parent.parent
RANK_SCRIPT = Path(__file__).parent / "ranks_update.py"


def _namespaces_work() -> bool:
    try:
        probe = subprocess.run(["unshare", "--net", "ip", "link", "set", "lo", "up"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(
    not _namespaces_work(), reason="needs `unshare --net` and `ip` (root, or user namespaces) to keep ranks on loopback"
)


def loopback_only(command: list[str]) -> list[str]:
    """`command` run in a new network namespace whose only interface is loopback, brought up."""
    return ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *command]


def torchrun(*arguments: str) -> list[str]:
    return loopback_only([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", *arguments])


def _run(command: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=_env())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result


def _env() -> dict:
    return os.environ | {"PYTHONPATH": str(REPO)}


def test_sample_layout_puts_every_rank_sample_where_one_process_has_it():
    # one process: groups 0..3 in order, each group's samples in order
    one = [(0, 1.0, 3), (0, 0.0, 0), (1, 1.0, 2), (2, 0.5, 5), (2, 1.0, 1), (2, 1.0, 4), (3, 1.0, 2)]
    rank0 = [one[i] for i in (0, 1, 3, 4, 5)]  # groups 0 and 2
    rank1 = [one[i] for i in (2, 6)]  # groups 1 and 3
    layouts = [sample_layout([rank0, rank1], rank) for rank in (0, 1)]
    assert all(layout.measures == tuple(w for _, w, _ in one) for layout in layouts)
    assert all(layout.tokens == tuple(t for *_, t in one) for layout in layouts)
    assert layouts[0].local == {0: 0, 1: 1, 3: 2, 4: 3, 5: 4} and layouts[1].local == {2: 0, 6: 1}
    assert layouts[0].held([6, 3, 0, 2]) == [2, 0] and layouts[1].held([6, 3, 0, 2]) == [1, 0]
    assert layouts[0].measure([1, 3, 6]) == 1.5 and layouts[1].token_count([1, 3, 6]) == 7


# (fine-tuning, how the update scores, how the weights are shared over ranks). FSDP2 scores from
# the model's logits (its sharded output layer exists whole only inside the forward): the
# one-process run it is compared with over several steps scores the same way.
CASES = [("top", "default", "Replicated"), ("lora", "default", "Replicated"), ("full", "logits", "FullySharded")]


@pytest.fixture(scope="module")
def updates(tiny_model_dir, tmp_path_factory) -> tuple[dict, dict]:
    """Every case's updates in one process and over 2 ranks (one launch each), and the full
    fine-tuning step of the default one-process scoring path."""
    folder = tmp_path_factory.mktemp("updates")
    cases = [f"{finetune}:{scoring}" for finetune, scoring, _ in CASES]
    one = [str(RANK_SCRIPT), tiny_model_dir, str(folder / "one.pt"), *cases, "full:default"]
    _run([sys.executable, *one])
    _run(torchrun(str(RANK_SCRIPT), tiny_model_dir, str(folder / "two.pt"), *cases))
    return torch.load(folder / "one.pt"), torch.load(folder / "two.pt")


def _max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[name] - b[name]).abs().max().item() for name in a)


def _assert_gradients_equal(a: dict, b: dict) -> None:
    """Gradients summed in another order over other micro-batches: equal to float32 rounding,
    1e-5 of each element (the output layer's sums over 49k logits) and 1e-6 absolute."""
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("finetune, scoring, sharing", CASES)
def test_two_rank_update_equals_one_process(updates, finetune, scoring, sharing):
    """Each rank trains on its own groups' samples of every minibatch (uneven: 7 and 5 samples,
    some minibatches none on one rank). One step on the whole batch applies the one-process
    gradient and leaves the one-process weights to 1e-6 in float32, and so do 6 more minibatch
    steps; the minibatch losses and gradient norms agree too."""
    one, two = (result[f"{finetune}:{scoring}"] for result in updates)
    assert (one["kind"], two["kind"]) == ("Replicated", sharing)
    assert _max_difference(one["initial"], two["initial"]) == 0
    assert _max_difference(one["initial"], two["weights"]) > 1e-4  # the updates moved the weights
    _assert_gradients_equal(one["grads"], two["grads"])
    for stage in ("stepped", "weights"):
        assert _max_difference(one[stage], two[stage]) < 1e-6, stage
    for ours, theirs in zip(one["metrics"], two["metrics"]):
        assert ours["update/steps"] == theirs["update/steps"]
        assert abs(ours["loss/policy"] - theirs["loss/policy"]) < 1e-6
        # the norm sums 6.4 million squares in float32, in another order over the shards
        assert theirs["loss/grad_norm"] == pytest.approx(ours["loss/grad_norm"], rel=1e-5)
    if finetune == "full":  # the step's gradient is also the one of the default one-process path
        _assert_gradients_equal(updates[0]["full:default"]["grads"], two["grads"])


def _run_args(model_dir: str, runs: Path, name: str, **extra) -> list[str]:
    """A short run whose updates always move the weights: with every group all-lost on the tiny
    model, the entropy bonus and the KL term still carry a gradient through every sample."""
    options = TEST_RUN_OPTIONS | {
        "train_games": str(FIXTURE_GAMES / "train"),
        "heldout_games": str(FIXTURE_GAMES / "valid_seen"),
        "heldout_episodes": 4,
        "model": model_dir,
        "group_size": 2,
        "games_per_iteration": 2,
        "max_steps": 4,
        "num_envs": 4,
        "num_workers": 1,
        "minibatch_size": 4,
        "micro_batch_size": 2,
        "lr": 3e-3,
        "iterations": 3,
        "checkpoint_every": 1,
        "finetune": "top",
        "top_layers": 2,
        "kl_coef": 0.05,
        "entropy_coef": 0.01,
        "skip_zero_signal": "false",
        "runs_dir": str(runs),
        "name": name,
    }
    return ["-m", "holderpo.cli", "train", *run_flags(options | extra)]


def _metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{key: value for key, value in row.items() if not key.startswith("time/")} for row in rows]


def _assert_same_training(a: Path, b: Path) -> None:
    """Two runs that played the same episodes and took the same steps (to float32 rounding)."""
    ours, theirs = _metrics(a), _metrics(b)
    assert [row["iteration"] for row in ours] == [row["iteration"] for row in theirs]
    for row, other in zip(ours, theirs):
        assert {k: v for k, v in row.items() if k.startswith("rollout/")} == {
            k: v for k, v in other.items() if k.startswith("rollout/")
        }
        assert row["loss/policy"] == pytest.approx(other["loss/policy"], abs=1e-6)
    weights_a, weights_b = (load_trainer_state(run / "final")["weights"] for run in (a, b))
    assert _max_difference(weights_a, weights_b) < 1e-6


def _episodes(transcript: Path) -> list[tuple]:
    return sorted((e["episode_id"], tuple(t["action"] for t in e["turns"])) for e in map(json.loads, transcript.open()))


def _rank_pid(rank: int, marker: str) -> int | None:
    """The process of `rank` among torchrun's workers whose command line holds `marker`."""
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if marker.encode() in command and f"RANK={rank}".encode() in environ and b"holderpo.cli" in command:
            return int(entry.name)
    return None


def test_two_rank_run_equals_one_process_and_a_ctrl_c_on_one_rank_resumes_on_one(tiny_model_dir, tmp_path):
    """Ranks play whole groups and shard the held-out episodes; rank 0 writes the run folder.
    The run equals one process's; Ctrl-C on rank 1 alone stops both ranks at the next iteration
    boundary with a checkpoint, and one process resumes it to the same final weights."""
    _run([sys.executable, *_run_args(tiny_model_dir, tmp_path, "one")])
    two = _run(torchrun(*_run_args(tiny_model_dir, tmp_path, "two")))
    assert two.stdout.count("iteration 3/3") == 1  # rank 0 speaks for the run
    _assert_same_training(tmp_path / "one", tmp_path / "two")
    for transcript in ("train.jsonl", "eval.jsonl"):
        one_episodes = _episodes(tmp_path / "one" / "transcripts" / transcript)
        assert one_episodes == _episodes(tmp_path / "two" / "transcripts" / transcript)
    reports = [json.loads((tmp_path / run / "report.json").read_text()) for run in ("one", "two")]
    for key in ("heldout_before", "heldout_after", "rl_gain"):
        assert reports[0][key] == reports[1][key], key

    process = subprocess.Popen(
        torchrun(*_run_args(tiny_model_dir, tmp_path, "cut")),
        cwd=REPO,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("iteration 1/"):
            os.kill(_rank_pid(1, str(tmp_path / "cut")) or _rank_pid(1, "cut"), signal.SIGINT)
    assert process.wait(timeout=300) == 0, "".join(lines)
    assert any("holderpo train --resume" in line for line in lines)
    assert not (tmp_path / "cut" / "final").exists()
    resumed = _run([sys.executable, "-m", "holderpo.cli", "train", "--resume", str(tmp_path / "cut")])
    assert "resumed from" in resumed.stdout
    _assert_same_training(tmp_path / "two", tmp_path / "cut")


def test_fsdp2_run_saves_whole_tensors_that_one_process_resumes(tiny_model_dir, tmp_path):
    """Full fine-tuning over 2 ranks (FSDP2, with the KL reference and the entropy bonus): the
    checkpoints hold the whole model, and one process resumes from the first one and plays and
    trains the same second iteration."""
    two = _run(torchrun(*_run_args(tiny_model_dir, tmp_path, "full", finetune="full", iterations=2)))
    assert "iteration 2/2" in two.stdout
    saved = load_trainer_state(tmp_path / "full" / "checkpoints" / "iter_0001")
    model = load_file(Path(tiny_model_dir) / "model.safetensors")
    assert {name: w.shape for name, w in saved["weights"].items()} == {name: w.shape for name, w in model.items()}
    assert saved["reference"].keys() == saved["weights"].keys()

    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "full", cut)
    for later in (cut / "final", cut / "checkpoints" / "iter_0002", cut / "report.json"):
        shutil.rmtree(later) if later.is_dir() else later.unlink()
    metrics = (cut / "metrics.jsonl").read_text().splitlines()
    (cut / "metrics.jsonl").write_text(metrics[0] + "\n")  # as a run stopped after iteration 1 leaves it
    _run([sys.executable, "-m", "holderpo.cli", "train", "--resume", str(cut)])
    ours, theirs = _metrics(tmp_path / "full"), _metrics(cut)
    assert [row["iteration"] for row in theirs] == [0, 1]
    assert {k: v for k, v in ours[1].items() if k.startswith("rollout/")} == {
        k: v for k, v in theirs[1].items() if k.startswith("rollout/")
    }
    weights = [load_trainer_state(run / "final")["weights"] for run in (tmp_path / "full", cut)]
    assert _max_difference(*weights) < 1e-6  # the second update too, from the same checkpoint
