"""A shared run folder cannot run code on `train --resume`, and a damaged checkpoint (cut short,
emptied, crafted, from another model) is reported and skipped: the run resumes from the newest
intact one and goes on exactly as if nothing had happened."""

import json
import pickle
import shutil

import pytest
import torch

from holderpo.checkpoint import CheckpointError, load_trainer_state
from tests.holderpo.test_trainer import _args, _final_weights, _train

PAYLOAD_MARK = "holderpo-payload-ran"


class _Payload:
    """Unpickling this runs `touch` on a file: what a crafted trainer_state.pt would do."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.fixture(scope="module")
def finished_run(tiny_model_dir, tmp_path_factory):
    """A 3-iteration tiny run with a checkpoint after every iteration."""
    runs = tmp_path_factory.mktemp("runs")
    result = _train(*_args(tiny_model_dir, runs, "whole"))
    assert result.returncode == 0, result.stdout + result.stderr
    return runs / "whole"


def _interrupted_copy(finished_run, tmp_path):
    """The run as Ctrl-C after iteration 2 would have left it: checkpoints 1 and 2, no final."""
    run = tmp_path / "cut"
    shutil.copytree(finished_run, run)
    shutil.rmtree(run / "final")
    (run / "report.json").unlink()
    lines = (run / "metrics.jsonl").read_text().splitlines()[:2]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    shutil.rmtree(run / "checkpoints" / "iter_0003")
    return run


def _damage_crafted(state_file, tmp_path):
    state_file.write_bytes(pickle.dumps({"weights": _Payload(str(tmp_path / PAYLOAD_MARK))}))


def _damage_truncated(state_file, tmp_path):
    state_file.write_bytes(state_file.read_bytes()[: state_file.stat().st_size // 2])


def _damage_empty(state_file, tmp_path):
    state_file.write_bytes(b"")


def _damage_other_model(state_file, tmp_path):
    saved = torch.load(state_file, weights_only=True)
    saved["weights"] = {"model.other.weight": torch.zeros(3)}
    torch.save(saved, state_file)


@pytest.mark.parametrize("damage", [_damage_crafted, _damage_truncated, _damage_empty, _damage_other_model])
def test_resume_skips_a_damaged_checkpoint_and_continues_exactly(finished_run, tmp_path, damage):
    run = _interrupted_copy(finished_run, tmp_path)
    damaged = run / "checkpoints" / "iter_0002"
    damage(damaged / "trainer_state.pt", tmp_path)
    resumed = _train("--resume", str(run))
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output
    assert not (tmp_path / PAYLOAD_MARK).exists(), "the crafted pickle ran"
    assert f"skipped checkpoint {damaged}" in resumed.stdout
    assert f"resumed from {run / 'checkpoints' / 'iter_0001'} at iteration 1" in resumed.stdout
    assert "Traceback" not in output
    a, b = _final_weights(finished_run), _final_weights(run)
    assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def test_a_crafted_trainer_state_is_refused_without_running_it(tmp_path):
    (tmp_path / "trainer_state.pt").write_bytes(pickle.dumps(_Payload(str(tmp_path / PAYLOAD_MARK))))
    with pytest.raises(CheckpointError, match="damaged or not a holderpo trainer state"):
        load_trainer_state(tmp_path)
    assert not (tmp_path / PAYLOAD_MARK).exists()


def test_resume_with_every_checkpoint_damaged_says_so_and_exits_2(finished_run, tmp_path):
    run = _interrupted_copy(finished_run, tmp_path)
    for checkpoint in (run / "checkpoints").iterdir():
        (checkpoint / "trainer_state.pt").write_bytes(b"")
    (run / "checkpoints" / "iter_0001" / "holderpo_checkpoint.json").write_text("{not json")
    resumed = _train("--resume", str(run))
    assert resumed.returncode == 2, resumed.stdout + resumed.stderr
    assert "every checkpoint in it is damaged" in resumed.stdout or "no checkpoint found" in resumed.stdout
    assert "Traceback" not in resumed.stdout + resumed.stderr
    assert json.loads((run / "checkpoints" / "iter_0002" / "holderpo_checkpoint.json").read_text())["iteration"] == 2
