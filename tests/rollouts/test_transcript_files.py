"""Transcripts: flushed per episode, read back, cut last lines and unknown schemas handled."""

import json

import pytest

from agents.baselines import RandomAdmissiblePolicy
from eval.evaluate import evaluate
from rollouts.transcripts import SCHEMA_VERSION, TranscriptError, TranscriptWriter, read_transcript


@pytest.fixture
def transcript(fixture_game_files, tmp_path):
    path = tmp_path / "t.jsonl"
    with TranscriptWriter(path, policy="random") as writer:
        records = evaluate(RandomAdmissiblePolicy(), fixture_game_files[:3], seed=0, max_steps=4,
                           num_envs=2, num_workers=1, on_episode_end=writer.write)
    return path, records


def test_round_trip(transcript):
    path, records = transcript
    episodes = read_transcript(path).episodes
    assert sorted(e["episode_id"] for e in episodes) == sorted(r.episode_id for r in records)
    by_id = {e["episode_id"]: e for e in episodes}
    for record in records:
        entry = by_id[record.episode_id]
        assert entry["schema"] == SCHEMA_VERSION and entry["outcome"] == record.outcome
        assert [t["action"] for t in entry["turns"]] == [t.action for t in record.turns]
        assert entry["turns"][0]["observation"].startswith("-= Welcome to TextWorld")


def test_each_episode_is_on_disk_when_it_ends(fixture_game_files, tmp_path):
    path = tmp_path / "t.jsonl"
    seen = []
    with TranscriptWriter(path, policy="random") as writer:
        def write_and_count(record):
            writer.write(record)
            seen.append(len(path.read_text().splitlines()))  # read by another handle
        evaluate(RandomAdmissiblePolicy(), fixture_game_files[:3], seed=0, max_steps=3,
                 num_envs=1, num_workers=1, on_episode_end=write_and_count)
    assert seen == [1, 2, 3]


def test_cut_last_line_is_reported_and_the_rest_kept(transcript):
    path, _ = transcript
    text = path.read_text()
    path.write_text(text[: len(text) - 40])
    loaded = read_transcript(path)
    assert len(loaded.episodes) == 2
    assert "last line is cut off" in loaded.problems[0]


def test_unknown_schema_is_skipped_and_reported_bad_middle_line_raises(transcript):
    path, _ = transcript
    lines = path.read_text().splitlines()
    path.write_text("\n".join([json.dumps({**json.loads(lines[0]), "schema": 99}), *lines[1:]]) + "\n")
    loaded = read_transcript(path)
    assert len(loaded.episodes) == 2 and "unknown transcript schema 99" in loaded.problems[0]
    path.write_text("\n".join(["{cut", *lines[1:]]) + "\n")
    with pytest.raises(TranscriptError, match=":1: not valid JSON"):
        read_transcript(path)
    with pytest.raises(TranscriptError, match="no such transcript"):
        read_transcript(path.parent / "missing.jsonl")
