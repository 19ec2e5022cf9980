"""BatchedAlfWorld: explicit game assignment, groups, and survival of crashed or hung workers."""

import json
import os
import signal

import pytest

from envs.batched import BatchedAlfWorld, group_games


@pytest.fixture
def games(fixture_game_files):
    return [g for g in fixture_game_files if "legacy" not in g]


def test_groups_share_a_game_and_only_given_slots_step(games):
    with BatchedAlfWorld(num_envs=4, num_workers=2) as batch:
        results = batch.reset(group_games(games[:2], group_size=2), seeds=range(4))
        assert [r.info["gamefile"] for r in results] == [games[0], games[0], games[1], games[1]]
        assert batch.live == {0, 1, 2, 3}
        stepped = batch.step({1: "look", 2: "inventory"})
        assert set(stepped) == {1, 2}
        assert stepped[2].observation == "You are not carrying anything."
        assert [r.info["step"] for r in stepped.values()] == [1, 1]


def test_masked_reset_leaves_other_slots_running(games):
    with BatchedAlfWorld(num_envs=2, num_workers=1, max_steps=2) as batch:
        batch.reset([games[0], games[1]])
        batch.step({0: "look", 1: "look"})
        finished = batch.step({0: "look"})[0]
        assert finished.truncated and batch.live == {1}
        with pytest.raises(ValueError, match=r"slots \[0\] have no running episode"):
            batch.step({0: "look"})
        results = batch.reset([games[2], None])
        assert results[1] is None and batch.live == {0, 1}
        assert batch.step({1: "look"})[1].info["step"] == 2  # slot 1 kept its episode


def test_killed_worker_mid_episode_is_reported_and_restarted(games):
    with BatchedAlfWorld(num_envs=4, num_workers=2) as batch:
        batch.reset(group_games(games[:2], 2))
        batch.step({i: "look" for i in range(4)})
        os.kill(batch.worker_pids()[0], signal.SIGKILL)  # worker 0 holds slots 0 and 2
        results = batch.step({i: "look" for i in range(4)})
        assert [results[i].error is not None for i in range(4)] == [True, False, True, False]
        assert "worker crashed" in results[0].error and results[0].info["gamefile"] == games[0]
        assert results[1].info["step"] == 2 and batch.live == {1, 3} and batch.restarts == 1
        fresh = batch.reset([games[3], None, games[4], None])
        assert fresh[0].error is None and fresh[0].info["gamefile"] == games[3]
        assert batch.live == {0, 1, 2, 3}


def test_hung_worker_times_out_and_others_go_on(games):
    with BatchedAlfWorld(num_envs=2, num_workers=2, step_timeout=3) as batch:
        batch.reset(games[:2])
        os.kill(batch.worker_pids()[1], signal.SIGSTOP)
        results = batch.step({0: "look", 1: "look"})
        assert results[0].error is None and results[1].error.startswith("worker hung")
        assert batch.live == {0}
        assert batch.reset([None, games[2]])[1].error is None


def test_bad_game_errors_its_slot_only(games, tmp_path):
    broken = tmp_path / "game.tw-pddl"
    broken.write_text(json.dumps({"pddl_domain": "x"}))
    with BatchedAlfWorld(num_envs=2, num_workers=1) as batch:
        results = batch.reset([str(broken), games[0]])
        assert "GameFileError" in results[0].error and "missing or non-text keys" in results[0].error
        assert results[1].error is None and batch.live == {1}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_envs": 0}, "num_envs"),
        ({"num_envs": 2, "num_workers": 3}, "num_workers"),
    ],
)
def test_bad_sizes_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BatchedAlfWorld(**kwargs)


def test_group_size_must_be_positive():
    assert group_games(["a", "b"], 3) == ["a"] * 3 + ["b"] * 3
    with pytest.raises(ValueError, match="group_size"):
        group_games(["a"], 0)
