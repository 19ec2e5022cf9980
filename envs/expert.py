"""Running alfworld's handcoded expert reproducibly.

textworld keeps a state's facts in sets, so their order follows Python's per-process string
hashing (PYTHONHASHSEED), and the handcoded expert acts on "the first" matching fact in places
(which object of a pick_two task is already placed). `SortedFacts` hands the facts on in a fixed
order, so the expert's choices depend only on its random seed, in every process. The game itself
is untouched.
"""

from __future__ import annotations

import textworld


def _sort_facts(state: textworld.core.GameState) -> textworld.core.GameState:
    if state.get("facts") is not None:
        state["facts"] = sorted(state["facts"], key=str)
    return state


class SortedFacts(textworld.core.Wrapper):
    """Sorts the state's facts before the expert (the next wrapper out) reads them."""

    def reset(self) -> textworld.core.GameState:
        return _sort_facts(super().reset())

    def step(self, command: str) -> tuple[textworld.core.GameState, float, bool]:
        state, score, done = super().step(command)
        return _sort_facts(state), score, done


def with_handcoded_expert(engine: textworld.core.Environment) -> textworld.core.Environment:
    """Wrap an engine with alfworld's handcoded expert, facts sorted first."""
    from alfworld.agents.environment.alfred_tw_env import AlfredExpert, AlfredExpertType

    return AlfredExpert(SortedFacts(engine), expert_type=AlfredExpertType.HANDCODED)
