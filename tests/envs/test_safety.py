"""Crafted game files must be refused before textworld evaluates their grammar.

Each payload below writes a marker file when textworld's grammar engine evaluates it; the
trusted runs prove the payloads are live, so the refusals are what stop them.
"""

import json
from pathlib import Path

import pytest

from envs import AlfWorldEnv, GameFileError, load_game
from envs.safety import LEGACY_GRAMMAR_SHA256, current_grammar, legacy_grammar, sha256

PAYLOAD = "{__import__('pathlib').Path(r'MARKER').write_text('pwned')}"


def _craft(games_copy: Path, marker: Path, where: str) -> Path:
    game_file = sorted(games_copy.rglob("game.tw-pddl"))[0]
    data = json.loads(game_file.read_text())
    payload = PAYLOAD.replace("MARKER", str(marker))
    if where == "grammar":  # the arrival message evaluates the payload on "go to ..."
        data["grammar"] = data["grammar"].replace("You arrive at {r.name}.", "You arrive at " + payload + ".")
    else:  # the task sentence sits in the intro, derived on reset
        data["grammar"] = data["grammar"].replace("put some apple on fridge", "put some apple " + payload)
    game_file.write_text(json.dumps(data))
    return game_file


def _play(game_file: Path, trust: bool) -> None:
    env = AlfWorldEnv(games=[game_file], trust_game_files=trust)
    _, info = env.reset(seed=0)
    env.step(info["admissible_commands"][0])  # "go to cabinet 1"


@pytest.mark.parametrize("where", ["grammar", "task sentence"])
def test_crafted_game_is_refused_and_runs_nothing(games_copy, tmp_path, where):
    marker = tmp_path / "marker.txt"
    game_file = _craft(games_copy, marker, where)
    with pytest.raises(GameFileError, match="refused") as error:
        _play(game_file, trust=False)
    assert str(game_file) in str(error.value) and "trust_game_files" in str(error.value)
    assert not marker.exists()
    # The payload is live: a user who trusts the file gets it executed.
    _play(game_file, trust=True)
    assert marker.read_text() == "pwned"


@pytest.mark.parametrize(
    "sentence", ["put a {apple} in fridge", "put #intro# in fridge", 'put a" in fridge', "put\na apple"]
)
def test_task_sentence_must_be_plain_words(games_copy, sentence):
    game_file = sorted(games_copy.rglob("game.tw-pddl"))[0]
    data = json.loads(game_file.read_text())
    data["grammar"] = data["grammar"].replace("put some apple on fridge", sentence)
    game_file.write_text(json.dumps(data))
    with pytest.raises(GameFileError, match="not plain words"):
        load_game(game_file)


def test_legacy_grammar_is_alfworld_0_3_grammar():
    assert sha256(legacy_grammar(current_grammar())) == LEGACY_GRAMMAR_SHA256


def test_legacy_game_loads_and_plays(fixture_game_files):
    legacy = [p for p in fixture_game_files if p.endswith("_legacy/game.tw-pddl")]
    assert len(legacy) == 1
    game = load_game(legacy[0])
    assert game.task == "put a apple in fridge"
    env = AlfWorldEnv(games=legacy)
    env.reset(seed=0)
    for command in game.walkthrough:
        *_, info = env.step(command)
    assert info["won"] and any(c.startswith("put ") for c in game.walkthrough)
