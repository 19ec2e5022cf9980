"""AlfWorldEnv: the Gymnasium contract, winning walkthroughs, seeding, limits and bad actions."""

import json
import warnings
from pathlib import Path

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers ALFWorld-v0)
from envs import AlfWorldEnv, GameFileError

INFO_KEYS = {"admissible_commands", "won", "task_type", "task", "gamefile", "step", "admissible"}


def test_registered_env_passes_gymnasium_checker(fixture_game_files):
    env = gym.make("ALFWorld-v0", games=fixture_game_files)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any checker warning fails the test
        check_env(env.unwrapped)


@pytest.mark.parametrize("index", range(7))
def test_stored_walkthrough_wins(fixture_game_files, index):
    game_file = fixture_game_files[index]
    walkthrough = json.loads(Path(game_file).read_text())["walkthrough"]
    env = AlfWorldEnv(games=[game_file])
    obs, info = env.reset(seed=0)
    assert "Your task is to: " + info["task"] in obs
    assert set(info) == INFO_KEYS and info["admissible"] is None and info["step"] == 0
    for i, command in enumerate(walkthrough):
        assert command in info["admissible_commands"]
        obs, reward, terminated, truncated, info = env.step(command)
        last = i == len(walkthrough) - 1
        assert (reward, terminated, info["won"]) == ((10.0, True, True) if last else (0.0, False, False))
        assert not truncated and info["admissible"] and info["step"] == i + 1
    assert info["task_type"] in envs.TASK_TYPES


def test_same_seed_same_game_sequence(fixture_game_files):
    def sequence(seed):
        env = AlfWorldEnv(games=fixture_game_files)
        first = env.reset(seed=seed)[1]["gamefile"]
        return [first] + [env.reset()[1]["gamefile"] for _ in range(6)]

    assert sequence(3) == sequence(3)
    assert sorted(sequence(3)) == fixture_game_files  # each game once per pass
    assert any(sequence(3) != sequence(seed) for seed in (4, 5, 6))


def test_reset_option_plays_named_game(fixture_game_files):
    env = AlfWorldEnv(games=fixture_game_files[:1])
    folder = str(Path(fixture_game_files[4]).parent)
    _, info = env.reset(options={"game": folder})
    assert info["gamefile"] == fixture_game_files[4]


def test_env_without_games_needs_a_named_game(fixture_game_files):
    env = AlfWorldEnv()
    with pytest.raises(ValueError, match="options=\\{'game'"):
        env.reset()
    assert env.reset(options={"game": fixture_game_files[0]})[1]["step"] == 0


def test_step_limit_truncates_and_episode_then_needs_reset(fixture_game_files):
    env = AlfWorldEnv(games=fixture_game_files[:1], max_steps=3)
    env.reset(seed=0)
    results = [env.step("look")[2:4] for _ in range(3)]
    assert results == [(False, False), (False, False), (False, True)]
    with pytest.raises(RuntimeError, match="call reset"):
        env.step("look")


@pytest.mark.parametrize(
    "action",
    [
        "",
        "x" * 10_000,
        "prends la pomme \u00e9\u00e8 \u6f22\u5b57",
        "\x00\x07\x1b[31m\r\n",
        "heat egg 1 with microwave 1",
    ],
    ids=["empty", "10k-chars", "non-ascii", "control-chars", "other-game-command"],
)
def test_any_text_is_a_normal_inadmissible_step(fixture_game_files, action):
    env = AlfWorldEnv(games=fixture_game_files[:1])
    _, before = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(action)
    assert obs == "Nothing happens."
    assert (reward, terminated, truncated, info["admissible"]) == (0.0, False, False, False)
    assert info["admissible_commands"] == before["admissible_commands"]
    assert info["step"] == 1


def test_surrounding_whitespace_is_ignored_like_the_engine_does(fixture_game_files):
    env = AlfWorldEnv(games=fixture_game_files[:1])
    _, info = env.reset(seed=0)
    obs, *_, info = env.step(f"  {info['admissible_commands'][0]} \n")
    assert info["admissible"] and obs.startswith("You arrive at")


def test_non_text_action_is_a_type_error(fixture_game_files):
    env = AlfWorldEnv(games=fixture_game_files[:1])
    env.reset(seed=0)
    with pytest.raises(TypeError, match="expected the action to be a str, got int"):
        env.step(3)


def test_ansi_render_shows_last_command_and_observation(fixture_game_files):
    env = AlfWorldEnv(games=fixture_game_files[:1], render_mode="ansi")
    obs, _ = env.reset(seed=0)
    assert env.render() == obs + "\n"
    obs, *_ = env.step("look")
    assert env.render() == f"> look\n{obs}\n"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_steps": 0}, "max_steps"),
        ({"render_mode": "human"}, "render_mode"),
    ],
)
def test_bad_arguments_are_named(fixture_game_files, kwargs, message):
    with pytest.raises(ValueError, match=message):
        AlfWorldEnv(games=fixture_game_files, **kwargs)


def test_engine_failure_on_bad_pddl_names_the_file(games_copy):
    game_file = next(games_copy.rglob("game.tw-pddl"))
    data = json.loads(game_file.read_text())
    data["pddl_problem"] = data["pddl_problem"].replace("(:init", "(:init (atLocation agent1", 1)
    game_file.write_text(json.dumps(data))
    env = AlfWorldEnv(games=[game_file])
    with pytest.raises(GameFileError, match="engine could not load it") as error:
        env.reset(seed=0)
    assert str(game_file) in str(error.value)
