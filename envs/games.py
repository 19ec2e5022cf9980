"""Where games come from: official ALFWorld splits, any folder laid out like them, lists of files.

A game is a folder holding `traj_data.json` (task type and parameters), `initial_state.pddl`
and `game.tw-pddl` (JSON: PDDL domain, grammar, problem, `solvable`, `walkthrough`). We sweep
folders the way alfworld does (same filters: movable and sliced trajectories, unsolvable games
and unknown task types are skipped), but we also count and report every folder we skip, and
we always return games in sorted order so that runs and evaluations are deterministic.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from envs.files import FileRefused, read_regular_file
from envs.safety import UnsafeGameError
from envs.validation import MAX_GAME_FILE_BYTES, MAX_TRAJ_FILE_BYTES, GameBoundsError, validate_game

TASK_TYPES = (
    "pick_and_place_simple",
    "look_at_obj_in_light",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
    "pick_two_obj_and_place",
)
OFFICIAL_SPLITS = ("train", "valid_seen", "valid_unseen")
OFFICIAL_SUBDIR = "json_2.1.1"
GAME_FILE = "game.tw-pddl"
TRAJ_FILE = "traj_data.json"
_GAME_KEYS = ("pddl_domain", "grammar", "pddl_problem")


class GameFileError(ValueError):
    """A game folder or file is malformed, incomplete, unreadable or refused.

    `kind` is the first word of the reason a sweep reports for it ("malformed", "unreadable",
    "refused"), so that skipped folders can be counted by cause.
    """

    def __init__(self, path: str | Path, reason: str, kind: str = "malformed"):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason
        self.kind = kind

    def skip_reason(self) -> str:
        """The line a sweep lists for the folder: `kind: path: reason`, the kind said once."""
        return f"{self.kind}: {self.path}: {self.reason.removeprefix(f'{self.kind}: ')}"


class MissingDataError(FileNotFoundError):
    """Asked-for games are not on disk."""


@dataclass(frozen=True)
class Game:
    """A validated game, ready for the engine.

    `data` is the parsed `game.tw-pddl`; the engine loads this very object, so what was checked
    is what runs.
    """

    path: str  # the game.tw-pddl file
    task_type: str  # one of TASK_TYPES, or "unknown" for a bare game file
    task: str  # the goal sentence, e.g. "put some apple on fridge"
    data: dict = field(repr=False, compare=False)

    @property
    def walkthrough(self) -> list[str] | None:
        return self.data.get("walkthrough")


@dataclass
class GameScan:
    """The result of sweeping a folder: the games found and every folder skipped, with why."""

    games: list[str] = field(default_factory=list)  # sorted game.tw-pddl paths
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (folder, reason)

    def skipped_counts(self) -> Counter:
        return Counter(reason.split(":")[0] for _, reason in self.skipped)


def _read_json(path: Path, max_bytes: int) -> dict:
    """The JSON object in `path`, read as untrusted input: only from a regular file, at most
    `max_bytes`, and never blocking (a FIFO would hang a sweep; /dev/zero would never end)."""
    raw = _read_regular_file(path, max_bytes)
    try:
        value = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise GameFileError(path, f"not valid JSON ({error})") from None
    except RecursionError:
        raise GameFileError(path, "not valid JSON (nested too deeply)") from None
    if not isinstance(value, dict):
        raise GameFileError(path, f"expected a JSON object, got {type(value).__name__}")
    return value


def _read_regular_file(path: Path, max_bytes: int) -> bytes:
    """`envs.files.read_regular_file`, its refusals as GameFileError of the kind a sweep reports."""
    try:
        return read_regular_file(path, max_bytes)
    except FileRefused as refused:
        if refused.kind == "missing":
            raise GameFileError(path, "file is missing") from None
        kind = "refused" if refused.kind == "too large" else refused.kind
        raise GameFileError(path, refused.reason, kind=kind) from None


def _game_file(path: str | Path) -> Path:
    path = Path(path)
    return path / GAME_FILE if path.is_dir() else path


def read_task_type(game_file: Path) -> str:
    """Task type from the `traj_data.json` beside a game file ("unknown" if there is none)."""
    traj_path = game_file.parent / TRAJ_FILE
    if not traj_path.exists():
        return "unknown"
    task_type = _read_json(traj_path, MAX_TRAJ_FILE_BYTES).get("task_type")
    if not isinstance(task_type, str):
        raise GameFileError(traj_path, "has no string 'task_type'")
    return task_type


def read_task_params(game_file: str | Path) -> dict[str, str]:
    """The task's parameters (object_target, parent_target, toggle_target, ...) from the
    `traj_data.json` beside a game file, as strings; GameFileError when the file or its
    `pddl_params` object is missing."""
    traj_path = _game_file(game_file).parent / TRAJ_FILE
    if not traj_path.exists():
        raise GameFileError(traj_path, "file is missing (the task's parameters are read from it)")
    params = _read_json(traj_path, MAX_TRAJ_FILE_BYTES).get("pddl_params")
    if not isinstance(params, dict):
        raise GameFileError(traj_path, "has no 'pddl_params' object")
    return {str(key): str(value) for key, value in params.items() if isinstance(value, str)}


def load_game(path: str | Path, trust_game_files: bool = False) -> Game:
    """Read and validate one game (a game folder or its `game.tw-pddl`).

    Raises GameFileError naming the file when it is unreadable, malformed, incomplete, breaks a
    bound of `envs.validation`, or (unless `trust_game_files`) carries a grammar or domain other
    than alfworld's.
    """
    check_trust(trust_game_files)
    game_file = _game_file(path)
    data = _read_json(game_file, MAX_GAME_FILE_BYTES)
    task = _validated_task(game_file, data, trust_game_files)
    return Game(path=str(game_file), task_type=read_task_type(game_file), task=task, data=data)


def check_trust(trust_game_files: object) -> None:
    """Refuse a `trust_game_files` that is not a bool."""
    if type(trust_game_files) is not bool:  # "no" or "false" would be truthy and switch the gate off
        raise TypeError(f"trust_game_files: expected True or False, got {trust_game_files!r}")


def _validated_task(game_file: Path, data: dict, trust_game_files: bool) -> str:
    """The task sentence of a parsed game file that passes the validator, or GameFileError."""
    missing = [key for key in _GAME_KEYS if not isinstance(data.get(key), str)]
    if missing:
        raise GameFileError(game_file, f"missing or non-text keys {missing}; expected {list(_GAME_KEYS)}")
    try:
        return validate_game(data, trust_game_files)
    except GameBoundsError as error:
        raise GameFileError(game_file, f"refused: {error}", kind="refused") from None
    except UnsafeGameError as error:
        hint = "Pass trust_game_files=True only for files you trust."
        raise GameFileError(game_file, f"refused: {error}. {hint}", kind="refused") from None


def _skip_reason(folder: Path, root: Path, task_types: Iterable[str], trust_game_files: bool) -> str | None:
    """Why this trajectory folder is skipped (None: keep it): alfworld's own loader's reasons,
    then the validator's, so that a sweep never hands a refused game to the engine.

    alfworld tests the absolute path for "movable" and "Sliced"; we test the part below the
    sweep root, so that a user's own folder names cannot hide all of their games.
    """
    relative = str(folder.relative_to(root))
    if "movable" in relative or "Sliced" in relative:
        return "unsupported: movable receptacles or sliced objects"
    traj = _read_json(folder / TRAJ_FILE, MAX_TRAJ_FILE_BYTES)
    if traj.get("task_type") not in task_types:
        return f"unknown task type: {traj.get('task_type')!r}"
    game_file = folder / GAME_FILE
    if not game_file.exists():
        return f"missing {GAME_FILE}: {game_file}"
    game = _read_json(game_file, MAX_GAME_FILE_BYTES)
    _validated_task(game_file, game, trust_game_files)
    if "solvable" not in game:
        return f"not checked for solvability: {game_file} has no 'solvable' key"
    if not game["solvable"]:
        return f"unsolvable: {game_file}"
    return None


def scan_games(root: str | Path, task_types: Iterable[str] = TASK_TYPES, trust_game_files: bool = False) -> GameScan:
    """Every playable game under `root`, sorted, plus the folders skipped and why.

    Malformed, unreadable and refused folders are skipped and reported, never fatal: one broken
    download or crafted game must not stop a sweep over thousands of games. Each game passes the
    validator (`envs.validation`, with `trust_game_files` as load_game takes it). Links to folders
    are reported and not followed, so that a link loop cannot trap the sweep.
    """
    check_trust(trust_game_files)
    root = Path(root)
    if not root.is_dir():
        raise MissingDataError(f"games folder {root} does not exist")
    task_types = tuple(task_types)
    scan = GameScan()

    def unlisted(error: OSError) -> None:
        scan.skipped.append((str(error.filename), f"unreadable: cannot list the folder ({error.strerror or error})"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unlisted):
        folder = Path(dirpath)
        scan.skipped += [
            (str(folder / name), "not followed: a link to a folder")
            for name in dirnames
            if name not in (TRAJ_FILE, GAME_FILE) and (folder / name).is_symlink()
        ]
        if TRAJ_FILE not in filenames and TRAJ_FILE not in dirnames:
            continue
        try:
            reason = _skip_reason(folder, root, task_types, trust_game_files)
        except GameFileError as error:
            reason = error.skip_reason()
        if reason is None:
            scan.games.append(str(folder / GAME_FILE))
        else:
            scan.skipped.append((str(folder), reason))
    scan.games.sort()
    scan.skipped.sort()
    return scan


def alfworld_data_dir() -> Path:
    """`$ALFWORLD_DATA`, or alfworld's default cache folder when unset."""
    return Path(os.environ.get("ALFWORLD_DATA") or Path.home() / ".cache" / "alfworld")


def official_split_dir(split: str, data_dir: str | Path | None = None) -> Path:
    """The folder of an official split, or an error that says how to get the data."""
    if split not in OFFICIAL_SPLITS:
        raise ValueError(f"expected an official split in {list(OFFICIAL_SPLITS)}, got {split!r}")
    data_dir = Path(data_dir) if data_dir is not None else alfworld_data_dir()
    folder = data_dir / OFFICIAL_SUBDIR / split
    if not folder.is_dir():
        raise MissingDataError(
            f"official ALFWorld split {split!r} not found at {folder}. Download the data with "
            "`alfworld-download` (needs network; it fills $ALFWORLD_DATA, default "
            "~/.cache/alfworld) and set ALFWORLD_DATA to that folder, or generate games instead "
            "with `holderpo games generate --out DIR` and pass that folder."
        )
    return folder


def official_splits_present(data_dir: str | Path | None = None) -> dict[str, bool]:
    """Which official splits are on disk (for `holderpo doctor`)."""
    data_dir = Path(data_dir) if data_dir is not None else alfworld_data_dir()
    return {split: (data_dir / OFFICIAL_SUBDIR / split).is_dir() for split in OFFICIAL_SPLITS}


def find_games(source: str | Path | Iterable[str | Path], trust_game_files: bool = False) -> GameScan:
    """Game files from a source: `official:<split>`, a folder to sweep, a game file or a list,
    with every entry skipped and why (for the commands to report).

    The games are sorted; raises MissingDataError when the source holds no playable game.
    Sweeps validate every game (see `scan_games`), and so is a game named alone: one that is no
    game (say /etc/passwd) is refused here with its reason, not played as an errored episode. The
    games of a list are validated when loaded.
    """
    if isinstance(source, (str, Path)):
        text = str(source)
        if text.startswith("official:"):
            scan = scan_games(official_split_dir(text.split(":", 1)[1]), trust_game_files=trust_game_files)
        elif Path(text).is_file() or (Path(text) / GAME_FILE).is_file():
            scan = GameScan(games=[_named_game(text, trust_game_files)])
        else:
            scan = scan_games(text, trust_game_files=trust_game_files)
    else:
        scan = GameScan(games=sorted(str(_game_file(p)) for p in source))
    if not scan.games:
        raise MissingDataError(
            f"no playable games in {source}: expected folders holding {TRAJ_FILE} and a solvable "
            f"{GAME_FILE} (generate some with `holderpo games generate --out DIR`)"
        )
    return scan


def _named_game(path: str, trust_game_files: bool) -> str:
    """The game file of a game named on its own, validated; GameFileError saying what a game is."""
    try:
        return load_game(path, trust_game_files).path
    except GameFileError as error:
        raise GameFileError(
            path,
            f"not a game ({error.reason}). A game is a folder holding {TRAJ_FILE} and {GAME_FILE} "
            f"(or that {GAME_FILE}); a games source may also be a folder of games or official:<split>",
            kind=error.kind,
        ) from None


def resolve_games(source: str | Path | Iterable[str | Path], trust_game_files: bool = False) -> list[str]:
    """The sorted game files of a source (see `find_games`, which also says what was skipped)."""
    return find_games(source, trust_game_files).games
