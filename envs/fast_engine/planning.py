"""A game's planning task, translated once and restored on every reset.

textworld's `PddlState` runs fast-downward's PDDL-to-SAS translator twice (a full task and an
optimised one for replanning) every time it is built, and `PddlEnv` builds one on `load` and
again on every `reset`: about 0.3-1.5 s per reset on games of alfworld's size, for an output
that depends only on the game's domain and problem text. Here textworld's own constructor runs
once per game (`take_snapshot`); a reset rebuilds the state from that snapshot (`restore`):
it reloads the same SAS text into fast-downward (which resets the planner's state) and adds
the same facts in the same order, so the Python state is built by the same sequence of
`add_fact` calls as textworld's and even set iteration orders match (the handcoded expert and
entity naming depend on them).

Why reuse is safe: the translator is deterministic (same text in, same task and SAS out), and
nothing after construction mutates the task, the SAS text, `name2type` or the action table;
every mutable piece of a state (its fact sets and variable counts) is made fresh by `restore`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from textworld.envs.pddl.logic import GameLogic, PddlState
from textworld.logic import Proposition


class _RecordingPddlState(PddlState):
    """textworld's `PddlState`, unchanged, except that it records the facts its constructor adds."""

    def __init__(self, *args: Any, **kwargs: Any):
        self.added_facts: list[Proposition] = []
        super().__init__(*args, **kwargs)

    def add_facts(self, props) -> None:
        props = list(props)
        self.added_facts.extend(props)
        super().add_facts(props)


@dataclass(frozen=True, eq=False)
class PlanningSnapshot:
    """What textworld's `PddlState` constructor computes from a game's text, kept read-only."""

    pddl_problem: str
    task: Any  # fast-downward's normalised PDDL task
    sas: str  # the full SAS translation (what the game is played on)
    sas_replan: str  # the optimised translation (what the planner replans on)
    actions: dict  # action name -> fast-downward action schema
    name2type: dict[str, str]
    initial_facts: tuple[Proposition, ...]  # in the order the constructor added them

    @classmethod
    def take(cls, downward_lib, pddl_problem: str, logic: GameLogic) -> PlanningSnapshot:
        """Run textworld's constructor once (translation included) and keep its results.

        The constructor also registers the domain's types in `logic.types`; the snapshot is
        only ever restored with that same `logic` (they are cached together).
        """
        state = _RecordingPddlState(downward_lib, pddl_problem, logic)
        return cls(
            pddl_problem=pddl_problem,
            task=state.task,
            sas=state.sas,
            sas_replan=state.sas_replan,
            actions=state._actions,
            name2type=state.name2type,
            initial_facts=tuple(state.added_facts),
        )

    def restore(self, downward_lib, logic: GameLogic) -> PddlState:
        """A state equal to a freshly constructed `PddlState(downward_lib, problem, logic)`."""
        return _RestoredPddlState(downward_lib, self, logic)


class _RestoredPddlState(PddlState):
    """A `PddlState` built from a snapshot; every method other than the constructor is textworld's."""

    def __init__(self, downward_lib, snapshot: PlanningSnapshot, logic: GameLogic):
        # Deliberately not PddlState.__init__, which translates. These are the attributes it sets.
        self._facts = defaultdict(set)
        self._vars_by_name = {}
        self._vars_by_type = defaultdict(set)
        self._var_counts = Counter()
        self._logic = logic
        self.downward_lib = downward_lib
        self.pddl_problem = snapshot.pddl_problem
        self.task, self.sas, self.sas_replan = snapshot.task, snapshot.sas, snapshot.sas_replan
        self._actions = snapshot.actions
        self.name2type = snapshot.name2type
        downward_lib.load_sas(snapshot.sas.encode("utf-8"))  # also resets the planner's state
        downward_lib.load_sas_replan(snapshot.sas_replan.encode("utf-8"))
        self.add_facts(snapshot.initial_facts)
