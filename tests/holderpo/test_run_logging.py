"""RunLogger and its trackers: metrics.jsonl always, TensorBoard or Weights & Biases beside it.

wandb runs for real, offline only: the tests read back the run wandb writes on disk (its
`.wandb` transaction log) instead of trusting that a folder appeared. Nothing may reach a server:
offline mode sends nothing, and every address wandb could use points at a closed local port.
"""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from holderpo.run_logging import WANDB_RUN_ID_FILE, RunLogger

REPO = Path(__file__).parent.parent.parent
INSTALL_HINT = 'pip install -e ".[wandb]"'
NOWHERE = "http://127.0.0.1:9"  # the discard port, closed: a request would fail here, not go out


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """wandb in offline mode, with its settings, cache and any address kept inside tmp_path."""
    pytest.importorskip("wandb")
    home = tmp_path / "wandb-home"
    for name, value in {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DISABLE_GIT": "true",
        "WANDB_DISABLE_CODE": "true",
        "WANDB_DIR": str(home),
        "WANDB_CONFIG_DIR": str(home / "config"),
        "WANDB_CACHE_DIR": str(home / "cache"),
        "WANDB_DATA_DIR": str(home / "data"),
        "WANDB_BASE_URL": NOWHERE,
        "HTTP_PROXY": NOWHERE,
        "HTTPS_PROXY": NOWHERE,
        "WANDB_PROJECT": "holderpo-tests",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("WANDB_API_KEY", "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_NAME", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)


def wandb_records(offline_run: Path) -> list:
    """The records of an offline run's `run-<id>.wandb` file, decoded with wandb's own protobuf
    schema. wandb 0.31 has no Python reader for it (wandb-core, in Go, writes it): the file is a
    LevelDB-style log, a 7-byte header (":W&B", magic 0xBEE1, version) then 32 KiB blocks of
    chunks, each `crc32 (4) | length (2) | type (1)` then data; type 1 is a whole record, 2/3/4
    the first/middle/last piece of one."""
    from wandb.proto import wandb_internal_pb2

    (path,) = offline_run.glob("run-*.wandb")
    data = path.read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic) == (b":W&B", 0xBEE1), f"{path}: not a wandb transaction log (header {data[:7]!r})"
    block, position, pieces, records = 32768, 7, b"", []
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a chunk header is padding
            position += block - position % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[position : position + 7])
        pieces += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pieces)
            records.append(record)
            pieces = b""
    return records


def history(records: list) -> dict[int, dict]:
    """step -> the metrics logged at it (without wandb's own `_step`, `_runtime`, `_timestamp`).
    An item names its metric by `key` or by `nested_key`, the path of keys (wandb-core uses the
    latter: ["loss/policy"])."""
    rows = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            items = {item.key or ".".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            rows[record.history.step.num] = {key: value for key, value in items.items() if not key.startswith("_")}
    return rows


def run_record(records: list):
    (run,) = [record.run for record in records if record.WhichOneof("record_type") == "run"]
    return run


def offline_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


def jsonl(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def log_iterations(run_dir: Path, rows: dict[int, dict], **options) -> None:
    logger = RunLogger(run_dir, **options)
    try:
        for iteration, metrics in rows.items():
            logger.log(iteration, metrics)
    finally:
        logger.close()
    if options.get("tracker") == "wandb":
        # run.finish() returns before wandb-core has written the whole .wandb file (it closes the
        # file a moment later, or at exit): teardown waits for wandb-core to finish writing
        import wandb

        wandb.teardown()


def test_wandb_offline_run_holds_each_iterations_metrics_at_its_step(offline_wandb, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    rows = {
        0: {"rollout/success_rate": 0.25, "loss/policy": -0.5, "update/steps": 3},
        1: {"rollout/success_rate": 0.5, "loss/policy": 0.125, "update/steps": 4},
        2: {"rollout/success_rate": 0.75, "loss/policy": 1.5, "update/steps": 5},
    }
    log_iterations(run_dir, rows, tracker="wandb", config={"preset": "holderpo", "lr": 2e-4}, run_name="wb-test")

    (offline_run,) = offline_runs(run_dir)  # inside the run folder, not in WANDB_DIR
    assert not list((tmp_path / "wandb-home").rglob("offline-run-*"))
    records = wandb_records(offline_run)
    assert history(records) == rows
    run = run_record(records)
    assert (run.project, run.display_name) == ("holderpo-tests", "wb-test")
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert (config["preset"], config["lr"]) == ("holderpo", 2e-4)
    assert (run_dir / WANDB_RUN_ID_FILE).read_text().strip() == run.run_id
    assert offline_run.name.endswith(run.run_id)
    assert [row.pop("iteration") for row in jsonl(run_dir)] == [0, 1, 2]
    for log in offline_run.glob("logs/*.log"):  # a request wandb tried would be logged with its address
        assert "127.0.0.1:9" not in log.read_text(), f"wandb tried to reach a server: see {log}"


def test_resumed_logger_continues_the_same_wandb_run(offline_wandb, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    log_iterations(run_dir, {0: {"loss/policy": 1.0}, 1: {"loss/policy": 2.0}}, tracker="wandb")
    run_id = (run_dir / WANDB_RUN_ID_FILE).read_text().strip()
    log_iterations(run_dir, {2: {"loss/policy": 3.0}}, tracker="wandb")  # what --resume does

    first, second = (wandb_records(path) for path in offline_runs(run_dir))  # one folder per session
    assert run_record(first).run_id == run_record(second).run_id == run_id
    assert (run_dir / WANDB_RUN_ID_FILE).read_text().strip() == run_id
    assert history(first) == {0: {"loss/policy": 1.0}, 1: {"loss/policy": 2.0}}
    assert history(second) == {2: {"loss/policy": 3.0}}
    assert [row["iteration"] for row in jsonl(run_dir)] == [0, 1, 2]  # metrics.jsonl goes on too


def test_non_finite_and_non_numeric_values_reach_metrics_jsonl_only(offline_wandb, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    metrics = {
        "loss/policy": 0.25,
        "loss/kl": math.nan,
        "loss/grad_norm": math.inf,
        "engine/sync_logprob_error": None,
        "rollout/note": "text",
        "update/skipped": False,
    }
    log_iterations(run_dir, {0: metrics}, tracker="wandb")

    (offline_run,) = offline_runs(run_dir)
    assert history(wandb_records(offline_run)) == {0: {"loss/policy": 0.25, "update/skipped": False}}
    (row,) = jsonl(run_dir)
    assert math.isnan(row["loss/kl"]) and row["loss/grad_norm"] == math.inf
    assert row["engine/sync_logprob_error"] is None and row["rollout/note"] == "text"


def test_tensorboard_tracker_writes_event_files(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log_iterations(tmp_path, {0: {"loss/policy": 0.5, "loss/kl": math.nan}, 1: {"loss/policy": 0.25}})

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert events.Tags()["scalars"] == ["loss/policy"]  # NaN is left out
    assert [(s.step, s.value) for s in events.Scalars("loss/policy")] == [(0, 0.5), (1, 0.25)]
    assert not (tmp_path / "wandb").exists() and not (tmp_path / WANDB_RUN_ID_FILE).exists()


def run_without(package: str, code: str, cwd: Path) -> subprocess.CompletedProcess:
    """`code` in a fresh Python in which `package` cannot be imported, as if not installed (a
    None entry in sys.modules makes `import package` raise ImportError)."""
    shim = f"import sys; sys.modules[{package!r}] = None\n"
    return subprocess.run(
        [sys.executable, "-c", shim + code], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_without_tensorboard_metrics_jsonl_is_still_written(tmp_path):
    code = "from holderpo.run_logging import RunLogger\nRunLogger('.').log(0, {'loss/policy': 0.5})\n"
    result = run_without("tensorboard", f"import os; os.chdir({str(tmp_path)!r})\n{code}", REPO)
    assert result.returncode == 0, result.stderr
    assert jsonl(tmp_path) == [{"iteration": 0, "loss/policy": 0.5}]
    assert not (tmp_path / "tensorboard").exists()


def test_wandb_not_installed_stops_train_before_any_work_and_names_the_install(tmp_path):
    runs = tmp_path / "runs"
    code = (
        "from holderpo.cli import main\n"
        f"sys.exit(main(['train', '--tracker', 'wandb', '--runs-dir', {str(runs)!r}, '--name', 'r']))\n"
    )
    result = run_without("wandb", code, REPO)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"error: --tracker wandb: the wandb package is not installed; {INSTALL_HINT}" in result.stdout
    assert not runs.exists()  # refused while validating the config: no run folder, no model loaded


def test_wandb_not_installed_refuses_a_run_logger_and_leaves_no_files(tmp_path):
    code = (
        "from holderpo.run_logging import RunLogger, TrackerUnavailable\n"
        "try:\n"
        "    RunLogger('.', tracker='wandb')\n"
        "except TrackerUnavailable as error:\n"
        "    print(error)\n"
    )
    result = run_without("wandb", f"import os; os.chdir({str(tmp_path)!r})\n{code}", REPO)
    assert result.returncode == 0, result.stderr
    assert INSTALL_HINT in result.stdout
    assert list(tmp_path.iterdir()) == []
