"""Playing candidate games with alfworld's experts on textworld's PDDL engine.

A game is kept only if the handcoded expert wins it (its commands become the stored walkthrough,
as `alfworld-generate` does); on a sample, alfworld's planner expert (fast-downward) must win it
too. Both run as alfworld wires them, PddlEnv -> AlfredDemangler -> AlfredInfos -> the expert;
the handcoded one is `envs.expert`'s (alfworld's, its put-tracking mended, its facts sorted so
that its walkthrough does not depend on Python's string hashing). The PDDL engine is our fast
one (`envs.fast_engine`, byte-identical outputs to textworld's, many times quicker) where the
installed textworld is supported.
"""

from __future__ import annotations

import random
from pathlib import Path

import textworld
from alfworld.agents.environment.alfred_tw_env import AlfredDemangler, AlfredExpert, AlfredInfos

from envs.expert import SortedFacts, with_handcoded_expert
from envs.fast_engine import pddl_env_class

# AlfredExpert gives its handcoded agent this many steps before it raises "Timeout".
MAX_EXPERT_STEPS = 200


def make_env(expert_type: str | None = None) -> textworld.core.Environment:
    """The PDDL engine with alfworld's wrappers; `expert_type`: None, "handcoded", "planner"."""
    infos = textworld.EnvInfos(admissible_commands=True, won=True, extras=["gamefile"])
    env = AlfredInfos(AlfredDemangler(pddl_env_class()(infos)))
    if expert_type == "handcoded":
        return with_handcoded_expert(env)
    return env if expert_type is None else AlfredExpert(SortedFacts(env), expert_type=expert_type)


def play(env: textworld.core.Environment, game_file: Path, commands: list[str]) -> bool:
    """Replay `commands` from the start of the game; True if the game is won at the end."""
    env.load(str(game_file))
    state = env.reset()
    for command in commands:
        state, _, _ = env.step(command)
    return bool(state["won"])


class Verifier:
    """Reusable expert environments (each one loads the fast-downward library once)."""

    def __init__(self) -> None:
        self._handcoded = make_env("handcoded")
        self._planner = make_env("planner")
        self._plain = make_env()

    def handcoded_walkthrough(self, game_file: Path, seed: int) -> list[str] | None:
        """The handcoded expert's winning commands, or None if it times out or gives up.

        The expert draws from the module-level `random` (which object to take, what to try when
        stuck), so it runs under `seed` to make the walkthrough reproducible; the caller's
        random state is restored afterwards.
        """
        saved = random.getstate()
        random.seed(seed)
        try:
            return self._run_handcoded(game_file)
        finally:
            random.setstate(saved)

    def _run_handcoded(self, game_file: Path) -> list[str] | None:
        env = self._handcoded
        env.load(str(game_file))
        state = env.reset()
        commands: list[str] = []
        try:
            while not state["won"] and len(commands) < MAX_EXPERT_STEPS:
                command = state["extra.expert_plan"][0]
                state, _, _ = env.step(command)
                commands.append(command)
        except Exception:  # alfworld signals a stuck expert with a bare Exception("Timeout") or NameError subclasses
            return None
        return commands if state["won"] else None

    def reliably_wins(self, game_file: Path, seeds: list[int], max_steps: int) -> bool:
        """The handcoded expert wins within `max_steps` under every one of `seeds`.

        The expert still breaks ties at random (which object to take, what to do when it would
        repeat itself), so this keeps only scenes it solves under several seeds: an evaluation of
        the expert with its own seeds and the usual step limit then wins them too.
        """
        for seed in seeds:
            walkthrough = self.handcoded_walkthrough(game_file, seed)
            if walkthrough is None or len(walkthrough) > max_steps:
                return False
        return True

    def planner_solves(self, game_file: Path) -> bool:
        """Fast-downward finds a plan from the start, and replaying it wins the game."""
        self._planner.load(str(game_file))
        plan = self._planner.reset()["extra.expert_plan"]
        return bool(plan) and play(self._plain, game_file, plan)
