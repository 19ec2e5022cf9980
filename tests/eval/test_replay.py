"""`holderpo replay`: the terminal view, its filters, the HTML page as text, and bad transcripts.

The transcript mixes episodes from an eval sweep (expert wins, random runs out of steps) with a
training-style episode whose policy, model, thought and flags differ, as the trainer writes them.
"""

import json
from pathlib import Path

import pytest

from agents.baselines import ExpertPolicy, RandomAdmissiblePolicy
from eval.evaluate import evaluate
from eval.html_report import render_html
from eval.replay import select_episodes
from holderpo.cli import main
from rollouts.records import EpisodeRecord, TurnRecord
from rollouts.transcripts import TranscriptWriter, read_transcript
from tests.conftest import FIXTURE_GAMES

GAMES = sorted(str(p) for p in (FIXTURE_GAMES / "valid_seen").rglob("game.tw-pddl"))
HOSTILE = "<script>window.pwned=1</script> [bold]not markup[/bold]"


def training_episode() -> EpisodeRecord:
    """An episode as the trainer records it: a thought, a malformed response, hostile text."""
    turns = [
        TurnRecord(
            observation=f"You are in a room. {HOSTILE}",
            action="go to desk 1",
            response="<think>the desk</think><action>go to desk 1</action>",
            thought="the desk",
            admissible=True,
            malformed=False,
            reward=0.0,
        ),
        TurnRecord(
            observation="You arrive at desk 1.",
            action="dance",
            response=f"I will {HOSTILE}",
            thought=None,
            admissible=False,
            malformed=True,
            reward=0.0,
        ),
    ]
    return EpisodeRecord(
        "train-game/trial_9#3",
        GAMES[0],
        "train-game/trial_9",
        "look_at_obj_in_light",
        "look at book under the desklamp",
        sample=3,
        seed=11,
        group=2,
        outcome="step-limit",
        final_observation="Nothing happens.",
        turns=turns,
    )


@pytest.fixture(scope="module")
def transcript(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("replay") / "transcripts.jsonl"
    for policy, max_steps in ((ExpertPolicy(), 50), (RandomAdmissiblePolicy(), 3)):
        with TranscriptWriter(path, policy=policy.name) as writer:
            evaluate(policy, GAMES, seed=0, max_steps=max_steps, num_envs=2, num_workers=1, on_episode_end=writer.write)
    with TranscriptWriter(path, policy="holderpo-train", model="runs/demo/step_40") as writer:
        writer.write(training_episode())
    return path


@pytest.fixture
def replay(capsys, monkeypatch):
    """Run `holderpo replay ...` in this process; returns (exit code, stdout)."""
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps at the terminal width; keep lines whole

    def run(*argv):
        code = main(["replay", *map(str, argv)])
        return code, capsys.readouterr().out

    return run


def test_terminal_view_of_one_episode(transcript, replay):
    episode = next(e for e in read_transcript(transcript).episodes if e.policy == "expert")
    code, out = replay(transcript, "--episode", "look_at_obj_in_light-Book", "--only", "won")
    assert code == 0
    assert f"{episode.episode_id} " in out
    assert "task: look at book under the desklamp" in out and "policy: expert" in out
    assert "turn 1 admissible  reward 0" in out
    assert f"turn {episode.steps} admissible  reward 10" in out
    for turn in episode.turns:
        assert f"> {turn.action}" in out
    assert "Your task is to: look at book under the desklamp." in out
    assert f"outcome: won after {episode.steps} steps" in out
    assert "1 episode(s) shown: 1 won, 0 step-limit, 0 errored" in out


def _episode(episode_id: str, policy: str | None = None) -> EpisodeRecord:
    game_id = episode_id.split("#")[0]
    return EpisodeRecord(
        episode_id,
        f"{game_id}/game.tw-pddl",
        game_id,
        "pick_and_place_simple",
        "task",
        sample=0,
        seed=0,
        group=0,
        policy=policy,
    )


def test_episode_id_or_unique_prefix():
    episodes = [_episode("a/t1#0"), _episode("a/t1#1"), _episode("a/t10#0"), _episode("a/t1#0", "later run")]
    # an exact id wins over the longer ids it prefixes, and names every episode with that id
    assert select_episodes(episodes, episode="a/t1#0") == [episodes[0], episodes[3]]
    assert select_episodes(episodes, episode="a/t10") == [episodes[2]]
    with pytest.raises(ValueError, match="prefix of 3 episode ids"):
        select_episodes(episodes, episode="a/t1")


def test_filters_choose_episodes(transcript, replay):
    code, out = replay(transcript, "--only", "won")
    assert code == 0 and "2 episode(s) shown: 2 won, 0 step-limit" in out
    code, out = replay(transcript, "--only", "failed", "--task-type", "look_at_obj_in_light")
    assert code == 0 and "2 episode(s) shown: 0 won, 2 step-limit" in out
    code, out = replay(transcript, "--task-type", "no_such_type")
    assert code == 1 and "no episode" in out and "pick_heat_then_place_in_recep" in out
    code, out = replay(transcript, "--episode", "zzz")
    assert code == 2 and "no episode id starts with 'zzz'" in out


def test_training_episode_shows_thought_flags_and_raw_text(transcript, replay):
    code, out = replay(transcript, "--episode", "train-game")
    assert code == 0
    assert "policy: holderpo-train" in out and "model: runs/demo/step_40" in out
    assert "thought: the desk" in out
    assert "turn 2 inadmissible malformed  reward 0" in out
    assert f"response: I will {HOSTILE}" in out  # rich markup in model text is printed, not applied
    assert "> dance" in out and "outcome: step-limit after 2 steps" in out


def test_cut_last_line_is_reported_and_the_rest_shown(transcript, tmp_path, replay):
    cut = tmp_path / "cut.jsonl"
    text = transcript.read_text()
    cut.write_text(text[: len(text) - 40])  # a crash in the middle of the last episode
    code, out = replay(cut, "--only", "won")
    assert code == 0
    assert "warning:" in out and "last line is cut off" in out
    assert "2 episode(s) shown: 2 won" in out
    code, out = replay(cut, "--html", tmp_path / "cut.html")
    assert code == 0 and "last line is cut off" in (tmp_path / "cut.html").read_text()


def test_unknown_schema_and_missing_file_are_explained(tmp_path, replay, transcript):
    future = tmp_path / "future.jsonl"
    future.write_text(json.dumps({"schema": 2, "episode_id": "x#0", "turns": []}) + "\n")
    code, out = replay(future)
    assert code == 2 and "unknown transcript schema 2" in out and "reads schema 1" in out
    mixed = tmp_path / "mixed.jsonl"  # known episodes are still shown beside an unknown one
    mixed.write_text(future.read_text() + transcript.read_text())
    code, out = replay(mixed)
    assert code == 0 and "unknown transcript schema 2" in out
    code, out = replay(tmp_path / "absent.jsonl")
    assert code == 2 and "no such transcript file" in out


def test_select_episodes_refuses_unknown_only():
    with pytest.raises(ValueError, match="expected --only in"):
        select_episodes([], only="lost")


def test_html_escapes_game_and_model_text(transcript):
    episodes = read_transcript(transcript).episodes
    page = render_html(episodes, f"Episodes of {HOSTILE}")
    assert "<script>window.pwned" not in page and "[bold]" in page
    assert page.count("&lt;script&gt;window.pwned=1&lt;/script&gt;") == 4  # title, heading, observation, response
    assert page.count("<script>") == 1  # the page's own
    assert "http://" not in page and "https://" not in page and " src=" not in page and " href=" not in page
    assert page.count('<details class="episode"') == len(episodes) == 5
    assert "Wilson 95% CI" in page and "<b>5</b> episodes" in page


def test_html_command_writes_a_page(transcript, tmp_path, replay):
    code, out = replay(transcript, "--html", tmp_path / "page" / "all.html", "--only", "failed")
    assert code == 0 and "(3 episodes)" in out
    page = (tmp_path / "page" / "all.html").read_text()
    assert page.count('<details class="episode"') == 3 and 'data-outcome="won"' not in page
