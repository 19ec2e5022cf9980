"""Sampling a task and a scene for it from one ALFRED floor plan, at one of three sizes.

A scene keeps a subset of the floor plan's receptacles (always those the task needs), puts the
target object(s) and some distractors in receptacles that ALFRED allows to hold them, and
starts the agent on a free floor point. Everything is drawn from the `random.Random` passed in,
so a scene is a pure function of the floor plan, task type, size and rng state.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TypeVar

from alfworld.gen import constants

from envs.generator import vocabulary as vocab

# Grid step of ALFRED's navigation points, in metres: locations are named in these units.
GRID = 0.25


@dataclass(frozen=True)
class SizeSpec:
    """How big a scene is. Ranges are inclusive (lo, hi)."""

    receptacles: tuple[int, int]
    distractors: tuple[int, int]  # object instances that are not the target
    copies: tuple[int, int]  # instances of the target class (pick_two needs one more)
    plain_sight: float  # chance that a target starts on a receptacle that does not open


SIZES: dict[str, SizeSpec] = {
    # For small models and CPU learning: few places to look, the object mostly in plain sight.
    "tiny": SizeSpec(receptacles=(2, 6), distractors=(0, 2), copies=(1, 1), plain_sight=0.8),
    "small": SizeSpec(receptacles=(6, 10), distractors=(2, 6), copies=(1, 2), plain_sight=0.5),
    # Like the official games: 10-30 of the room's receptacles (all of them in the few rooms
    # with fewer), closed cabinets and drawers, 10-25 objects.
    "alfworld": SizeSpec(receptacles=(10, 30), distractors=(8, 22), copies=(1, 3), plain_sight=0.0),
}

Location = tuple[int, int, int, int]  # ALFRED's loc_bar_X_bar_Z_bar_R_bar_H in grid units
R = TypeVar("R", vocab.ReceptacleSpot, "Receptacle")


@dataclass(frozen=True)
class Task:
    """ALFRED's pddl_params: class names, "" where the task type has no such slot."""

    task_type: str
    object_target: str
    parent_target: str = ""
    toggle_target: str = ""


@dataclass(frozen=True)
class Receptacle:
    alfred_id: str
    cls: str
    location: Location


@dataclass(frozen=True)
class Thing:
    """An object instance and the receptacle (ALFRED id) it starts in."""

    alfred_id: str
    cls: str
    receptacle: str


@dataclass(frozen=True)
class Scene:
    floor_plan: vocab.FloorPlan
    task: Task
    receptacles: tuple[Receptacle, ...]
    things: tuple[Thing, ...]
    agent_location: Location

    def location_of(self, receptacle_id: str) -> Location:
        return next(r.location for r in self.receptacles if r.alfred_id == receptacle_id)


def task_options(plan: vocab.FloorPlan, task_type: str) -> list[Task]:
    """Every task of `task_type` this floor plan can host; empty when its room type cannot.

    A pick task needs a parent that can hold the object and a second receptacle class that can
    hold it too, so that the object does not start where the goal wants it.
    """
    if plan.room_type not in constants.GOALS_VALID[task_type]:
        return []
    receptacles = plan.receptacle_classes()
    objects = sorted(plan.object_classes - vocab.TOGGLEABLE)
    if task_type == "look_at_obj_in_light":
        if vocab.LAMP not in plan.object_classes or not receptacles & set(vocab.LAMP_SURFACES):
            return []
        return [Task(task_type, obj, toggle_target=vocab.LAMP) for obj in objects if vocab.holders(obj) & receptacles]
    tool = vocab.TOOL_RECEPTACLE.get(task_type)
    if tool is not None and tool not in receptacles:
        return []
    options = []
    for obj in objects:
        if tool is not None and not vocab.has_property(obj, vocab.TOOL_PROPERTY[task_type]):
            continue
        holding = vocab.holders(obj) & receptacles
        for parent in sorted(holding - {tool}):
            if holding - {parent}:
                options.append(Task(task_type, obj, parent_target=parent))
    return options


def sample_scene(plan: vocab.FloorPlan, task: Task, size: str, rng: random.Random) -> Scene:
    """Draw the receptacles, objects and start of one scene for `task` in `plan`."""
    spec = SIZES[size]
    spots = _choose_receptacles(plan, task, spec, rng)
    receptacles = _locate(spots)
    used = {r.location for r in receptacles}
    start = _free_location(_start_location(plan, rng), used)
    things = _place_things(plan, task, spec, receptacles, rng)
    return Scene(plan, task, tuple(sorted(receptacles, key=lambda r: r.alfred_id)), things, start)


def _choose_receptacles(
    plan: vocab.FloorPlan, task: Task, spec: SizeSpec, rng: random.Random
) -> list[vocab.ReceptacleSpot]:
    """The task's receptacles first (parent, tool, lamp surface, a source), then random others."""
    pool = list(plan.receptacles)
    chosen: list[vocab.ReceptacleSpot] = []

    def take(classes: set[str] | frozenset[str], plain_sight: float = 0.0) -> None:
        spot = _choose([s for s in pool if s.cls in classes], plain_sight, rng)
        pool.remove(spot)
        chosen.append(spot)

    if task.parent_target:
        take({task.parent_target})
    tool = vocab.TOOL_RECEPTACLE.get(task.task_type)
    if tool is not None:
        take({tool})
    if task.toggle_target:
        take(set(vocab.LAMP_SURFACES))
    if not any(_is_source(s.cls, task) for s in chosen):
        take({c for c in plan.receptacle_classes() if _is_source(c, task)}, spec.plain_sight)

    lo, hi = spec.receptacles
    wanted = max(len(chosen), min(rng.randint(lo, hi), len(chosen) + len(pool)))
    return chosen + rng.sample(pool, wanted - len(chosen))


def _choose(receptacles: list[R], plain_sight: float, rng: random.Random) -> R:
    """One of `receptacles`; with chance `plain_sight`, one that does not open (if there is one)."""
    plain = [r for r in receptacles if r.cls not in vocab.OPENABLE]
    return rng.choice(plain if plain and rng.random() < plain_sight else receptacles)


def _is_source(receptacle_cls: str, task: Task) -> bool:
    """Where a target may start: a receptacle that holds it and is not the goal's."""
    return receptacle_cls != task.parent_target and vocab.can_hold(receptacle_cls, task.object_target)


def _place_things(
    plan: vocab.FloorPlan, task: Task, spec: SizeSpec, receptacles: list[Receptacle], rng: random.Random
) -> tuple[Thing, ...]:
    placements: list[tuple[str, Receptacle]] = []
    sources = [r for r in receptacles if _is_source(r.cls, task)]
    copies = rng.randint(*spec.copies) + (task.task_type == "pick_two_obj_and_place")
    for _ in range(copies):
        placements.append((task.object_target, _choose(sources, spec.plain_sight, rng)))
    if task.toggle_target:
        surfaces = [r for r in receptacles if r.cls in vocab.LAMP_SURFACES]
        placements.append((task.toggle_target, rng.choice(surfaces)))

    others = sorted(
        cls
        for cls in plan.object_classes - vocab.TOGGLEABLE - {task.object_target}
        if any(vocab.can_hold(r.cls, cls) for r in receptacles)
    )
    for _ in range(rng.randint(*spec.distractors) if others else 0):
        cls = rng.choice(others)
        placements.append((cls, rng.choice([r for r in receptacles if vocab.can_hold(r.cls, cls)])))

    ids: set[str] = set()
    return tuple(Thing(_object_id(cls, r.alfred_id, ids, rng), cls, r.alfred_id) for cls, r in placements)


def _object_id(cls: str, receptacle_id: str, taken: set[str], rng: random.Random) -> str:
    """An ALFRED-style id near its receptacle (ALFRED ids are class|x|y|z), unique in the scene."""
    x, y, z = (float(v) for v in receptacle_id.split("|")[1:4])
    while True:
        coords = (x + rng.uniform(-0.3, 0.3), y + rng.uniform(0.0, 0.1), z + rng.uniform(-0.3, 0.3))
        alfred_id = "|".join([cls, *(vocab.format_coordinate(c) for c in coords)])
        if alfred_id not in taken:
            taken.add(alfred_id)
            return alfred_id


def _locate(spots: list[vocab.ReceptacleSpot]) -> list[Receptacle]:
    """Receptacles with locations; two never share one, so every `go to` names one receptacle."""
    used: set[Location] = set()
    located = []
    for spot in sorted(spots, key=lambda s: s.alfred_id):
        x, z, rotation, horizon = spot.pose
        location = _free_location((round(x / GRID), round(z / GRID), rotation // 90 % 4, horizon), used)
        used.add(location)
        located.append(Receptacle(spot.alfred_id, spot.cls, location))
    return located


def _start_location(plan: vocab.FloorPlan, rng: random.Random) -> Location:
    x, z = rng.choice(plan.floor_points)
    return (round(x / GRID), round(z / GRID), rng.randrange(4), 30)


def _free_location(location: Location, used: set[Location]) -> Location:
    """Step one grid cell along x until the location is not taken."""
    x, z, rotation, horizon = location
    while (x, z, rotation, horizon) in used:
        x += 1
    return (x, z, rotation, horizon)
