"""Constrained decoding: the action is sampled only among the admissible commands.

A response is read token by token through a small state machine:

- THINK (react format only): free text until the model writes `</think>` (or `max_think_tokens`
  tokens have been written, after which `</think>` is forced);
- FORCED: a fixed token sequence (`\\n<action>` after the thought), one allowed token each;
- ACTION: a walk down a prefix tree of the admissible commands' token ids, each path ending
  with the end-of-action tokens (`</action>` and/or end-of-sequence), so that "cabinet 1" and
  "cabinet 10" stay apart;
- DONE: only end-of-sequence.

The machine is pure: `allowed(state)` and `advance(state, token)` depend on nothing else, so
training replays it over recorded tokens to rebuild exactly the masks used at sampling time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

THINK, FORCED, ACTION, DONE = "think", "forced", "action", "done"


class CommandTrie:
    """A prefix tree over token-id sequences. Nodes are dicts: token id -> child node."""

    def __init__(self, sequences: Sequence[Sequence[int]]):
        if not sequences:
            raise ValueError("expected at least one admissible command, got none")
        self.root: dict[int, dict] = {}
        for sequence in sequences:
            node = self.root
            for token in sequence:
                node = node.setdefault(token, {})

    def node(self, path: Sequence[int]) -> dict[int, dict] | None:
        """The node reached by `path` from the root, or None if it leaves the tree."""
        node = self.root
        for token in path:
            node = node.get(token)
            if node is None:
                return None
        return node


@dataclass(frozen=True)
class State:
    phase: str
    path: tuple[int, ...] = ()  # tokens written in the current phase


class ActionConstraint:
    """Which tokens may come next in one response (see the module docstring).

    Args:
        command_ids: token ids of each admissible command, tokenized on its own.
        action_end_ids: tokens that close an action (e.g. `</action>` then EOS, or just EOS).
        eos_id: the end-of-sequence token.
        think_close_ids: tokens of `</think>`; None for formats without a thought.
        action_open_ids: tokens forced between the thought and the action (`\\n<action>`).
        max_think_tokens: length cap of the thought.
    """

    def __init__(
        self,
        command_ids: Sequence[Sequence[int]],
        action_end_ids: Sequence[int],
        eos_id: int,
        think_close_ids: Sequence[int] | None = None,
        action_open_ids: Sequence[int] = (),
        max_think_tokens: int = 64,
    ):
        # the arguments as plain lists: what another engine's process needs to rebuild this machine
        self.spec = {
            "command_ids": [list(ids) for ids in command_ids],
            "action_end_ids": list(action_end_ids),
            "eos_id": eos_id,
            "think_close_ids": list(think_close_ids) if think_close_ids else None,
            "action_open_ids": list(action_open_ids),
            "max_think_tokens": max_think_tokens,
        }
        self.trie = CommandTrie([[*ids, *action_end_ids] for ids in command_ids])
        longest = max(len(ids) for ids in command_ids) + len(action_end_ids) + len(action_open_ids)
        think = max_think_tokens + len(think_close_ids) if think_close_ids else 0
        self.max_length = longest + think  # no constrained response is longer
        self.eos_id = eos_id
        self.think_close_ids = tuple(think_close_ids) if think_close_ids else None
        self.action_open_ids = tuple(action_open_ids)
        self.max_think_tokens = max_think_tokens

    def start(self) -> State:
        if self.think_close_ids is not None:
            return State(THINK)
        return State(FORCED) if self.action_open_ids else State(ACTION)

    def allowed(self, state: State) -> tuple[int, ...] | None:
        """Sorted allowed token ids, or None when any token may come (a free thought)."""
        if state.phase == THINK:
            if len(state.path) >= self.max_think_tokens:
                return (self._close_think_next(state),)
            return None
        if state.phase == FORCED:
            return (self.action_open_ids[len(state.path)],)
        if state.phase == ACTION:
            node = self.trie.node(state.path)
            assert node is not None, "advance() never leaves the trie"
            return tuple(sorted(node)) if node else (self.eos_id,)
        return (self.eos_id,)

    def _close_think_next(self, state: State) -> int:
        """The next token of `</think>` when the thought is over its length cap."""
        written = self._close_progress(state.path)
        return self.think_close_ids[written]

    def _close_progress(self, path: tuple[int, ...]) -> int:
        """How many tokens of `</think>` end the path (longest partial match)."""
        close = self.think_close_ids
        for size in range(min(len(close), len(path)), 0, -1):
            if path[-size:] == close[:size]:
                return size
        return 0

    def advance(self, state: State, token: int) -> State:
        """The state after writing `token` (which must be allowed)."""
        allowed = self.allowed(state)
        if allowed is not None and token not in allowed:
            raise ValueError(f"token {token} is not allowed in phase {state.phase}; allowed: {allowed[:10]}")
        if state.phase == THINK:
            path = state.path + (token,)
            if path[-len(self.think_close_ids) :] == self.think_close_ids:
                return State(FORCED) if self.action_open_ids else State(ACTION)
            return State(THINK, path)
        if state.phase == FORCED:
            path = state.path + (token,)
            return State(ACTION) if len(path) == len(self.action_open_ids) else State(FORCED, path)
        if state.phase == ACTION:
            path = state.path + (token,)
            return State(DONE) if not self.trie.node(path) else State(ACTION, path)
        return state

    def replay(self, tokens: Sequence[int]) -> list[tuple[int, ...] | None]:
        """The allowed set before each token of a recorded response (None: free)."""
        state, allowed_sets = self.start(), []
        for token in tokens:
            allowed_sets.append(self.allowed(state))
            state = self.advance(state, token)
        return allowed_sets

    def phases(self, tokens: Sequence[int]) -> list[str]:
        """The phase in which each token of a recorded response was written."""
        state, phases = self.start(), []
        for token in tokens:
            phases.append(state.phase)
            state = self.advance(state, token)
        return phases
