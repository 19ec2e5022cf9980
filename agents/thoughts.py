"""Thoughts for demonstrations: a short line of reasoning before each command of a walkthrough.

A warm start in the react format teaches the model to think, then act. The walkthroughs hold only
commands, so each thought is written here from what the turn's prompt shows (the task, the room,
the last few turns: what was on or in each place looked at, what was taken or put) and from the
command the expert plays next: what is being looked for, where it may be, what comes after. A
thought names an object or a place only when the prompt shows it (a place not yet looked in is
only "a place to check"), so it never teaches the model to state a fact it could not know.

Wording varies: each situation has a few phrasings, picked by a seeded draw per (episode, turn),
so the model learns to reason, not to copy one sentence.

    goal = Goal.from_params(task, task_type, read_task_params(game_file))
    memory = EpisodeMemory.replay(turn.history[-shown:], turn.observation)
    text = demonstration_thought(goal, memory, "go to fridge 1", random.Random(seed))
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

# what each transforming task does to its object, and where (alfworld's goal rules; a room
# without a sink basin has its object cleaned in the bathtub basin)
TRANSFORMS = {
    "pick_heat_then_place_in_recep": ("heat", "heated", ("microwave",)),
    "pick_cool_then_place_in_recep": ("cool", "cooled", ("fridge",)),
    "pick_clean_then_place_in_recep": ("clean", "cleaned", ("sinkbasin", "bathtubbasin")),
}
# receptacle classes an object goes "in" (the others it goes "on")
CONTAINERS = {
    "bathtubbasin",
    "box",
    "cabinet",
    "cart",
    "drawer",
    "fridge",
    "garbagecan",
    "laundryhamper",
    "microwave",
    "safe",
    "sinkbasin",
}
_SEEN = re.compile(r"you see (.*?)\.(?:\s|$)")
_ITEM = re.compile(r"^(?:an? )?([a-z]+ \d+)$")


@dataclass(frozen=True)
class Goal:
    """What a task asks, from its traj_data.json parameters (class names, lower case)."""

    task: str  # the task sentence, as the game states it
    task_type: str
    target: str  # the object class to move ("cup")
    destination: str  # where it goes ("microwave"); for look_at tasks, the lamp class
    count: int = 1  # pick_two: 2

    @classmethod
    def from_params(cls, task: str, task_type: str, params: dict) -> Goal:
        lamp = task_type == "look_at_obj_in_light"
        destination = params.get("toggle_target" if lamp else "parent_target") or ""
        count = 2 if task_type == "pick_two_obj_and_place" else 1
        return cls(task, task_type, str(params.get("object_target", "")).lower(), str(destination).lower(), count)


@dataclass
class EpisodeMemory:
    """What the agent knows after some turns: where it is, what it saw where, what it holds."""

    location: str = ""
    contents: dict[str, list[str]] = field(default_factory=dict)  # place -> objects last seen there
    checked: list[str] = field(default_factory=list)  # places looked at, oldest first
    holding: str = ""
    placed: list[str] = field(default_factory=list)
    transformed: set[str] = field(default_factory=set)

    @classmethod
    def replay(cls, history: Sequence[tuple[str, str]], observation: str = "") -> EpisodeMemory:
        """The memory after `history` ((observation, command) pairs, the episode's or its last
        few) and the latest observation."""
        memory = cls()
        answers = [seen for seen, _ in history[1:]] + [observation]
        for (_, command), answer in zip(history, answers):
            memory.update(command, answer)
        return memory

    def update(self, command: str, answer: str) -> None:
        """Take in a command the agent played and the game's answer to it."""
        if "Nothing happens" in answer:
            return
        verb, _, rest = command.partition(" ")
        if verb == "go":
            self.location = rest.removeprefix("to ")
        elif verb in ("open", "examine"):
            self.location = rest if " " in rest else self.location
        elif verb == "take":
            self.holding = rest.split(" from ")[0]
            self._forget(self.holding)
        elif verb == "move":
            thing, _, place = rest.partition(" to ")
            self.placed.append(thing)
            self.contents.setdefault(place, []).append(thing)
            self.holding = ""
        elif verb in ("heat", "cool", "clean"):
            self.transformed.add(rest.split(" with ")[0])
        seen = _SEEN.search(answer)
        if seen and self.location:
            self.contents[self.location] = _items(seen.group(1))
            if self.location not in self.checked:
                self.checked.append(self.location)

    def _forget(self, thing: str) -> None:
        for items in self.contents.values():
            if thing in items:
                items.remove(thing)

    def where_seen(self, object_class: str) -> tuple[str, str] | None:
        """(object, place) of an object of this class seen and still there, not placed for the task."""
        for place, items in self.contents.items():
            for item in items:
                if _class(item) == object_class and item not in self.placed:
                    return item, place
        return None


def _items(listing: str) -> list[str]:
    """'a cup 2, a pan 1, and a apple 3' -> ['cup 2', 'pan 1', 'apple 3']; 'nothing' -> []."""
    parts = re.split(r",\s*(?:and\s+)?|\s+and\s+", listing)
    return [match.group(1) for part in parts if (match := _ITEM.match(part.strip()))]


def _class(name: str) -> str:
    return name.rsplit(" ", 1)[0]


def _a(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def _into(place: str) -> str:
    return "in" if _class(place) in CONTAINERS else "on"


def demonstration_thought(goal: Goal, memory: EpisodeMemory, command: str, rng: random.Random) -> str:
    """The thought that leads to `command`, given what `memory` holds (see the module docstring)."""
    verb, _, rest = command.partition(" ")
    if verb == "go":
        return _go(goal, memory, rest.removeprefix("to "), rng)
    writer = _WRITERS.get(verb)
    return writer(goal, memory, rest, rng) if writer else _pick(rng, "I will {c}.", "Next: {c}.", c=command)


def _pick(rng: random.Random, *phrasings: str, **names: str) -> str:
    """One of `phrasings`, drawn with `rng`, its {fields} filled from `names`."""
    return rng.choice(phrasings).format(**names)


def _look(goal: Goal, memory: EpisodeMemory, rest: str, rng: random.Random) -> str:
    if not memory.checked and not memory.location:
        return _pick(
            rng,
            "The task is to {t}. First I look around the room.",
            "I have to {t}. Let me look around first.",
            t=goal.task,
        )
    return _pick(rng, "I look around to see where I am.", "Let me look around again.")


def _still_to_do(goal: Goal, memory: EpisodeMemory, thing: str) -> str:
    """What comes after taking `thing`: transforming it, putting it, or the lamp."""
    transform = TRANSFORMS.get(goal.task_type)
    if transform and thing not in memory.transformed:
        return f"{transform[0]} it with {_a(transform[2][0])}"
    if goal.task_type == "look_at_obj_in_light":
        return f"look at it under {_a(goal.destination)}"
    return f"put it {_into(goal.destination)} {_a(goal.destination)}"


def _go(goal: Goal, memory: EpisodeMemory, place: str, rng: random.Random) -> str:
    holding = memory.holding
    if holding and _class(holding) == goal.target:
        return _go_with_target(goal, memory, place, rng)
    if holding:
        return _pick(
            rng,
            "I do not need the {h}. I take it back to the {p}.",
            "The {h} is not for the task; it goes back to the {p}.",
            h=holding,
            p=place,
        )
    seen = memory.where_seen(goal.target)
    if seen and seen[1] == place:
        return _pick(
            rng,
            "I saw {o} {i} the {p}. I go back there to take it.",
            "There was {o} {i} the {p}, so I head there.",
            o=_a(seen[0]),
            i=_into(place),
            p=place,
        )
    wanted = f"a second {goal.target}" if memory.placed else _a(goal.target)
    looked = " or the ".join([p for p in memory.checked if p != place][-2:])
    if memory.placed:
        lead = _pick(rng, "One {t} is in place. I need {w}.", "Now I need {w}.", t=goal.target, w=wanted)
    elif looked:
        lead = _pick(
            rng,
            "I need {w}. It was not at the {l}.",
            "I need {w}. I have not found one at the {l}.",
            w=wanted,
            l=looked,
        )
    else:
        lead = f"I need {wanted}."
    where = _pick(rng, "The {p} is a place to check.", "Maybe the {p} has one.", "Let me check the {p}.", p=place)
    return f"{lead} {where}"


def _go_with_target(goal: Goal, memory: EpisodeMemory, place: str, rng: random.Random) -> str:
    holding = memory.holding
    transform = TRANSFORMS.get(goal.task_type)
    if transform and holding not in memory.transformed and _class(place) in transform[2]:
        return _pick(
            rng,
            "I have the {h}. It must be {done} first, with the {p}.",
            "Now the {h} needs to be {done}. I go to the {p}.",
            h=holding,
            done=transform[1],
            p=place,
        )
    if goal.task_type == "look_at_obj_in_light":
        lamp = memory.where_seen(goal.destination)
        if lamp and lamp[1] == place:
            return f"I hold the {holding}. I saw {_a(lamp[0])} on the {place}, so I go there."
        return _pick(
            rng,
            "I hold the {h} and need {l}. Maybe the {p} has one.",
            "I have the {h}. Now I look for {l} at the {p}.",
            h=holding,
            l=_a(goal.destination),
            p=place,
        )
    return _pick(
        rng,
        "I have the {h}{s}. Next I put it {i} the {p}.",
        "The {h} is in my hands{s}. It goes {i} the {p}, so I go there.",
        h=holding,
        s=f" and it is {transform[1]}" if transform else "",
        i=_into(place),
        p=place,
    )


def _open(goal: Goal, memory: EpisodeMemory, place: str, rng: random.Random) -> str:
    if memory.holding and _class(place) == goal.destination:
        return f"The {place} is closed. I open it to put the {memory.holding} inside."
    wanted = _a(goal.destination if memory.holding else goal.target)
    return _pick(
        rng,
        "The {p} is closed. I open it to see what is inside.",
        "I open the {p} to look for {w}.",
        p=place,
        w=wanted,
    )


def _close(goal: Goal, memory: EpisodeMemory, place: str, rng: random.Random) -> str:
    if memory.holding or set(memory.placed) & set(memory.contents.get(place, ())):
        return _pick(rng, "I close the {p} and go on.", "Done here. I close the {p}.", p=place)
    return _pick(
        rng,
        "No {t} in the {p}. I close it and keep looking.",
        "Nothing I need in the {p}. I close it.",
        t=goal.target,
        p=place,
    )


def _take(goal: Goal, memory: EpisodeMemory, rest: str, rng: random.Random) -> str:
    thing, _, place = rest.partition(" from ")
    return _pick(
        rng,
        "There is {a} {i} the {p}. I take it, then {n}.",
        "Here is {a}. I pick it up; next I {n}.",
        a=_a(thing),
        i=_into(place),
        p=place,
        n=_still_to_do(goal, memory, thing),
    )


def _held(memory: EpisodeMemory, thing: str, goal: Goal) -> str:
    """How a thought names the object a command acts on: by its name when the prompt showed it
    being taken, else by its class (the take may lie before the turns the prompt shows)."""
    return thing if memory.holding == thing else goal.target


def _transform(goal: Goal, memory: EpisodeMemory, rest: str, rng: random.Random) -> str:
    thing, _, place = rest.partition(" with ")
    return _pick(
        rng,
        "I am at the {p} with the {o}. I {v} it here, then take it to {a}.",
        "The {p} is here. I {v} the {o}, then it goes to {a}.",
        p=place,
        o=_held(memory, thing, goal),
        v=TRANSFORMS.get(goal.task_type, ("use",))[0],
        a=_a(goal.destination),
    )


def _move(goal: Goal, memory: EpisodeMemory, rest: str, rng: random.Random) -> str:
    thing, _, place = rest.partition(" to ")
    names = {"o": _held(memory, thing, goal), "c": goal.target, "i": _into(place), "p": place}
    if goal.count > 1 and not memory.placed:
        return _pick(
            rng,
            "This is the first {c}. I put it {i} the {p}, then look for a second one.",
            "I put the {o} {i} the {p}. One more {c} after this.",
            **names,
        )
    return _pick(
        rng,
        "I am at the {p} with the {o}. Putting it {i} should finish the task.",
        "The {o} goes {i} the {p}. That completes the task.",
        **names,
    )


def _use(goal: Goal, memory: EpisodeMemory, lamp: str, rng: random.Random) -> str:
    if not any(lamp in items for items in memory.contents.values()):
        lamp = _class(lamp)  # seen before the turns the prompt shows: named by its class
    return _pick(
        rng,
        "I hold the {o} and the {l} is here. I turn it on to look at the {o}.",
        "The {l} is here. I switch it on and look at the {o} in its light.",
        o=memory.holding or goal.target,
        l=lamp,
    )


def _examine(goal: Goal, memory: EpisodeMemory, place: str, rng: random.Random) -> str:
    return _pick(rng, "I examine the {p} to see what is there.", "Let me take a closer look at the {p}.", p=place)


def _inventory(goal: Goal, memory: EpisodeMemory, rest: str, rng: random.Random) -> str:
    return "I check what I am carrying."


_WRITERS = {
    "look": _look,
    "open": _open,
    "close": _close,
    "take": _take,
    "heat": _transform,
    "cool": _transform,
    "clean": _transform,
    "move": _move,
    "use": _use,
    "examine": _examine,
    "inventory": _inventory,
}
