"""`generate_games`: a folder of verified ALFWorld games, reproducible from a seed.

Game i of a run is a pure function of (seed, split, size, its task type, i): it draws from its
own rng, so the output does not depend on `workers` or on how many candidates other games
needed. Task types take turns in ALFWorld's order (game i gets the (i mod k)-th of the k asked
for). A candidate scene is kept when the handcoded expert (`envs.expert`) wins it within 50
steps under five seeds; every `planner_every`-th game must also be won by the planner expert.
Rejected candidates are counted per task type.

    from envs.generator import generate_games
    report = generate_games("games/", num=60, seed=0, split="train", size="tiny")
"""

from __future__ import annotations

import contextlib
import functools
import json
import random
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from envs.generator import pddl, scene, vocabulary, writer
from envs.generator.verify import Verifier

# Candidates tried per game before giving up; the experts reject a few percent at most.
MAX_CANDIDATES = 50
# A candidate is kept only when the expert (`envs.expert`, alfworld's handcoded expert with its
# put-tracking mended) wins it within the standard 50-step episode limit, under the candidate's
# own seed and under RELIABILITY_SEEDS more: the expert still breaks ties at random, and every
# stored walkthrough, and the expert baseline under an evaluation's own seeds, must win within
# the limit an agent gets (a demonstration longer than that teaches a warm start to wander).
RELIABILITY_SEEDS = 4
RELIABLE_STEPS = 50
# Written into each game's traj_data.json (generator.version). 2: the mended expert and the
# 50-step rule above; games without a version came from the stock expert, whose pick_two
# walkthroughs wander (`outdated_games` finds them).
GENERATOR_VERSION = 2


@dataclass
class GenerationReport:
    """What a run wrote and what it rejected."""

    out_dir: Path
    split: str
    size: str
    seed: int
    games: int = 0
    games_per_task: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)  # candidates the experts did not win
    planner_checked: int = 0  # games also played by the planner expert
    planner_disagreed: int = 0  # candidates the handcoded expert won and the planner did not
    solution_lengths: dict[str, list[int]] = field(default_factory=dict)  # stored walkthroughs
    paths: list[Path] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True)
class GameSpec:
    seed: int
    split: str
    size: str
    task_type: str
    index: int
    check_planner: bool


@dataclass(frozen=True)
class BuiltGame:
    spec: GameSpec
    folder: str  # <task folder>/<trial folder>, relative to the split folder
    files: dict[str, bytes]
    walkthrough: list[str]
    rejected: int
    planner_disagreed: int


def generate_games(
    out_dir: str | Path,
    num: int,
    seed: int,
    task_types: Sequence[str] | None = None,
    split: str = "train",
    size: str = "tiny",
    overwrite: bool = False,
    workers: int = 1,
    planner_every: int = 10,
) -> GenerationReport:
    """Write `num` verified games to `out_dir/split/<task folder>/<trial folder>/`.

    Args:
        out_dir: root folder; only its `split` subfolder is written.
        num: number of games, at least 1.
        seed: the same seed (and arguments) gives the same bytes in every file.
        task_types: subset of `vocabulary.TASK_TYPES`; None means all six.
        split: "train", "valid" or "test"; each draws from its own ALFRED floor plans.
        size: "tiny", "small" or "alfworld" (see `scene.SIZES`).
        overwrite: if `out_dir/split` already holds games, delete that folder instead of refusing.
        workers: processes building games in parallel (the output is the same for any value).
        planner_every: cross-check game i with the planner expert when i % planner_every == 0;
            0 turns the cross-check off.

    Raises:
        ValueError: bad arguments. FileExistsError: games already there and not `overwrite`.
        OSError: a game folder could not be written (nothing partial is left; the message says
            how many games were complete).
    """
    chosen = _check_arguments(num, task_types, split, size, workers, planner_every)
    started = time.perf_counter()
    split_dir = writer.prepare_split_folder(Path(out_dir), split, overwrite)
    report = GenerationReport(
        Path(out_dir),
        split,
        size,
        seed,
        games_per_task=dict.fromkeys(chosen, 0),
        rejected=dict.fromkeys(chosen, 0),
        solution_lengths={t: [] for t in chosen},
    )
    specs = [
        GameSpec(seed, split, size, chosen[i % len(chosen)], i, planner_every > 0 and i % planner_every == 0)
        for i in range(num)
    ]
    with _building(workers) as build_all:
        for game in build_all(specs):
            final_dir = split_dir / game.folder
            try:
                writer.write_game(final_dir, game.files)
            except OSError as exc:
                raise OSError(
                    exc.errno,
                    f"could not write game folder {final_dir} ({exc.strerror or exc}); nothing of it is "
                    f"left on disk and the {report.games} games written before it under {split_dir} are "
                    "complete. Free some space and rerun with --overwrite.",
                ) from exc
            _record(report, game, final_dir)
    report.seconds = time.perf_counter() - started
    return report


def _check_arguments(
    num: int, task_types: Sequence[str] | None, split: str, size: str, workers: int, planner_every: int
) -> tuple[str, ...]:
    """Validate the arguments; return the task types in ALFWorld's order."""
    if not isinstance(num, int) or num < 1:
        raise ValueError(f"expected num >= 1, got {num!r}; ask for at least one game")
    if size not in scene.SIZES:
        raise ValueError(f"expected size in {list(scene.SIZES)}, got {size!r}")
    if split not in vocabulary.SPLITS:
        raise ValueError(f"expected split in {list(vocabulary.SPLITS)}, got {split!r}")
    if workers < 1 or planner_every < 0:
        raise ValueError(f"expected workers >= 1 and planner_every >= 0, got {workers} and {planner_every}")
    if task_types is None:
        return vocabulary.TASK_TYPES
    if isinstance(task_types, str):
        task_types = [task_types]
    unknown = sorted(set(task_types) - set(vocabulary.TASK_TYPES))
    if unknown or not task_types:
        raise ValueError(
            f"expected task types among {list(vocabulary.TASK_TYPES)}, got {unknown or 'none'}; "
            "leave them out to generate all six"
        )
    for task_type in task_types:
        if not eligible_floor_plans(split, task_type):
            raise ValueError(f"expected a task type that split {split!r} can host, got {task_type!r}")
    return tuple(t for t in vocabulary.TASK_TYPES if t in task_types)


@functools.cache
def eligible_floor_plans(split: str, task_type: str) -> tuple[vocabulary.FloorPlan, ...]:
    """The split's floor plans that can host at least one task of `task_type`."""
    plans = (vocabulary.load_floor_plan(n) for n in vocabulary.split_floor_plans(split))
    return tuple(p for p in plans if scene.task_options(p, task_type))


class GameBuilder:
    """Draws candidate scenes for one game until the experts accept one."""

    def __init__(self, scratch: Path) -> None:
        self._verifier = Verifier()
        self._scratch = scratch  # the handcoded expert reads traj_data.json next to the game file

    def build(self, spec: GameSpec) -> BuiltGame:
        rng = random.Random(f"holderpo-games|{spec.seed}|{spec.split}|{spec.size}|{spec.index}")
        plans = eligible_floor_plans(spec.split, spec.task_type)
        rejected = disagreed = 0
        for _ in range(MAX_CANDIDATES):
            plan = rng.choice(plans)
            candidate = scene.sample_scene(plan, rng.choice(scene.task_options(plan, spec.task_type)), spec.size, rng)
            folder, traj, problem, grammar = _game_texts(candidate, spec, rng)
            game_file = self._stage(traj, problem, grammar)
            walkthrough = self._verifier.handcoded_walkthrough(game_file, rng.getrandbits(32))
            if walkthrough is not None:
                seeds = [rng.getrandbits(32) for _ in range(RELIABILITY_SEEDS)]
                if len(walkthrough) > RELIABLE_STEPS or not self._verifier.reliably_wins(
                    game_file, seeds, RELIABLE_STEPS
                ):
                    walkthrough = None
            if walkthrough is not None and spec.check_planner and not self._verifier.planner_solves(game_file):
                disagreed += 1
                walkthrough = None
            if walkthrough is None:
                rejected += 1
                continue
            files = {
                "traj_data.json": traj.encode(),
                "initial_state.pddl": problem.encode(),
                "game.tw-pddl": _game_json(problem, grammar, walkthrough).encode(),
            }
            return BuiltGame(spec, folder, files, walkthrough, rejected, disagreed)
        raise RuntimeError(
            f"no {spec.task_type} game that alfworld's experts win in {MAX_CANDIDATES} candidates "
            f"(game {spec.index}, size {spec.size}, split {spec.split}); try another seed"
        )

    def _stage(self, traj: str, problem: str, grammar: str) -> Path:
        (self._scratch / "traj_data.json").write_text(traj)
        game_file = self._scratch / "game.tw-pddl"
        game_file.write_text(_game_json(problem, grammar, None))
        return game_file


def _game_texts(candidate: scene.Scene, spec: GameSpec, rng: random.Random) -> tuple[str, str, str, str]:
    """(folder, traj_data.json, initial_state.pddl, grammar) of a candidate."""
    trial = _trial_name(spec.index, rng)
    sentence = pddl.task_sentence(candidate.task, rng)
    info = {
        "name": "holderpo",
        "version": GENERATOR_VERSION,
        "seed": spec.seed,
        "split": spec.split,
        "size": spec.size,
        "index": spec.index,
    }
    traj = json.dumps(pddl.traj_data(candidate, trial, sentence, info), indent=2) + "\n"
    folder = f"{pddl.task_folder_name(candidate)}/{trial}"
    return folder, traj, pddl.problem_text(candidate, f"plan_{trial}"), pddl.grammar_text(sentence)


def _trial_name(index: int, rng: random.Random) -> str:
    """ALFRED's trial_T<yyyymmdd>_<hhmmss>_<6 digits>: a drawn date, the game index last (unique)."""
    date = f"{rng.randint(2020, 2029)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    clock = f"{rng.randrange(24):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}"
    return f"trial_T{date}_{clock}_{index:06d}"


def _game_json(problem: str, grammar: str, walkthrough: list[str] | None) -> str:
    """game.tw-pddl, with the keys and JSON layout that alfworld-generate writes."""
    return json.dumps(
        {
            "pddl_domain": pddl.domain_text(),
            "grammar": grammar,
            "pddl_problem": problem,
            "solvable": walkthrough is not None,
            "walkthrough": walkthrough,
        }
    )


def _record(report: GenerationReport, game: BuiltGame, final_dir: Path) -> None:
    task_type = game.spec.task_type
    report.games += 1
    report.games_per_task[task_type] += 1
    report.rejected[task_type] += game.rejected
    report.planner_checked += game.spec.check_planner
    report.planner_disagreed += game.planner_disagreed
    report.solution_lengths[task_type].append(len(game.walkthrough))
    report.paths.append(final_dir)


Build = Callable[[Iterable[GameSpec]], Iterator[BuiltGame]]


@contextlib.contextmanager
def _building(workers: int) -> Iterator[Build]:
    """A function that builds games in spec order, here or in `workers` processes."""
    if workers == 1:
        with tempfile.TemporaryDirectory(prefix="holderpo-verify-") as scratch:
            yield functools.partial(map, GameBuilder(Path(scratch)).build)
        return
    executor = ProcessPoolExecutor(max_workers=workers, initializer=_start_worker)
    try:
        yield functools.partial(executor.map, _build_in_worker)
    finally:
        executor.shutdown(cancel_futures=True)


_worker: GameBuilder | None = None
_worker_scratch: tempfile.TemporaryDirectory | None = None


def _start_worker() -> None:
    global _worker, _worker_scratch
    _worker_scratch = tempfile.TemporaryDirectory(prefix="holderpo-verify-")
    _worker = GameBuilder(Path(_worker_scratch.name))


def _build_in_worker(spec: GameSpec) -> BuiltGame:
    assert _worker is not None, "worker process was started without _start_worker"
    return _worker.build(spec)


def outdated_games(folder: str | Path) -> int:
    """How many games under `folder` an earlier version of this generator made (official and
    other games are not counted): regenerate them to get the current walkthroughs."""
    outdated = 0
    for traj_file in Path(folder).rglob("traj_data.json"):
        try:
            info = json.loads(traj_file.read_text()).get("generator")
        except (OSError, ValueError):
            continue  # unreadable: the game loader reports it
        if isinstance(info, dict) and info.get("name") == "holderpo":
            outdated += info.get("version", 1) != GENERATOR_VERSION
    return outdated
