"""What exists where in an ALFRED room, read from alfworld's own tables (nothing is copied).

Two sources, both shipped inside the alfworld package:
- `alfworld.gen.constants`: which room types host which task (`GOALS_VALID`), which receptacle
  class can hold which object class (`VAL_RECEPTACLE_OBJECTS`), which classes are cleanable,
  heatable, coolable, toggleable (`VAL_ACTION_OBJECTS`), which receptacles open
  (`OPENABLE_CLASS_LIST`), and the floor-plan numbers of each room type (`SCENE_TYPE`,
  `TEST_SCENE_NUMBERS`).
- `alfworld/gen/layouts/FloorPlan<N>-*`: per ALFRED floor plan, the object classes present
  (`-objects.json`), the receptacle instances with their ALFRED ids and interaction poses
  (`-openable.json`), and the reachable floor points (`-layout.npy`).

A generated scene is always a (sub)set of one real floor plan, so "scene" means floor plan and
splits are kept apart by giving each split its own floor plans (see `split_floor_plans`).
"""

from __future__ import annotations

import functools
import json
import math
import random
from dataclasses import dataclass
from importlib import resources

import numpy as np
from alfworld.gen import constants

from envs import games

# ALFWorld's six task types, in its numbering (ALFRED's movable-receptacle task is left out).
TASK_TYPES = games.TASK_TYPES
SPLITS = ("train", "valid", "test")

# The receptacle a task's middle step needs; the domain's Clean/Heat/CoolObject actions name them.
TOOL_RECEPTACLE = {
    "pick_clean_then_place_in_recep": "SinkBasin",
    "pick_heat_then_place_in_recep": "Microwave",
    "pick_cool_then_place_in_recep": "Fridge",
}
# The VAL_ACTION_OBJECTS entry saying which object classes that middle step accepts.
TOOL_PROPERTY = {
    "pick_clean_then_place_in_recep": "Cleanable",
    "pick_heat_then_place_in_recep": "Heatable",
    "pick_cool_then_place_in_recep": "Coolable",
}
LAMP = "DeskLamp"
# The domain's look_at goal needs the lamp *in* a receptacle, and no VAL_RECEPTACLE_OBJECTS entry
# lists lamps (official FloorLamp games are unsolvable for that reason), so desk lamps stand on
# the furniture ALFRED puts them on.
LAMP_SURFACES = ("Desk", "Dresser", "SideTable")
# ALFRED's valid_unseen rooms; they stay out of our train split so that official unseen
# evaluation remains unseen after training on generated games.
ALFWORLD_VALID_UNSEEN = (10, 219, 308, 424)
# Instances to place for a receptacle class that -objects.json names but -openable.json does not
# place (CoffeeMachine, GarbageCan, StoveBurner, Toaster...): one, but ALFRED kitchens have four burners.
EXTRA_INSTANCES = {"StoveBurner": 4}

STATIC_RECEPTACLES = frozenset(constants.VAL_RECEPTACLE_OBJECTS) - set(constants.MOVABLE_RECEPTACLES)
PICKUPABLE = frozenset(obj for objs in constants.VAL_RECEPTACLE_OBJECTS.values() for obj in objs if "Sliced" not in obj)
OPENABLE = frozenset(constants.OPENABLE_CLASS_SET)
TOGGLEABLE = frozenset(constants.VAL_ACTION_OBJECTS["Toggleable"])
MOVABLE_RECEPTACLES = frozenset(constants.MOVABLE_RECEPTACLES)


@dataclass(frozen=True)
class ReceptacleSpot:
    """One receptacle instance of a floor plan: ALFRED id, class and where the agent stands."""

    alfred_id: str  # e.g. "Cabinet|+00.68|+00.50|-02.20" or "Sink|-01.90|+00.97|-01.50|SinkBasin"
    cls: str
    pose: tuple[float, float, int, int]  # where the agent stands: (x, z, rotation, horizon)


@dataclass(frozen=True)
class FloorPlan:
    """The parts of one ALFRED floor plan that a text game can use."""

    number: int
    room_type: str
    object_classes: frozenset[str]  # pickupable classes present in the room
    receptacles: tuple[ReceptacleSpot, ...]
    floor_points: tuple[tuple[float, float], ...]  # reachable (x, z) points

    @property
    def name(self) -> str:
        return f"FloorPlan{self.number}"

    def receptacle_classes(self) -> frozenset[str]:
        return frozenset(spot.cls for spot in self.receptacles)


def holders(obj_cls: str) -> frozenset[str]:
    """Static receptacle classes that may hold `obj_cls` (ALFRED's placement rules)."""
    return frozenset(r for r in STATIC_RECEPTACLES if obj_cls in constants.VAL_RECEPTACLE_OBJECTS[r])


def can_hold(receptacle_cls: str, obj_cls: str) -> bool:
    return obj_cls in constants.VAL_RECEPTACLE_OBJECTS.get(receptacle_cls, ())


def has_property(obj_cls: str, prop: str) -> bool:
    """`prop` is a VAL_ACTION_OBJECTS key: Cleanable, Heatable, Coolable, Toggleable."""
    return obj_cls in constants.VAL_ACTION_OBJECTS[prop]


def room_type(number: int) -> str:
    for name, numbers in constants.SCENE_TYPE.items():
        if number in numbers:
            return name
    raise ValueError(f"expected an ALFRED floor plan number in {dict(constants.SCENE_TYPE)}, got {number}")


def split_floor_plans(split: str) -> tuple[int, ...]:
    """Floor plans of a split; the three sets are disjoint, so splits never share a scene.

    test: ALFRED's test rooms (1-6 of each room type). valid: ALFWorld's valid_unseen rooms plus
    rooms 7 and 8 of each type. train: every other ALFRED training room.
    """
    valid = sorted(set(ALFWORLD_VALID_UNSEEN) | {n for n in constants.TRAIN_SCENE_NUMBERS if n % 100 in (7, 8)})
    plans = {
        "test": sorted(constants.TEST_SCENE_NUMBERS),
        "valid": valid,
        "train": [n for n in sorted(constants.TRAIN_SCENE_NUMBERS) if n not in valid],
    }
    if split not in plans:
        raise ValueError(f"expected split in {list(SPLITS)}, got {split!r}")
    return tuple(plans[split])


def alfred_class(alfred_id: str) -> str:
    """`Sink|x|y|z|SinkBasin` is a SinkBasin; any other id starts with its class."""
    parts = alfred_id.split("|")
    return parts[4] if len(parts) == 5 else parts[0]


@functools.cache
def load_floor_plan(number: int) -> FloorPlan:
    """Read one floor plan's layout files (cached: they never change)."""
    layouts = resources.files("alfworld.gen") / "layouts"
    present = json.loads((layouts / f"FloorPlan{number}-objects.json").read_text())
    openable = json.loads((layouts / f"FloorPlan{number}-openable.json").read_text())
    with (layouts / f"FloorPlan{number}-layout.npy").open("rb") as f:
        points = tuple((float(x), float(z)) for x, z in np.load(f))

    spots = [
        ReceptacleSpot(rid, alfred_class(rid), (float(p[0]), float(p[1]), int(p[2]), int(p[3])))
        for rid, p in sorted(openable.items())
        if alfred_class(rid) in STATIC_RECEPTACLES
    ]
    # A fixed per-plan rng places the receptacles the layouts list without an instance, so that
    # a floor plan always has the same receptacles whatever the seed of a generation run.
    rng = random.Random(f"FloorPlan{number}")
    listed = {spot.cls for spot in spots}
    for cls in sorted(set(present) & STATIC_RECEPTACLES - listed):
        for _ in range(EXTRA_INSTANCES.get(cls, 1)):
            spot = _placed_spot(cls, rng.choice(points), rng)
            while spot.alfred_id in {s.alfred_id for s in spots}:
                spot = _placed_spot(cls, rng.choice(points), rng)
            spots.append(spot)
    return FloorPlan(
        number=number,
        room_type=room_type(number),
        object_classes=frozenset(present) & (PICKUPABLE | TOGGLEABLE),
        receptacles=tuple(spots),
        floor_points=points,
    )


def format_coordinate(value: float) -> str:
    """ALFRED writes coordinates with a sign, two integer digits and two decimals: `-01.20`."""
    return f"{round(value, 2) + 0.0:+06.2f}"


def _placed_spot(cls: str, point: tuple[float, float], rng: random.Random) -> ReceptacleSpot:
    """A receptacle half a metre in front of a floor point, facing one of four directions."""
    rotation = rng.choice((0, 90, 180, 270))
    x = point[0] + 0.5 * math.sin(math.radians(rotation))
    z = point[1] + 0.5 * math.cos(math.radians(rotation))
    alfred_id = "|".join([cls, format_coordinate(x), format_coordinate(0.9), format_coordinate(z)])
    return ReceptacleSpot(alfred_id, cls, (point[0], point[1], rotation, 30))
