"""The evaluator: deterministic sweeps, summaries and the `holderpo eval` command."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agents.baselines import ExpertPolicy, RandomAdmissiblePolicy
from eval.evaluate import evaluate, make_specs, summarize
from tests.conftest import FIXTURE_GAMES

REPO = Path(__file__).parent.parent.parent


def _trace(records):
    return [(r.episode_id, r.outcome, [t.action for t in r.turns]) for r in records]


def test_sweep_is_sorted_and_each_game_once(fixture_game_files):
    specs = make_specs(list(reversed(fixture_game_files)), seed=0)
    assert [s.game for s in specs] == fixture_game_files
    assert len({s.seed for s in specs}) == len(specs)
    assert [s.game for s in make_specs(fixture_game_files, 0, max_episodes=2)] == fixture_game_files[:2]
    twice = make_specs(fixture_game_files[:2], 0, samples=2)
    assert [(s.game_id, s.sample) for s in twice][:2] == [(specs[0].game_id, 0), (specs[0].game_id, 1)]


def test_results_do_not_depend_on_batching(fixture_game_files):
    games = fixture_game_files[:4]
    alone = evaluate(RandomAdmissiblePolicy(), games, seed=5, num_envs=1, num_workers=1, max_steps=8)
    batched = evaluate(RandomAdmissiblePolicy(), games, seed=5, num_envs=4, num_workers=2, max_steps=8)
    assert _trace(alone) == _trace(batched)
    other_seed = evaluate(RandomAdmissiblePolicy(), games, seed=6, num_envs=4, num_workers=2, max_steps=8)
    assert _trace(other_seed) != _trace(batched)


def test_expert_episodes_repeat_exactly(fixture_game_files):
    first = evaluate(ExpertPolicy(), fixture_game_files, seed=1, num_envs=4, num_workers=2)
    again = evaluate(ExpertPolicy(), fixture_game_files, seed=1, num_envs=3, num_workers=1)
    assert _trace(first) == _trace(again)


def test_summary_counts_outcomes_per_task_type(fixture_game_files, tmp_path):
    broken = tmp_path / "broken" / "trial_0" / "game.tw-pddl"
    broken.parent.mkdir(parents=True)
    broken.write_text("{}")
    records = evaluate(ExpertPolicy(), fixture_game_files[:2] + [str(broken)], seed=0, num_envs=3)
    summary = summarize(records)
    overall = summary.overall
    assert overall.episodes == 3
    assert overall.outcomes == {"won": 2, "step-limit": 0, "errored": 1}
    assert overall.success_rate == pytest.approx(2 / 3)
    assert summary.by_task_type["pick_and_place_simple"].success_rate == 1.0
    assert summary.by_task_type["unknown"].outcomes["errored"] == 1
    assert 0 < overall.admissible_rate <= 1
    assert [name for name, _ in summary.rows()] == ["pick_and_place_simple", "unknown", "overall"]


def _eval_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "holderpo.cli", "eval", *args], capture_output=True, text=True, timeout=300, cwd=REPO
    )


def test_eval_command_writes_results(tmp_path):
    games = FIXTURE_GAMES / "valid_seen"
    result = _eval_cli("--games", str(games), "--policy", "expert", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "overall" in result.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    assert {"episodes", "success_rate", "by_task_type", "outcomes"} <= set(results)
    assert results["episodes"] == 2 and results["success_rate"] == 1.0
    assert set(results["by_task_type"]) == {"look_at_obj_in_light", "pick_heat_then_place_in_recep"}
    assert all({"episodes", "success_rate"} <= set(v) for v in results["by_task_type"].values())


def test_eval_command_without_games_explains(tmp_path):
    result = _eval_cli("--games", str(tmp_path), "--policy", "random")
    assert result.returncode == 2 and "no playable games" in result.stdout


def _record(game_id, sample, outcome, steps, task_type="pick_and_place_simple"):
    from rollouts.records import EpisodeRecord, TurnRecord

    turns = [
        TurnRecord("obs", "look", "look", None, admissible=i % 2 == 0, malformed=False, reward=0.0)
        for i in range(steps)
    ]
    return EpisodeRecord(
        f"{game_id}#{sample}",
        f"{game_id}/game.tw-pddl",
        game_id,
        task_type,
        "task",
        sample,
        seed=sample,
        group=0,
        outcome=outcome,
        turns=turns,
    )


def test_summary_statistics_with_samples():
    from eval.stats import wilson_interval

    records = [
        _record("a/t", 0, "won", 4),
        _record("a/t", 1, "step-limit", 10),
        _record("b/t", 0, "step-limit", 10),
        _record("b/t", 1, "step-limit", 10),
        _record("c/t", 0, "won", 6, "look_at_obj_in_light"),
        _record("c/t", 1, "errored", 0, "look_at_obj_in_light"),
    ]
    summary = summarize(records)
    overall = summary.overall
    assert summary.k == 2
    assert overall.success_rate == pytest.approx(2 / 6)
    assert overall.success_ci95 == pytest.approx(wilson_interval(2, 6))
    assert overall.pass_at_k == pytest.approx(2 / 3)  # games a and c won at least once in 2
    assert overall.mean_steps_won == pytest.approx(5.0)
    assert overall.admissible_rate == pytest.approx(20 / 40)  # every other turn of 40
    picks = summary.by_task_type["pick_and_place_simple"]
    assert picks.pass_at_k == pytest.approx(0.5) and picks.mean_steps_won == 4.0
    assert picks.success_ci95 == pytest.approx(wilson_interval(1, 4))
    assert summarize(records, k=1).overall.pass_at_k == pytest.approx(2 / 6)
    lost = summarize([_record("b/t", 0, "step-limit", 3)]).overall
    assert lost.mean_steps_won is None and lost.pass_at_k == 0.0


def test_summary_json_is_the_results_file_format():
    """results.json and the training report hold `to_json()`: its keys, their order and JSON types."""
    row_keys = [
        "episodes",
        "success_rate",
        "success_ci95",
        "pass_at_k",
        "mean_steps_won",
        "admissible_rate",
        "outcomes",
        "steps",
    ]
    summary = summarize([_record("a/t", 0, "won", 4), _record("c/t", 0, "errored", 0, "look_at_obj_in_light")])
    as_json = summary.to_json()
    assert list(as_json) == [*row_keys, "k", "by_task_type"]
    assert as_json["success_ci95"] == list(summary.overall.success_ci95) and as_json["k"] == 1
    assert as_json["outcomes"] == {"won": 1, "step-limit": 0, "errored": 1} and as_json["mean_steps_won"] == 4.0
    assert list(as_json["by_task_type"]) == ["look_at_obj_in_light", "pick_and_place_simple"]
    assert all(
        list(row) == row_keys and isinstance(row["success_ci95"], list) for row in as_json["by_task_type"].values()
    )
    assert json.loads(json.dumps(as_json)) == as_json
