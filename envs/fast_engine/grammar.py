"""textworld's text grammar with memoised parsing and copy-on-write contexts.

textworld's `ContextSensitiveGrammar.derive` re-parses its start string with TatSu on every
call (once per admissible command per step), deep-copies every production rule it expands and
deep-copies the context dict (entity infos included) for every symbol it touches. That was
most of a step's time. `MemoGrammar` derives the same text with none of that:

- Parsed templates are memoised by their text (`parse_symbols`, `parse_query`). They are
  textworld's own parser outputs (the same symbol objects), treated as read-only: derivation
  pairs a template with the context it is derived in instead of writing the context into it.
- Contexts are shared, never copied, except where textworld's `query` extends one with the
  bindings of a match: there a new context gets new `variables` and `mapping` dicts, so no
  context is ever changed after it is made. That is what textworld's deep copies guaranteed.
- `{expression}` symbols are evaluated by textworld's own `EvalSymbol.derive`, on the same
  expression with the same variables, so what is evaluated and its result are unchanged.

What the deep copies also protected against: an expression that mutates the entity infos it
reads. alfworld's grammar expressions only read attributes (`o.name`, `o.indefinite + ' ' +
o.name`), so sharing them is equivalent; the engine therefore uses this grammar only for
grammars that `envs.safety` recognises as alfworld's (see `env.py`).
"""

from __future__ import annotations

import functools
from typing import Any

from textworld.envs.pddl.textgen import (
    ConditionalSymbol,
    ContextSensitiveGrammar,
    CSGUnknownSymbolError,
    EvalSymbol,
    ListSymbol,
    NonterminalSymbol,
    Symbol,
    TerminalSymbol,
    _parse_and_convert,
)
from textworld.logic import Rule

Context = dict[str, Any]  # textworld's keys: state, facts, variables, mapping, entity_infos
Frame = tuple[Symbol, Context]  # a read-only template symbol and the context it is derived in

# Templates come from the game's grammar and the domain's command templates: a few hundred
# distinct strings at most, so these bounds are never reached in practice.
_PARSE_CACHE_SIZE = 4096

# The non-terminals textworld inserts around list items (read-only, like every template here).
_LIST_EMPTY = NonterminalSymbol("list_empty")
_LIST_SEPARATOR = NonterminalSymbol("list_separator")
_LIST_LAST_SEPARATOR = NonterminalSymbol("list_last_separator")


@functools.lru_cache(maxsize=_PARSE_CACHE_SIZE)
def parse_symbols(text: str) -> tuple[Symbol, ...]:
    """textworld's parse of a grammar string (rule `symbols`), done once per distinct text."""
    return tuple(_parse_and_convert(text, rule_name="symbols"))


@functools.lru_cache(maxsize=_PARSE_CACHE_SIZE)
def parse_query(expression: str) -> Rule:
    """textworld's parse of a conjunctive query such as `holds(a:agent, o:object)`, once per text.

    Safe to share: matching (`State.all_assignments`) only reads the rule.
    """
    return Rule.parse_conjunctive_query(expression)


def _matches(expression: str, context: Context) -> list[dict]:
    """Every binding of `expression` in the context's state, in textworld's order."""
    return list(context["state"].all_assignments(parse_query(expression), context["mapping"]))


def _bind(context: Context, mapping: dict) -> Context:
    """A new context extended with a match's bindings, as textworld's `query` builds it."""
    variables = dict(context["variables"])
    variables.update({ph.name: context["entity_infos"][var.name] for ph, var in mapping.items()})
    return {**context, "variables": variables, "mapping": {**context["mapping"], **mapping}}


class MemoGrammar(ContextSensitiveGrammar):
    """A `ContextSensitiveGrammar` whose `derive` returns the same text, faster (module docstring)."""

    @classmethod
    def from_grammar(cls, grammar: ContextSensitiveGrammar) -> MemoGrammar:
        memo = cls()
        memo.update(grammar)  # shares textworld's parsed production rules
        return memo

    def derive(self, start: str, context: Context = {}) -> str:  # noqa: B006 (textworld's signature)
        # A stack of frames, top last, expanded in the order textworld's derivation stack is.
        stack: list[Frame] = [(symbol, context) for symbol in reversed(parse_symbols(start))]
        derived: list[str] = []
        while stack:
            symbol, symbol_context = stack.pop()
            if isinstance(symbol, TerminalSymbol):
                derived.append(str(symbol))
            else:
                stack.extend(reversed(self._expand(symbol, symbol_context)))
        return "".join(derived)

    def _expand(self, symbol: Symbol, context: Context) -> list[Frame]:
        """One derivation step of a non-terminal symbol, as textworld's symbol classes take it."""
        if isinstance(symbol, NonterminalSymbol):
            return [(rhs_symbol, context) for rhs_symbol in self._production(symbol, context)]
        if isinstance(symbol, EvalSymbol):
            # textworld's own evaluation; with an explicit context it never reads symbol.context.
            return [(terminal, context) for terminal in symbol.derive(context)]
        if isinstance(symbol, ConditionalSymbol):
            return self._conditional(symbol, context)
        if isinstance(symbol, ListSymbol):
            return self._list(symbol, context)
        raise NotImplementedError(f"unknown grammar symbol type: {type(symbol).__name__}")

    def _production(self, symbol: NonterminalSymbol, context: Context) -> list[Symbol]:
        """The right-hand side of the first rule whose condition holds (textworld's `replace`)."""
        rules = self._rules.get(str(symbol))
        if not rules:
            raise CSGUnknownSymbolError(symbol)
        for rule in rules:
            if not rule.condition or _matches(rule.condition, context):
                return rule.rhs
        raise IndexError(f"no production rule of #{symbol}# applies in this state")

    @staticmethod
    def _conditional(symbol: ConditionalSymbol, context: Context) -> list[Frame]:
        """`{expression | given}`: the expression once per match of `given` (once if none given)."""
        if not symbol.given:
            return [(symbol.expression, context)]
        return [(symbol.expression, _bind(context, mapping)) for mapping in _matches(symbol.given, context)]

    def _list(self, symbol: ListSymbol, context: Context) -> list[Frame]:
        """`[...]`: the items joined by the grammar's list separators (textworld's `display_list`)."""
        items = self._expand(symbol.symbol, context)
        if len(items) <= 1:
            return items or [(_LIST_EMPTY, context)]
        joined = [frame for item in items[:-2] for frame in (item, (_LIST_SEPARATOR, context))]
        return joined + [items[-2], (_LIST_LAST_SEPARATOR, context), items[-1]]
