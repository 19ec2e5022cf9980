"""Per-game engine assets (parsed logic and grammar, translated planning task), cached per process.

A training group plays the same game G times, often on several env instances of one worker
process, and evaluation alternates between a few games. Everything here is a pure function
of the game's text (PDDL domain, grammar, PDDL problem), so it is keyed by a digest of that
text, never by a path: an edited file is a new key. The cache is a small LRU (a few games of
realistic size take a few MB each); evicting an entry only means the next load of that game
pays textworld's parse and translation again.

Shared between env instances, both parts are only read after construction: the grammar's
production rules and the logic's actions by derivation, the snapshot by `restore`. The
logic's type hierarchy is written once, by the snapshot's construction (see planning.py).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from textworld.envs.pddl.logic import GameLogic

from envs.fast_engine.grammar import MemoGrammar
from envs.fast_engine.planning import PlanningSnapshot

CACHE_SIZE = 8  # games per process


@dataclass(frozen=True, eq=False)
class GameAssets:
    """A game's logic (its grammar memoised) and its planning snapshot, built together."""

    logic: GameLogic
    snapshot: PlanningSnapshot

    @classmethod
    def build(cls, data: Mapping, downward_lib) -> GameAssets:
        """textworld's own parsing and translation of the game, done once."""
        logic = GameLogic(domain=data["pddl_domain"], grammar=data["grammar"])
        logic.grammar = MemoGrammar.from_grammar(logic.grammar)
        return cls(logic, PlanningSnapshot.take(downward_lib, data["pddl_problem"], logic))


def content_key(data: Mapping) -> str:
    """Digest of the text the assets are computed from."""
    digest = hashlib.sha256()
    for key in ("pddl_domain", "grammar", "pddl_problem"):
        digest.update(data[key].encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


_cache: OrderedDict[str, GameAssets] = OrderedDict()


def game_assets(data: Mapping, downward_lib) -> GameAssets:
    """The cached assets of this game, built (with `downward_lib`) on a miss."""
    key = content_key(data)
    assets = _cache.pop(key, None) or GameAssets.build(data, downward_lib)
    _cache[key] = assets  # most recently used last
    while len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)
    return assets


def clear_cache() -> None:
    """Forget every cached game (tests and benchmarks use it to measure first loads)."""
    _cache.clear()
