"""Demonstration thoughts: written from what the turn's prompt shows, about the command that
follows, in varied wording, the same in every run."""

import random
import re

import pytest

from agents.prompts import PromptConfig, ours_step_messages
from agents.thoughts import EpisodeMemory, Goal, demonstration_thought
from envs import TASK_TYPES, AlfWorldEnv
from envs.games import GameFileError, load_game, read_task_params
from envs.generator import generate_games

NAMED = re.compile(r"\b[a-z]+ \d+\b")  # an object or place as the game names it: "cup 2", "drawer 10"


@pytest.fixture(scope="module")
def demonstrations(tmp_path_factory):
    """Every turn of the walkthroughs of tiny, small and alfworld-size games of each task type:
    (goal, history, observation, admissible, command, episode id, turn)."""
    turns = []
    for size in ("tiny", "small", "alfworld"):
        report = generate_games(tmp_path_factory.mktemp(size), num=6, seed=4, size=size, planner_every=0)
        for folder in report.paths:
            env = AlfWorldEnv(games=[folder], max_steps=60)
            observation, info = env.reset(seed=0)
            goal = Goal.from_params(info["task"], info["task_type"], read_task_params(folder / "game.tw-pddl"))
            history = []
            for turn, command in enumerate(load_game(folder).walkthrough):
                episode = f"{folder.parent.name}/{folder.name}"
                turns.append((goal, tuple(history), observation, info["admissible_commands"], command, episode, turn))
                history.append((observation, command))
                observation, _, _, _, info = env.step(command)
            assert info["won"]
    assert {goal.task_type for goal, *_ in turns} == set(TASK_TYPES)
    return turns


def thought_at(goal, history, observation, command, shown, episode, turn):
    memory = EpisodeMemory.replay(history[-shown:] if shown else (), observation)
    return demonstration_thought(goal, memory, command, random.Random(f"{episode}|{turn}"))


@pytest.mark.parametrize("shown", [1, 2, 4])
def test_a_thought_names_only_what_the_prompt_shows_and_what_the_command_acts_on(demonstrations, shown):
    prompt = PromptConfig(history=shown, output_format="react", show_admissible=False)
    for goal, history, observation, _, command, episode, turn in demonstrations:
        thought = thought_at(goal, history, observation, command, shown, episode, turn)
        intro = history[0][0] if history else observation
        visible = " ".join(m["content"] for m in ours_step_messages(prompt, goal.task, intro, history, observation, []))
        unseen = [name for name in NAMED.findall(thought) if name not in visible]
        assert not unseen, f"{episode} turn {turn}: {thought!r} names {unseen}, not in its prompt"
        verb, _, rest = command.partition(" ")
        acted_on = {"take": rest.split(" from ")[0], "use": rest}.get(verb, NAMED.findall(command)[-1:] or [""])
        acted_on = acted_on if isinstance(acted_on, str) else acted_on[0]
        by_class = acted_on.rsplit(" ", 1)[0]  # what the prompt does not show is named by its class
        assert acted_on in thought or by_class in thought, f"{command!r} after the thought {thought!r}"
        assert len(thought) <= 160, thought  # a few dozen tokens, under the default cap of 48


def test_thoughts_follow_the_episode_and_vary_in_wording(demonstrations):
    by_episode = {}
    for goal, history, observation, _, command, episode, turn in demonstrations:
        by_episode.setdefault(episode, []).append(thought_at(goal, history, observation, command, 2, episode, turn))
    episode = next(e for e, thoughts in by_episode.items() if e.startswith("pick_two") and len(thoughts) >= 5)
    thoughts = by_episode[episode]
    assert any("first" in t for t in thoughts), thoughts  # it knows one object is placed, one to go
    searches = {NAMED.sub("X", t) for ts in by_episode.values() for t in ts if "place to check" in t or "Maybe" in t}
    assert len(searches) >= 4  # several phrasings of "where to look next"
    again = [thought_at(g, h, o, c, 2, e, t) for g, h, o, _, c, e, t in demonstrations]
    assert again == [t for ts in by_episode.values() for t in ts]  # the same draw every run


def test_memory_reads_what_was_seen_taken_and_put():
    history = (
        ("You are in the middle of a room. You see a countertop 1 and a fridge 1.", "go to countertop 1"),
        (
            "You arrive at countertop 1. On the countertop 1, you see a cup 2, a apple 1, and a cup 1.",
            "take cup 2 from countertop 1",
        ),
        ("You pick up the cup 2 from the countertop 1.", "go to fridge 1"),
        ("You arrive at fridge 1. The fridge 1 is closed.", "open fridge 1"),
        ("You open the fridge 1. The fridge 1 is open. In it, you see nothing.", "move cup 2 to fridge 1"),
    )
    memory = EpisodeMemory.replay(history, "You move the cup 2 to the fridge 1.")
    assert memory.contents == {"countertop 1": ["apple 1", "cup 1"], "fridge 1": ["cup 2"]}
    assert (memory.holding, memory.placed, memory.checked) == ("", ["cup 2"], ["countertop 1", "fridge 1"])
    assert memory.where_seen("cup") == ("cup 1", "countertop 1")  # not the one already placed
    goal = Goal("put two cup in fridge", "pick_two_obj_and_place", "cup", "fridge", 2)
    thought = demonstration_thought(goal, memory, "go to countertop 1", random.Random(0))
    assert "cup 1" in thought and "countertop 1" in thought
    cleaning = Goal("clean some cloth and put it in cabinet", "pick_clean_then_place_in_recep", "cloth", "cabinet")
    holding = EpisodeMemory(holding="cloth 1")
    for basin in ("sinkbasin 1", "bathtubbasin 1"):  # a room without a sink cleans in the bathtub
        assert "cleaned" in demonstration_thought(cleaning, holding, f"go to {basin}", random.Random(0))
    nothing_happened = EpisodeMemory.replay((("intro", "take cup 9 from fridge 1"),), "Nothing happens.")
    assert nothing_happened.holding == ""


def test_a_game_without_task_parameters_is_refused_by_name(tmp_path):
    (tmp_path / "traj_data.json").write_text('{"task_type": "pick_and_place_simple"}')
    with pytest.raises(GameFileError, match="pddl_params"):
        read_task_params(tmp_path / "game.tw-pddl")
    with pytest.raises(GameFileError, match="missing"):
        read_task_params(tmp_path / "elsewhere" / "game.tw-pddl")
