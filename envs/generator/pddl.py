"""The texts of one game folder: initial_state.pddl, the grammar with its task sentence, traj_data.

Everything follows the official ALFWorld files: instance ids are ALFRED ids mangled the way
ALFRED's PDDL export does (`Apple|+00.10|...` -> `Apple_bar__plus_00_dot_10...`), so that
alfworld's Demangler prints `apple 1`, `sinkbasin 1`; the goal is alfworld's goal library entry;
the grammar is alfworld's `alfred.twl2` with its placeholder replaced by the task sentence.
"""

from __future__ import annotations

import functools
import random
from pathlib import Path

from alfworld.gen.goal_library import gdict
from alfworld.info import ALFRED_PDDL_PATH

from envs.generator import vocabulary as vocab
from envs.generator.scene import Location, Scene, Task
from envs.safety import GOAL_PLACEHOLDER, current_grammar

_MANGLE = (("|", "_bar_"), ("+", "_plus_"), ("-", "_minus_"), (".", "_dot_"))
# Types the domain's actions name as constants (CleanObject needs SinkBasinType, SliceObject
# KnifeType...); declaring them keeps every problem well-typed whatever the scene holds.
_DOMAIN_RTYPES = ("Fridge", "Microwave", "SinkBasin")
_DOMAIN_OTYPES = ("ButterKnife", "Knife")
# init predicate -> VAL_ACTION_OBJECTS entry of the classes it holds for
_PROPERTY_FACTS = (
    ("cleanable", "Cleanable"),
    ("heatable", "Heatable"),
    ("coolable", "Coolable"),
    ("toggleable", "Toggleable"),
)


@functools.cache
def domain_text() -> str:
    return Path(ALFRED_PDDL_PATH).read_text()


_grammar_template = functools.cache(current_grammar)  # alfworld's alfred.twl2, read once


def mangle(alfred_id: str) -> str:
    """ALFRED id -> PDDL name, as ALFRED's own PDDL export writes it."""
    for char, word in _MANGLE:
        alfred_id = alfred_id.replace(char, word)
    return alfred_id


def location_name(location: Location) -> str:
    """(3, -9, 1, 45) -> loc_bar_3_bar__minus_9_bar_1_bar_45."""
    return mangle("|".join(["loc", *(str(v) for v in location)]))


def task_sentence(task: Task, rng: random.Random) -> str:
    """Fill one of the goal library's templates, chosen by `rng`.

    alfworld's own `get_templated_task_desc` picks the template with the unseeded module-level
    `random.choice`, which would make generation irreproducible; the filling is the same.
    """
    template = rng.choice(gdict[task.task_type]["templates"])
    return template.format(
        obj=task.object_target.lower(), recep=task.parent_target.lower(), toggle=task.toggle_target.lower(), mrecep=""
    )


def grammar_text(sentence: str) -> str:
    """alfworld's grammar with the task sentence where `UNKNOWN GOAL` stands."""
    assert all(c.isalnum() or c == " " for c in sentence), f"task sentence must be plain words: {sentence!r}"
    return _grammar_template().replace(GOAL_PLACEHOLDER, sentence)


def goal_text(task: Task) -> str:
    """The goal library's PDDL goal for the task; it also closes the `(define` of the problem."""
    pddl = gdict[task.task_type]["pddl"].replace("#", "-")
    return pddl.format(obj=task.object_target, recep=task.parent_target, toggle=task.toggle_target, mrecep="")


def problem_text(scene: Scene, problem_name: str) -> str:
    """initial_state.pddl of a scene, laid out like ALFRED's."""
    task = scene.task
    otypes = sorted({t.cls for t in scene.things} | {task.object_target} | set(_DOMAIN_OTYPES))
    rtypes = sorted({r.cls for r in scene.receptacles} | {task.parent_target} - {""} | set(_DOMAIN_RTYPES))
    locations = [scene.agent_location] + [r.location for r in scene.receptacles]

    objects = ["agent1 - agent"]
    objects += [f"{cls}Type - otype" for cls in otypes]
    objects += [f"{cls}Type - rtype" for cls in rtypes]
    objects += [f"{mangle(t.alfred_id)} - object" for t in scene.things]
    objects += [f"{mangle(r.alfred_id)} - receptacle" for r in scene.receptacles]
    objects += [f"{location_name(loc)} - location" for loc in locations]

    lines = [
        f"(define (problem {problem_name})",
        "(:domain alfred)",
        "(:objects",
        *(f"        {o}" for o in objects),
        "        )",
        "(:init",
        *(f"        {fact}" for fact in _init_facts(scene)),
        "        )",
    ]
    return "\n".join(lines) + goal_text(task)


def _init_facts(scene: Scene) -> list[str]:
    facts = [f"(atLocation agent1 {location_name(scene.agent_location)})"]
    for r in scene.receptacles:
        facts.append(f"(receptacleType {mangle(r.alfred_id)} {r.cls}Type)")
        if r.cls in vocab.OPENABLE:
            facts.append(f"(openable {mangle(r.alfred_id)})")
    for t in scene.things:
        name = mangle(t.alfred_id)
        facts.append(f"(objectType {name} {t.cls}Type)")
        if t.cls in vocab.PICKUPABLE:
            facts.append(f"(pickupable {name})")
        if t.cls in vocab.MOVABLE_RECEPTACLES:
            facts.append(f"(isReceptacleObject {name})")
        facts += [f"({fact} {name})" for fact, prop in _PROPERTY_FACTS if vocab.has_property(t.cls, prop)]
    rtypes = sorted({r.cls for r in scene.receptacles})
    otypes = sorted({t.cls for t in scene.things})
    facts += [f"(canContain {r}Type {o}Type)" for r in rtypes for o in otypes if vocab.can_hold(r, o)]
    for t in scene.things:
        facts.append(f"(inReceptacle {mangle(t.alfred_id)} {mangle(t.receptacle)})")
        facts.append(f"(objectAtLocation {mangle(t.alfred_id)} {location_name(scene.location_of(t.receptacle))})")
    facts += [f"(receptacleAtLocation {mangle(r.alfred_id)} {location_name(r.location)})" for r in scene.receptacles]
    return facts


def task_folder_name(scene: Scene) -> str:
    """ALFRED's `<task_type>-<Object>-<Mrecep>-<Parent or lamp>-<scene number>`."""
    task = scene.task
    target = task.parent_target or task.toggle_target
    return f"{task.task_type}-{task.object_target}-None-{target}-{scene.floor_plan.number}"


def traj_data(scene: Scene, task_id: str, sentence: str, generator_info: dict) -> dict:
    """The fields of ALFRED's traj_data.json that text games use, plus how the game was made."""
    task = scene.task
    return {
        "task_id": task_id,
        "task_type": task.task_type,
        "pddl_params": {
            "object_target": task.object_target,
            "parent_target": task.parent_target,
            "toggle_target": task.toggle_target,
            "mrecep_target": "",
            "object_sliced": False,
        },
        "scene": {
            "floor_plan": scene.floor_plan.name,
            "scene_num": scene.floor_plan.number,
            "room_type": scene.floor_plan.room_type,
        },
        "turk_annotations": {"anns": [{"task_desc": sentence, "high_descs": [], "votes": []}]},
        "generator": generator_info,
    }
