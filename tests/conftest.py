"""Shared test fixtures: the hand-written games under tests/fixtures (laid out like $ALFWORLD_DATA)."""

import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE_DATA = FIXTURES / "alfworld_data"
FIXTURE_GAMES = FIXTURE_DATA / "json_2.1.1"


@pytest.fixture(scope="session")
def fixture_game_files() -> list[str]:
    """Every fixture game file, sorted (seven games, all six task types, one legacy grammar)."""
    return sorted(str(p) for p in FIXTURE_GAMES.rglob("game.tw-pddl"))


@pytest.fixture
def games_copy(tmp_path: Path) -> Path:
    """A writable copy of the fixture data, for tests that break or add games."""
    target = tmp_path / "games"
    shutil.copytree(FIXTURE_GAMES, target)
    return target
