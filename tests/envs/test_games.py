"""Game sources: the official layout, folder sweeps with alfworld's filters, and clear errors."""

import json
import shutil
from pathlib import Path

import pytest

from envs.games import (
    GameFileError,
    MissingDataError,
    load_game,
    official_split_dir,
    official_splits_present,
    resolve_games,
    scan_games,
)
from tests.conftest import FIXTURE_DATA


def test_official_splits_from_alfworld_data(monkeypatch):
    monkeypatch.setenv("ALFWORLD_DATA", str(FIXTURE_DATA))
    assert official_splits_present() == {"train": True, "valid_seen": True, "valid_unseen": True}
    valid_seen = resolve_games("official:valid_seen")
    assert [Path(p).parts[-3].split("-")[0] for p in valid_seen] == [
        "look_at_obj_in_light",
        "pick_heat_then_place_in_recep",
    ]
    assert len(resolve_games("official:train")) == 4
    assert valid_seen == sorted(valid_seen)


def test_missing_official_data_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path))
    with pytest.raises(MissingDataError) as error:
        resolve_games("official:valid_unseen")
    assert "alfworld-download" in str(error.value) and "holderpo games generate" in str(error.value)
    with pytest.raises(ValueError, match="expected an official split"):
        official_split_dir("test")


def _break(folder: Path, how: str) -> None:
    if how == "malformed traj":
        (folder / "traj_data.json").write_text("{not json")
    elif how == "malformed game":
        (folder / "game.tw-pddl").write_text("[1, 2")
    elif how == "unsolvable":
        data = json.loads((folder / "game.tw-pddl").read_text())
        (folder / "game.tw-pddl").write_text(json.dumps({**data, "solvable": False}))
    elif how == "unknown task type":
        traj = json.loads((folder / "traj_data.json").read_text())
        (folder / "traj_data.json").write_text(json.dumps({**traj, "task_type": "juggle"}))
    elif how == "missing game":
        (folder / "game.tw-pddl").unlink()


@pytest.mark.parametrize(
    "how, reason",
    [
        ("malformed traj", "malformed"),
        ("malformed game", "malformed"),
        ("unsolvable", "unsolvable"),
        ("unknown task type", "unknown task type"),
        ("missing game", "missing game.tw-pddl"),
    ],
)
def test_sweep_skips_counts_and_reports_broken_folders(games_copy, how, reason):
    broken = sorted(games_copy.rglob("traj_data.json"))[2].parent
    _break(broken, how)
    scan = scan_games(games_copy)
    assert len(scan.games) == 6
    assert [folder for folder, _ in scan.skipped] == [str(broken)]
    assert scan.skipped[0][1].startswith(reason)
    assert scan.skipped_counts()[reason] == 1


def test_sweep_skips_movable_and_sliced_like_alfworld(games_copy):
    source = sorted(games_copy.rglob("traj_data.json"))[0].parent.parent
    for name in (
        "pick_and_place_with_movable_recep-Apple-Pan-Fridge-1",
        "pick_and_place_simple-AppleSliced-None-Fridge-1",
    ):
        shutil.copytree(source, source.parent / name)
    scan = scan_games(games_copy)
    assert len(scan.games) == 7 and scan.skipped_counts()["unsupported"] == 4


def test_sweep_of_missing_or_empty_folder(tmp_path):
    with pytest.raises(MissingDataError, match="does not exist"):
        scan_games(tmp_path / "nope")
    with pytest.raises(MissingDataError, match="no playable games"):
        resolve_games(tmp_path)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{broken", "not valid JSON"),
        ("[]", "expected a JSON object, got list"),
        (json.dumps({"pddl_domain": "x", "grammar": "y"}), "missing or non-text keys \\['pddl_problem'\\]"),
    ],
)
def test_malformed_game_file_error_names_the_file(games_copy, content, message):
    game_file = next(games_copy.rglob("game.tw-pddl"))
    game_file.write_text(content)
    with pytest.raises(GameFileError, match=message) as error:
        load_game(game_file)
    assert error.value.path == str(game_file)


def test_load_game_from_folder_reads_task(fixture_game_files):
    game = load_game(Path(fixture_game_files[0]).parent)
    assert (game.task_type, game.task) == ("pick_and_place_simple", "put some apple on fridge")
    assert game.walkthrough[-1] == "move apple 1 to fridge 1"
