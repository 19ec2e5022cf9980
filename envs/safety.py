"""Refuse game files whose grammar could run code.

textworld derives every observation from the grammar stored inside `game.tw-pddl`, and its
text generator evaluates `{...}` expressions of that grammar with Python's `eval`. A crafted
game file therefore runs arbitrary code the moment it is played. Official ALFWorld games all
carry alfworld's own grammar with one line changed: the placeholder `UNKNOWN GOAL` replaced by
the task sentence. So we accept exactly that shape, with a sentence made of plain words, and
refuse everything else before the engine sees it (unless the user trusts the files).
"""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path

GOAL_PLACEHOLDER = "UNKNOWN GOAL"

# Plain words: letters, digits, spaces and harmless punctuation. Everything that means something
# to textworld's grammar language ({ } [ ] # | ; < >), quotes that would end the JSON string the
# sentence sits in, backslashes and control characters are out.
_PLAIN_SENTENCE = re.compile(r"[A-Za-z0-9 ,.'!?:()/&-]{1,300}")

# sha256 of alfworld 0.3.x's alfred.twl2, the grammar that older data releases carry (its
# command for placing objects reads "put X in/on Y"). We derive that text from the installed
# grammar instead of shipping a copy; the test suite checks the derivation against this hash.
LEGACY_GRAMMAR_SHA256 = "d955e6db384c68ac5797e881b795fd36d788e87a03547f9a87e48fbd7c5b361b"


class UnsafeGameError(ValueError):
    """A game file's grammar is not a known ALFWorld grammar; loading it could run code."""


def current_grammar() -> str:
    """The grammar template shipped with the installed alfworld (`alfred.twl2`)."""
    from alfworld.info import ALFRED_TWL2_PATH

    return Path(ALFRED_TWL2_PATH).read_text()


def legacy_grammar(current: str) -> str:
    """The grammar of alfworld 0.3.x, rebuilt from the current one by undoing the 0.4 changes.

    0.4 renamed the placing command from "put X in/on Y" to "move X to Y", renamed one variable
    of the arrival message and added a `help` action at the end of the file.
    """
    legacy = current.replace(
        '"rhs": "You arrive at {r.name}. #examineReceptacle.feedback#"',
        '"rhs": "You arrive at {lend.name}. #examineReceptacle.feedback#"',
    )
    legacy = legacy.replace(
        '"rhs": "You move the {o.name} to the {r.name}."', '"rhs": "You put the {o.name} in/on the {r.name}."'
    )
    legacy = legacy.replace('template :: "move {o} to {r}";', 'template :: "put {o} in/on {r}";')
    help_action = legacy.index("\n\naction help {")
    return legacy[:help_action] + "\n"


@functools.cache
def known_grammars() -> tuple[str, ...]:
    """Grammar templates we accept (each holds the goal placeholder exactly once)."""
    current = current_grammar()
    return (current, legacy_grammar(current))


def extract_task_sentence(grammar: str) -> str:
    """Return the task sentence of a game grammar, or raise UnsafeGameError.

    The grammar must equal a known ALFWorld grammar with `UNKNOWN GOAL` replaced by a sentence
    of plain words.
    """
    for template in known_grammars():
        prefix, suffix = template.split(GOAL_PLACEHOLDER)
        if len(grammar) > len(prefix) + len(suffix) and grammar.startswith(prefix) and grammar.endswith(suffix):
            sentence = grammar[len(prefix) : len(grammar) - len(suffix)]
            if not _PLAIN_SENTENCE.fullmatch(sentence):
                raise UnsafeGameError(
                    f"the task sentence {sentence[:80]!r} is not plain words: it holds characters "
                    "that textworld's grammar language interprets ({ } [ ] # | ; < > quotes or "
                    "control characters)"
                )
            return sentence
    raise UnsafeGameError(
        "its grammar is not alfworld's alfred.twl2 with the task sentence filled in "
        "(textworld evaluates grammar expressions as Python, so unknown grammars are refused)"
    )


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
