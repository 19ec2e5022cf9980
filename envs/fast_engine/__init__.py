"""A faster ALFWorld text engine: textworld's PDDL engine without its repeated bookkeeping.

The rules and the text are textworld's and alfworld's, unchanged; what goes is work that
textworld redoes although its result cannot change:

- grammar.py: grammar templates and queries parsed once (not by TatSu on every derivation),
  and derivation contexts shared instead of deep-copied;
- planning.py: a game's planning task translated by fast-downward once, then restored on
  every reset;
- assets.py: both cached per game content, per process (a small LRU shared by env instances);
- env.py: `FastPddlEnv`, a `PddlEnv` subclass that uses them in `load` and `reset`.

It relies on textworld internals, so it is pinned to the textworld versions it was tested on
(`SUPPORTED_TEXTWORLD`, checked by tests/envs/test_fast_engine.py, which plays both engines
side by side and requires byte-identical outputs). On another version `build_engine` warns
and returns the stock engine.

    from envs.fast_engine import build_engine
    engine = build_engine(expert=False)   # then engine.load(game_data); engine.reset(); ...
"""

from __future__ import annotations

import warnings

SUPPORTED_TEXTWORLD = ("1.7.0",)


def textworld_version() -> str:
    import textworld

    return textworld.__version__


def build_engine(expert: bool):
    """The alfworld engine (demangled names, optionally the handcoded expert) on the fast path.

    Falls back to the stock engine, with a warning, on a textworld version not in
    `SUPPORTED_TEXTWORLD`.
    """
    return _assemble(pddl_env_class(), expert)


def pddl_env_class() -> type:
    """`FastPddlEnv` where the installed textworld is supported, else textworld's `PddlEnv` (warned)."""
    from textworld.envs import PddlEnv

    version = textworld_version()
    if version in SUPPORTED_TEXTWORLD:
        from envs.fast_engine.env import FastPddlEnv

        return FastPddlEnv
    warnings.warn(
        f"envs.fast_engine supports textworld {', '.join(SUPPORTED_TEXTWORLD)} but textworld "
        f"{version} is installed: using the stock (slower) engine. Test the fast engine on this "
        "version (tests/envs/test_fast_engine.py) before adding it to SUPPORTED_TEXTWORLD.",
        RuntimeWarning,
        stacklevel=3,
    )
    return PddlEnv


def _assemble(pddl_env_class, expert: bool):
    """alfworld's wrappers around a PDDL env, as AlfWorldEnv's stock engine has them (the expert
    reads sorted facts, as the generator's verifier does, so it acts the same on both engines)."""
    import textworld
    from alfworld.agents.environment.alfred_tw_env import AlfredDemangler

    from envs.expert import with_handcoded_expert

    engine = AlfredDemangler(pddl_env_class(textworld.EnvInfos(admissible_commands=True, won=True)))
    return with_handcoded_expert(engine) if expert else engine
