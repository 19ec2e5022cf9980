"""`FastPddlEnv`: textworld's `PddlEnv` on cached game assets and the memoised grammar.

Only `load` and `reset` change, and only in where the logic and the planning state come from
(the per-process cache in assets.py instead of a fresh parse and translation); `step` and
`_gather_infos` are textworld's own and run the same rules and text through `MemoGrammar`.

Games whose grammar is not one of alfworld's (accepted only with `trust_game_files`) are
played by textworld's code unchanged: the memoised grammar's equivalence argument rests on
alfworld's expressions only reading entity attributes (see grammar.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from textworld.core import GameState
from textworld.envs import PddlEnv

from envs.fast_engine.assets import GameAssets, game_assets
from envs.safety import UnsafeGameError, extract_task_sentence


def _is_alfworld_grammar(grammar: str) -> bool:
    try:
        extract_task_sentence(grammar)
    except UnsafeGameError:
        return False
    return True


class FastPddlEnv(PddlEnv):
    """A `PddlEnv` whose load and reset reuse per-game assets; outputs are byte-identical."""

    _assets: GameAssets | None = None  # None: the loaded game is played by textworld's code

    def load(self, filename_or_data: str | Path | Mapping) -> None:
        if isinstance(filename_or_data, Mapping):
            data, game_file = filename_or_data, None
        else:
            data, game_file = json.loads(Path(filename_or_data).read_text()), filename_or_data
        if not _is_alfworld_grammar(data["grammar"]):
            self._assets = None
            super().load(filename_or_data)
            return
        self._assets = game_assets(data, self.downward_lib)
        self._game_file = game_file
        self._game_data = data
        self.walkthrough = data.get("walkthrough", None)
        self._logic = self._assets.logic
        self._pddl_state = self._assets.snapshot.restore(self.downward_lib, self._logic)
        self._entity_infos = self._get_entity_infos()

    def reset(self) -> GameState:
        if self._assets is None:
            return super().reset()
        # From here on, what textworld's reset does after building its fresh PddlState.
        self._pddl_state = self._assets.snapshot.restore(self.downward_lib, self._logic)
        self.prev_state = None
        self.state = GameState()
        self._last_action = None
        self._moves = 0
        context = {
            "state": self._pddl_state,
            "facts": list(self._pddl_state.facts),
            "variables": {},
            "mapping": {},
            "entity_infos": self._entity_infos,
        }
        self.state.feedback = self._logic.grammar.derive("#intro#", context)
        self.state.raw = self.state.feedback
        self._gather_infos()
        if "walkthrough" in self.request_infos.extras:
            self.state["extra.walkthrough"] = self.walkthrough or self._pddl_state.replan(self._entity_infos)
        return self.state
