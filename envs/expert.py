"""Running alfworld's handcoded expert reproducibly, with its put-tracking mended.

Two wrappers, both our own; alfworld's game and expert code are untouched:

- `SortedFacts`: textworld keeps a state's facts in sets, so their order follows Python's
  per-process string hashing (PYTHONHASHSEED), and the handcoded expert acts on "the first"
  matching fact in places (which object of a pick_two task is already placed). Sorting the facts
  makes the expert's choices depend only on its random seed, in every process.
- `MoveAwareExpert`: the expert tracks what it carries by reading its last command, and it
  recognises a put only by the word "put". alfworld's textworld grammar names that command
  "move X to Y", so the expert never sees its puts: after the first object of a pick_two task
  is placed it still believes it holds it, and once it holds the second it keeps proposing to
  move the first again. That command is inadmissible; alfworld's agent replaces a repeated
  command with a random admissible one, and the expert wanders (measured on generated games: it
  won 70-81% of pick_two games, with walkthroughs up to 118 steps in rooms of alfworld's size).
  The wrapper shows the policy its own "move" commands as the "put" it expects, so it pops its
  inventory, blacklists the placed object and goes on looking for the second one. Other task
  types end with their only put, so their walkthroughs are unchanged.
"""

from __future__ import annotations

import random

import textworld
from alfworld.agents.environment.alfred_tw_env import AlfredExpert, AlfredExpertType
from alfworld.agents.expert.handcoded_expert_tw import HandCodedTWAgent

MOVE, PUT = "move ", "put "


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


def as_expert_reads_it(command: str) -> str:
    """The command as the expert's state tracking understands it: "move X to Y" becomes "put X to Y"."""
    return PUT + command[len(MOVE) :] if command.startswith(MOVE) else command


class MoveAwareAgent(HandCodedTWAgent):
    """alfworld's handcoded agent whose policy sees its "move" commands as puts (module docstring).

    The repeat check (a policy that proposes its last command again gets a random admissible
    one) still compares against the command really played."""

    def act(self, game_state, reward, done, last_action: str = "") -> str:
        action = self.policy.act(game_state, as_expert_reads_it(last_action))
        if action == last_action or (last_action == "look" and action not in game_state["admissible_commands"]):
            return random.choice(game_state["admissible_commands"])
        return action


class MoveAwareExpert(AlfredExpert):
    """alfworld's expert wrapper, running `MoveAwareAgent` instead of the stock agent."""

    def load(self, gamefile: str) -> None:
        super().load(gamefile)
        self._handcoded_expert = MoveAwareAgent(max_steps=self._handcoded_expert.max_steps)


def with_handcoded_expert(engine: textworld.core.Environment) -> textworld.core.Environment:
    """Wrap an engine with the (mended) handcoded expert, facts sorted first."""
    return MoveAwareExpert(SortedFacts(engine), expert_type=AlfredExpertType.HANDCODED)
