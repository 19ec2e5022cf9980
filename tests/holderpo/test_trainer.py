"""`holderpo train`: end to end, exact resume after Ctrl-C, and bad input stopping early."""

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from holderpo.checkpoint import CheckpointError, load_trainer_state
from holderpo.config import SHIPPED_CONFIGS, TrainConfig, load_config, shipped_configs
from holderpo.trainer import Trainer, TrainerState, iteration_games, progress_line
from tests.conftest import FIXTURE_GAMES, TEST_RUN_OPTIONS, run_flags

REPO = Path(__file__).parent.parent.parent
TRAIN = str(FIXTURE_GAMES / "train")
HELDOUT = str(FIXTURE_GAMES / "valid_seen")


def _args(model_dir, runs, name, **extra):
    options = TEST_RUN_OPTIONS | {
        "train_games": TRAIN,
        "model": model_dir,
        "group_size": 2,
        "games_per_iteration": 2,
        "max_steps": 3,
        "num_envs": 4,
        "num_workers": 1,
        "minibatch_size": 4,
        "micro_batch_size": 2,
        "runs_dir": str(runs),
        "name": name,
        "lr": 3e-3,
        "skip_zero_signal": "false",
        "estimator": "drgrpo",
        "iterations": 3,
        "checkpoint_every": 1,
        "finetune": "full",
        "kl_coef": 0.05,
    }
    return run_flags(options | {key.replace("-", "_"): value for key, value in extra.items()})


def _train(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "holderpo.cli", "train", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def _final_weights(run: Path) -> dict:
    return load_trainer_state(run / "final")["weights"]


def test_train_writes_run_folder_and_eval_loads_the_checkpoint(tiny_model_dir, tmp_path):
    result = _train(
        *_args(
            tiny_model_dir,
            tmp_path,
            "e2e",
            **{"heldout-games": HELDOUT, "iterations": 2, "finetune": "lora", "sft-epochs": 1},
        )
    )
    assert result.returncode == 0, result.stdout + result.stderr
    run = tmp_path / "e2e"
    assert "run: e2e" in result.stdout.splitlines()[0] and "run: e2e done" in result.stdout
    for name in (
        "config.yaml",
        "run_info.json",
        "metrics.jsonl",
        "report.json",
        "curves.png",
        "transcripts/train.jsonl",
        "transcripts/eval.jsonl",
        "final/model/adapter_config.json",
    ):
        assert (run / name).exists(), name
    report = json.loads((run / "report.json").read_text())
    assert {"heldout_success_before", "heldout_success_after", "wall_seconds", "final_metrics", "config"} <= set(report)
    assert report["heldout_success_before"] is not None and report["rl_gain"]["n"] == len(
        report["heldout_after"]["won"]
    )
    assert report["sft"]["sft_samples"] > 0 and len(report["sft"]["sft_losses"]) == 1  # the warm start's record
    assert json.loads((run / "final" / "holderpo_checkpoint.json").read_text())["iteration"] == 2
    assert load_trainer_state(run / "checkpoints" / "iter_0000")["state"]["heldout_before"] is not None
    info = json.loads((run / "run_info.json").read_text())
    assert set(info["versions"]) >= {"alfworld", "textworld", "torch", "transformers"}
    assert len(info["train_games"]["sha256"]) == 64
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["schedule/p"] for m in metrics] == [1.0, -1.0]
    assert all(m["update/steps"] > 0 and "loss/kl" in m for m in metrics)
    # what p could change on each iteration's batches: rho_p ordered in p, T and log T measured
    for m in metrics:
        rhos = [m[f"exponent/rho_p={p}"] for p in (-2, -1, 0, 1, 2)]
        assert all(high >= low - 1e-6 for low, high in zip(rhos, rhos[1:])) and m["exponent/spread"] >= 0
        assert m["exponent/tokens"] >= 1 and m["exponent/log_tokens"] >= 0
    evaluated = subprocess.run(
        [
            sys.executable,
            "-m",
            "holderpo.cli",
            "eval",
            "--games",
            HELDOUT,
            "--policy",
            str(run / "final"),
            "--max-steps",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    assert "settings from the checkpoint: context=step history=2 " in evaluated.stdout
    assert "; from flags: max_steps=2" in evaluated.stdout


def test_eval_of_the_final_checkpoint_replays_the_runs_last_evaluation(tiny_model_dir, tmp_path):
    """A checkpoint carries the run's prompt, decoding and step limit: `holderpo eval` of the final
    checkpoint on the run's held-out games and seed plays the run's last evaluation again, episode
    by episode, though none of these settings is eval's own fallback."""
    settings = {"history": 1, "max_steps": 6, "max_new_tokens": 40, "eval_temperature": 0.7}
    result = _train(
        *_args(
            tiny_model_dir,
            tmp_path,
            "replayed",
            iterations=1,
            finetune="top",
            top_layers=1,
            seed=3,
            heldout_games=TRAIN,
            heldout_episodes=3,
            **settings,
        )
    )
    assert result.returncode == 0, result.stdout + result.stderr
    run = tmp_path / "replayed"
    report = json.loads((run / "report.json").read_text())
    evaluated = subprocess.run(
        [
            sys.executable,
            "-m",
            "holderpo.cli",
            "eval",
            "--policy",
            str(run / "final"),
            "--games",
            TRAIN,
            "--seed",
            "3",
            "--max-episodes",
            "3",
            "--workers",
            "1",
            "--out",
            str(tmp_path / "eval"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    assert (
        "settings from the checkpoint: context=step history=1 output_format=action decoding=constrained "
        "max_new_tokens=40 temperature=0.7 max_steps=6\n"
    ) in evaluated.stdout
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["success_rate"] == report["heldout_success_after"]
    won = {e["episode_id"]: int(e["outcome"] == "won") for e in results["episode_results"]}
    assert won == report["heldout_after"]["won"] and len(won) == 3

    def actions(lines):
        return {e["episode_id"]: [t["action"] for t in e["turns"]] for e in map(json.loads, lines)}

    run_last = actions((run / "transcripts" / "eval.jsonl").read_text().splitlines()[-3:])
    assert actions((tmp_path / "eval" / "transcripts.jsonl").read_text().splitlines()) == run_last


def test_updates_change_the_trained_parameters(tiny_model_dir, tmp_path):
    result = _train(*_args(tiny_model_dir, tmp_path, "changes", iterations=1, finetune="top", **{"top-layers": 1}))
    assert result.returncode == 0, result.stdout + result.stderr
    trained = _final_weights(tmp_path / "changes")
    initial = load_file(Path(tiny_model_dir) / "model.safetensors")
    assert set(trained) == {n for n in initial if n.startswith("model.layers.1.")} | {"model.norm.weight"}
    changed = [n for n, w in trained.items() if not torch.equal(w, initial[n])]
    assert len(changed) == len(trained), f"unchanged: {set(trained) - set(changed)}"


def _interrupted_at_first_iteration(args: list[str]) -> list[str]:
    """`holderpo train` with Ctrl-C once its first iteration is logged: it saves at the next
    iteration boundary and exits 0. Returns its output lines."""
    command = [sys.executable, "-m", "holderpo.cli", "train", *args]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("iteration 1/"):
            process.send_signal(signal.SIGINT)
    assert process.wait(timeout=300) == 0, "".join(lines)
    return lines


def test_interrupted_run_resumed_equals_uninterrupted(tiny_model_dir, tmp_path):
    whole = _train(*_args(tiny_model_dir, tmp_path, "whole"))
    assert whole.returncode == 0, whole.stdout + whole.stderr
    lines = _interrupted_at_first_iteration(_args(tiny_model_dir, tmp_path, "cut"))
    assert any("holderpo train --resume" in line for line in lines)
    assert not (tmp_path / "cut" / "final").exists()
    resumed = _train("--resume", str(tmp_path / "cut"))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resumed from" in resumed.stdout
    a, b = _final_weights(tmp_path / "whole"), _final_weights(tmp_path / "cut")
    assert all(torch.equal(a[name], b[name]) for name in a)
    cut_metrics = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    whole_metrics = (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()

    def strip(rows):
        return [{k: v for k, v in json.loads(r).items() if not k.startswith("time/")} for r in rows]

    assert strip(cut_metrics) == strip(whole_metrics)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--group-size", "-2"], "--group-size: expected a positive integer, got -2"),
        (["--preset", "dpo"], "invalid choice: 'dpo'"),
        (["--iterations", "0"], "--iterations: expected a positive integer, got 0"),
        (["--train-games", "EMPTY"], "no playable games"),
        (["--model", "/nowhere/model"], "model path /nowhere/model does not exist"),
        (["--minibatch-size", "5"], "multiple of --micro-batch-size"),
    ],
)
def test_bad_config_stops_before_any_work(tiny_model_dir, tmp_path, flags, message):
    flags = [str(tmp_path / "empty") if f == "EMPTY" else f for f in flags]
    (tmp_path / "empty").mkdir()
    result = _train(*_args(tiny_model_dir, tmp_path, "bad"), *flags, timeout=120)
    assert result.returncode == 2
    assert message in result.stdout + result.stderr
    assert not (tmp_path / "bad" / "metrics.jsonl").exists()


def test_unknown_yaml_option_is_named(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("train_games: x\ngroup_sise: 4\n")
    with pytest.raises(ValueError, match="unknown option\\(s\\) \\['group_sise'\\]"):
        load_config(config)


@pytest.mark.parametrize("name", shipped_configs())
def test_shipped_configs_load_by_name_or_path(name):
    assert load_config(name) == load_config(SHIPPED_CONFIGS / f"{name}.yaml") == load_config(f"{name}.yaml")


def test_nan_losses_skip_then_save_and_stop(tiny_model_dir, tmp_path):
    # One iteration, 3 minibatches x 2 epochs: the first step blows the weights up, the next
    # losses are not finite.
    result = _train(
        *_args(
            tiny_model_dir, tmp_path, "nan", lr=1e20, iterations=1, epochs=2, **{"max-bad-steps": 2, "max-grad-norm": 0}
        )
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "skipped an update: the loss was NaN or infinite" in result.stdout
    assert "saved a checkpoint" in result.stdout
    assert list((tmp_path / "nan" / "checkpoints").glob("iter_*"))


def test_full_disk_while_checkpointing_keeps_previous(tiny_model_dir, tmp_path, monkeypatch):
    config = load_config(
        None,
        TEST_RUN_OPTIONS
        | {
            "train_games": TRAIN,
            "model": tiny_model_dir,
            "group_size": 2,
            "games_per_iteration": 2,
            "max_steps": 2,
            "num_envs": 4,
            "num_workers": 1,
            "iterations": 1,
            "finetune": "top",
            "top_layers": 1,
            "kl_coef": 0.0,
        },
    )
    trainer = Trainer(config, tmp_path / "run", echo=lambda _: None)
    target = tmp_path / "run" / "final"
    trainer.save(target)
    before = load_trainer_state(target)["weights"]
    with torch.no_grad():
        next(iter(trainer.model.model.norm.parameters())).add_(1.0)

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match="No space left on device.*previous checkpoint"):
        trainer.save(target)
    monkeypatch.undo()
    after = load_trainer_state(target)["weights"]
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert [p.name for p in target.parent.iterdir() if p.name.startswith(".")] == []


def test_game_draws_are_a_pure_function_of_iteration(fixture_game_files):
    first = [iteration_games(fixture_game_files, i, 3, seed=1) for i in range(5)]
    assert first == [iteration_games(fixture_game_files, i, 3, seed=1) for i in range(5)]
    drawn = [g for it in first[:2] for g in it] + first[2][:1]
    assert sorted(drawn) == fixture_game_files  # one pass over all games before any repeats


def test_progress_line_says_when_an_iteration_made_no_update():
    rollout = {"schedule/p": 0.5, "rollout/success_rate": 0.5, "rollout/return_mean": 5.0}
    updated = progress_line(2, 10, rollout | {"update/samples": 40, "loss/policy": 0.125})
    assert updated.startswith("iteration 3/10  p=+0.500") and "samples=40  loss=+0.1250" in updated
    skipped = progress_line(7, 10, rollout | {"update/samples": 0})
    assert "samples=0  no update (every group won or lost together)" in skipped and "nan" not in skipped


@pytest.mark.slow
def test_config_file_run_with_the_embedded_model_on_generated_games(tmp_path):
    """The issue's end-to-end bar: `holderpo train --config FILE`, the embedded model, tiny games
    generated by the run itself, warm start, one RL iteration, before/after evaluation."""
    games = tmp_path / "games"
    config = tmp_path / "run.yaml"
    config.write_text(f"""
train_games: {games / "train"}
heldout_games: {games / "valid"}
generate_train: 2
generate_heldout: 2
generate_size: tiny
model: embedded
finetune: top
top_layers: 1
decoding: constrained
history: 1
max_steps: 3
games_per_iteration: 2
group_size: 2
num_envs: 4
num_workers: 1
heldout_episodes: 0
sft_epochs: 1
sft_lr: 1.0e-4
skip_zero_signal: false
iterations: 1
minibatch_size: 4
micro_batch_size: 4
lr: 1.0e-5
kl_coef: 0.01
checkpoint_every: 0
runs_dir: {tmp_path / "runs"}
name: embedded
""")
    result = _train("--config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(list((games / "train").rglob("game.tw-pddl"))) == 2
    run = tmp_path / "runs" / "embedded"
    report = json.loads((run / "report.json").read_text())
    for key in ("heldout_success_untrained", "heldout_success_before", "heldout_success_after"):
        assert 0.0 <= report[key] <= 1.0, key
    assert report["heldout_after"]["episodes"] == 2 and report["sft"]["sft_samples"] > 0
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 1 and metrics[0]["update/steps"] > 0 and "loss/kl" in metrics[0]
    assert (run / "final" / "holderpo_checkpoint.json").exists()


def test_the_reasoning_config_trains_on_thoughts_and_its_transcripts_show_them(tiny_model_dir, tmp_path):
    # the shipped reasoning_cpu config, shrunk: a warm start with thoughts, then RL on free thoughts
    args = _args(tiny_model_dir, tmp_path, "think", **{"iterations": 1, "sft-epochs": 1, "finetune": "top"})
    result = _train("--config", "reasoning_cpu", *args, "--top-layers", "1", "--kl-coef", "0")
    assert result.returncode == 0, result.stdout + result.stderr
    run = tmp_path / "think"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (config["output_format"], config["sft_thoughts"], config["loss_tokens"]) == ("react", True, "response")
    episodes = [json.loads(line) for line in (run / "transcripts" / "train.jsonl").read_text().splitlines()]
    turns = [turn for episode in episodes for turn in episode["turns"]]
    assert turns and all(turn["thought"] and turn["status"] == "admissible" for turn in turns)
    (metrics,) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics["exponent/tokens"] > 10  # whole responses, thought and action, are in the loss
    shown = subprocess.run(
        [sys.executable, "-m", "holderpo.cli", "replay", str(run / "transcripts" / "train.jsonl")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert shown.returncode == 0 and shown.stdout.count("thought:") >= len(turns) // 2, shown.stdout[-2000:]


def test_interrupted_game_generation_is_redone_not_reused(tmp_path, monkeypatch):
    from envs.generator import writer
    from holderpo.run_folder import ensure_games

    target = tmp_path / "games" / "train"
    config = TrainConfig(**TEST_RUN_OPTIONS | {"train_games": str(target), "generate_train": 2})
    real_write, written = writer.write_game, []

    def write_then_interrupt(folder, files):
        if written:
            raise KeyboardInterrupt  # Ctrl-C after the first game is on disk
        written.append(folder)
        real_write(folder, files)

    monkeypatch.setattr(writer, "write_game", write_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        ensure_games(config, echo=lambda line: None)
    assert written and not any(target.rglob("game.tw-pddl")), "half a game set must not look like a finished one"
    monkeypatch.setattr(writer, "write_game", real_write)
    ensure_games(config, echo=lambda line: None)
    assert len(list(target.rglob("game.tw-pddl"))) == 2
    assert [p.name for p in target.parent.iterdir()] == ["train"]


def test_games_of_an_earlier_generator_are_kept_and_named(tmp_path):
    from holderpo.run_folder import ensure_games

    target = tmp_path / "games" / "train"
    config = TrainConfig(**TEST_RUN_OPTIONS | {"train_games": str(target), "generate_train": 2})
    lines = []
    ensure_games(config, echo=lines.append)
    assert not any("warning" in line for line in lines)
    first = sorted(target.rglob("traj_data.json"))[0]
    traj = json.loads(first.read_text())
    del traj["generator"]["version"]  # as the generator wrote it before its expert was mended
    first.write_text(json.dumps(traj))
    before = {p: p.read_bytes() for p in target.rglob("*") if p.is_file()}
    lines.clear()
    ensure_games(config, echo=lines.append)
    assert lines == [
        f"warning: 1 games in {target} come from an earlier version of the generator (its expert's pick_two "
        "walkthroughs wander); move the folder away to have them generated again"
    ]
    assert {p: p.read_bytes() for p in target.rglob("*") if p.is_file()} == before  # nothing is replaced


def test_trainer_state_round_trips_and_reads_checkpoints_written_as_plain_dicts():
    state = TrainerState(
        iteration=3,
        wall_seconds=12.5,
        sft_done=True,
        sft_losses=[1.0, 0.5],
        heldout_before={"success_rate": 0.25, "won": {"a/b#0": 1}},
    )
    assert TrainerState.from_dict(state.to_dict()) == state
    older = {"iteration": 2, "heldout_before": None, "bad_steps": 0, "wall_seconds": 4.0, "retired_key": 1}
    assert TrainerState.from_dict(older) == TrainerState(iteration=2, wall_seconds=4.0)
