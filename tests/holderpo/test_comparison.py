"""`holderpo compare`: the table's arithmetic, bad input, and a whole small comparison."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from holderpo.comparison import (
    Method,
    MethodRow,
    Transfer,
    markdown_table,
    mean_curve,
    method_presets,
    method_rows,
    plot_success_by_exponent,
    training_seconds,
    write_summary,
)
from holderpo.config import TrainConfig
from tests.conftest import FIXTURE_GAMES, TEST_RUN_OPTIONS, run_flags

REPO = Path(__file__).parent.parent.parent


def _report(before, after, seed=0, won=None):
    return {
        "heldout_success_before": before,
        "heldout_success_after": after,
        "config": {"seed": seed},
        "heldout_after": {"won": won or {}},
    }


def test_rows_average_seeds_with_a_t_interval():
    reports = {
        "holderpo": [_report(0.2, 0.4, 0, {"a": 1}), _report(0.2, 0.5, 1), _report(0.3, 0.6, 2)],
        "grpo": [_report(0.2, 0.3, 0, {"a": 0})],
    }
    metrics = {
        "holderpo": [[{"time/rollout": 60.0, "time/update": 60.0, "time/eval": 999.0}]] * 3,
        "grpo": [[{"time/rollout": 30.0, "time/update": 0.0}]],
    }
    holder, grpo = method_rows(reports, metrics)
    assert holder.success_after == pytest.approx(0.5) and holder.seeds == 3
    assert holder.low == pytest.approx(0.5 - 4.3027 * 0.1 / 3**0.5, abs=1e-4)  # t with 2 degrees of freedom
    assert holder.gain == pytest.approx((0.2 + 0.3 + 0.3) / 3)
    assert holder.train_minutes == pytest.approx(2.0)  # evaluation time is not training time
    assert grpo.low is None and "n/a (1 seed)" in markdown_table([holder, grpo])
    assert "| holderpo | 3 | 50.0% | 25.2 to 74.8 | +26.7 | 2.0 | - |" in markdown_table([holder, grpo])


def test_methods_pair_with_the_first_episode_by_episode_on_shared_seeds():
    # seed 0 and seed 1 play different episodes under the same names; grpo has run seed 0 only
    holder = [_report(0.2, 0.5, 0, {"g1#0": 1, "g2#0": 1}), _report(0.2, 0.5, 1, {"g1#0": 0, "g2#0": 1})]
    grpo = [_report(0.2, 0.0, 0, {"g1#0": 0, "g2#0": 1})]
    metrics = {"holderpo": [[], []], "grpo": [[]]}
    first, second = method_rows({"holderpo": holder, "grpo": grpo}, metrics)
    assert first.difference is None
    assert second.difference["n"] == 2 and second.difference["mean"] == pytest.approx(-0.5)  # seed 0 only
    assert "| -50.0 (-148.0 to +48.0) on 2 |" in markdown_table([first, second])
    apart = method_rows({"holderpo": holder[1:], "grpo": grpo}, {"holderpo": [[]], "grpo": [[]]})
    assert apart[1].difference is None  # no seed in common yet: nothing to pair
    alone = method_rows({"grpo": grpo}, {"grpo": [[]]})
    assert alone[0].difference is None and "minus grpo" in markdown_table(alone)


def test_mean_curve_handles_runs_of_different_length():
    runs = [[{"x": 1.0}, {"x": 3.0}], [{"x": 3.0}]]
    assert mean_curve(runs, "x") == [2.0, 3.0]
    assert training_seconds([{"time/rollout": 1.5}, {"time/update": 2.0}]) == 3.5


def test_a_method_may_fix_or_anneal_its_exponent():
    assert Method.parse("grpo") == Method("grpo", "grpo")
    assert Method.parse("holderpo@-1").overrides() == {"p_start": -1.0, "p_end": -1.0, "p_schedule": "constant"}
    assert Method.parse("holderpo@2..-2").overrides() == {"p_start": 2.0, "p_end": -2.0}  # the config's schedule
    presets = method_presets(TrainConfig(iterations=5), ["holderpo@0", "holderpo@2..-2", "gmpo"])
    assert [presets[m].schedule(i, 5) for m in ("holderpo@0", "holderpo@2..-2") for i in (0, 4)] == [0, 0, 2, -2]
    assert presets["gmpo"].schedule(4, 5) == 0.0  # a preset that does not anneal keeps its own p
    for bad in ("holderpo@", "holderpo@nan", "holderpo@1..2..3", "holderpo@inf"):
        with pytest.raises(ValueError, match="expected holderpo@P"):
            Method.parse(bad)


def test_transfer_settings_are_checked_by_name():
    with pytest.raises(ValueError, match="--transfer-episodes: expected >= 0"):
        Transfer("games/small/valid", episodes=-1)
    with pytest.raises(ValueError, match="--transfer-max-steps: expected >= 1, got 0"):
        Transfer("games/small/valid", max_steps=0)


def test_success_by_exponent_is_drawn_for_constant_exponents_only(tmp_path):
    row = MethodRow("holderpo@1", 3, 0.3, 0.2, 0.4, 0.1, 5.0)
    rows = [row, replace(row, method="holderpo@-1", success_after=0.25), replace(row, method="grpo", low=None)]
    assert plot_success_by_exponent(rows, tmp_path / "p.png") == tmp_path / "p.png"
    assert (tmp_path / "p.png").stat().st_size > 0
    assert plot_success_by_exponent(rows[1:], tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


def _compare(*args, timeout=900):
    return subprocess.run(
        [sys.executable, "-m", "holderpo.cli", "compare", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--losses", "holderpo,dpo"], "--losses: expected presets among"),
        (["--losses", "gspo@1"], "--losses gspo@1: only presets that anneal p take @P"),
        (
            ["--losses", "holderpo@1..x"],
            "--losses holderpo@1..x: expected holderpo@P (a constant p) or holderpo@P0..P1",
        ),
        (["--seeds", "0"], "--seeds: expected at least 1"),
        (["--seed", "3"], "--seed: compare sets these for every run"),
        (["--heldout-games", ""], "--heldout-games: compare scores every method on held-out games"),
    ],
)
def test_bad_options_stop_before_any_run(tmp_path, flags, message):
    result = _compare(*flags, "--out", str(tmp_path / "cmp"))
    assert result.returncode == 2 and message in result.stdout, result.stdout + result.stderr
    assert not (tmp_path / "cmp").exists()


def test_small_comparison_writes_table_and_curves_then_reuses_runs(tiny_model_dir, tmp_path):
    out = tmp_path / "cmp"
    options = [
        "--losses",
        "holderpo@2..-2,grpo",
        "--seeds",
        "2",
        "--out",
        str(out),
        "--transfer-games",
        str(FIXTURE_GAMES / "train"),
        "--transfer-episodes",
        "2",
        "--transfer-max-steps",
        "4",
        *run_flags(
            TEST_RUN_OPTIONS
            | {
                "model": tiny_model_dir,
                "train_games": FIXTURE_GAMES / "train",
                "heldout_games": FIXTURE_GAMES / "valid_seen",
                "group_size": 2,
                "games_per_iteration": 2,
                "max_steps": 3,
                "num_envs": 4,
                "num_workers": 1,
                "iterations": 1,
                "minibatch_size": 4,
                "micro_batch_size": 2,
                "skip_zero_signal": "false",
                "finetune": "top",
                "top_layers": 1,
                "lr": 3e-3,
                "sft_epochs": 1,
            }
        ),
    ]
    result = _compare(*options)
    assert result.returncode == 0, result.stdout + result.stderr
    # behaviour cloning and the evaluations before RL: once per seed, in the seed's first run
    assert result.stdout.count("behaviour cloning epoch") == 2
    assert result.stdout.count("held-out success before RL") == 2
    for seed in (0, 1):
        assert f"warm start taken from {out / f'holderpo@2..-2-s{seed}' / 'checkpoints' / 'iter_0000'}" in result.stdout
        first, other = (
            json.loads((out / f"{m}-s{seed}" / "report.json").read_text()) for m in ("holderpo@2..-2", "grpo")
        )
        assert other["heldout_before"] == first["heldout_before"] and other["sft"] == first["sft"]
    for name in ("holderpo@2..-2-s0", "holderpo@2..-2-s1", "grpo-s0", "grpo-s1"):
        config = yaml.safe_load((out / name / "config.yaml").read_text())
        assert (config["preset"], config["seed"]) == (name.split("@")[0].split("-")[0], int(name[-1]))
        assert (config["p_start"], config["p_end"]) == ((2.0, -2.0) if "@" in name else (1.0, -1.0))
        assert (out / name / "report.json").exists()
    rows = json.loads((out / "comparison.json").read_text())["rows"]
    assert [(r["method"], r["seeds"]) for r in rows] == [("holderpo@2..-2", 2), ("grpo", 2)]
    assert all(0.0 <= r["success_after"] <= 1.0 and r["low"] <= r["success_after"] <= r["high"] for r in rows)
    assert "| holderpo@2..-2 | 2 |" in (out / "comparison.md").read_text() and (out / "curves.png").stat().st_size > 0
    assert "Partial" not in (out / "comparison.md").read_text()
    assert json.loads((out / "comparison.json").read_text())["planned_runs"] == 4
    # transfer: each seed's starting policy once, each run's final policy, on other games
    assert sorted(p.name for p in out.glob("transfer-before-s*")) == ["transfer-before-s0", "transfer-before-s1"]
    assert result.stdout.count("transfer: ") == 6
    for name in ("holderpo@2..-2-s0", "grpo-s1"):
        results = json.loads((out / name / "transfer" / "results.json").read_text())
        assert results["episodes"] == 2 and results["max_steps"] == 4 and results["policy"] == str(out / name / "final")
    transfer_rows = json.loads((out / "comparison.json").read_text())["transfer_rows"]
    assert [(r["method"], r["seeds"]) for r in transfer_rows] == [("holderpo@2..-2", 2), ("grpo", 2)]
    assert f"Transfer: the same policies on {FIXTURE_GAMES / 'train'}" in (out / "comparison.md").read_text()
    again = _compare(*options)
    assert again.returncode == 0 and again.stdout.count("already finished: reused") == 4
    assert "transfer: " not in again.stdout  # every sweep's results are reused
    # the summary written while a comparison is under way: the runs so far, marked partial
    names = ("holderpo@2..-2-s0", "holderpo@2..-2-s1", "grpo-s0")
    some = {(name.rsplit("-s", 1)[0], int(name[-1])): out / name for name in names}
    table = write_summary(out, some, planned=4)
    assert "| holderpo@2..-2 | 2 |" in table and "| grpo | 1 |" in table and "Partial: 3 of 4 runs finished" in table
    seed0 = json.loads((out / "holderpo@2..-2-s0" / "report.json").read_text())["heldout_after"]["won"]
    grpo_row = json.loads((out / "comparison.json").read_text())["rows"][1]
    assert grpo_row["difference"]["n"] == len(seed0)  # paired on the held-out episodes of seed 0 only
