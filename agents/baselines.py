"""Scripted baselines: alfworld's handcoded expert and a uniformly random admissible agent."""

from __future__ import annotations

import random
from collections.abc import Sequence

from agents.policy import Decision, Turn


class ExpertPolicy:
    """alfworld's handcoded expert, run by the env beside the game (`AlfWorldEnv(expert=True)`).

    The expert needs the game's true facts, which only the engine has, so the env computes its
    next command and this policy just plays it.
    """

    name = "expert"
    needs_expert = True

    def act(self, turns: Sequence[Turn]) -> list[Decision]:
        decisions = []
        for turn in turns:
            if "expert_action" not in turn.info:
                raise ValueError("the expert policy needs envs made with expert=True")
            action = turn.info["expert_action"]
            decisions.append(Decision(action=action, response=action))
        return decisions


class RandomAdmissiblePolicy:
    """Picks uniformly among the admissible commands, seeded per (episode seed, turn).

    Seeding per turn makes an episode independent of which other episodes share its batch.
    """

    name = "random"
    needs_expert = False

    def act(self, turns: Sequence[Turn]) -> list[Decision]:
        decisions = []
        for turn in turns:
            rng = random.Random(f"{turn.seed}/{turn.turn}")
            action = rng.choice(sorted(turn.info["admissible_commands"]))
            decisions.append(Decision(action=action, response=action))
        return decisions


class WalkthroughPolicy:
    """Plays each game's stored walkthrough (from its `game.tw-pddl`), and remembers every turn
    it was shown, so behaviour cloning can build the same prompts the RL agent sees."""

    name = "walkthrough"
    needs_expert = False

    def __init__(self):
        self.turns: list[Turn] = []
        self._walkthroughs: dict[str, list[str]] = {}

    def walkthrough(self, gamefile: str) -> list[str]:
        if gamefile not in self._walkthroughs:
            from envs.games import load_game

            walkthrough = load_game(gamefile).walkthrough
            if not walkthrough:
                raise ValueError(f"{gamefile} has no stored walkthrough to imitate")
            self._walkthroughs[gamefile] = walkthrough
        return self._walkthroughs[gamefile]

    def act(self, turns: Sequence[Turn]) -> list[Decision]:
        self.turns += turns
        decisions = []
        for turn in turns:
            walkthrough = self.walkthrough(turn.info["gamefile"])
            action = walkthrough[min(turn.turn, len(walkthrough) - 1)]
            decisions.append(Decision(action=action, response=action))
        return decisions


BASELINES = {"expert": ExpertPolicy, "random": RandomAdmissiblePolicy}
