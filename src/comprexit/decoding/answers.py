"""Where an answer ends: the stop tokens that end greedy decoding, and the rules that cut its text.

Two steps, two settings. A decoder stops a row at its first stop token (`Decoder(stops=...)`;
by default the model's end-of-sequence ids; none at all to decode exactly `max_new_tokens`,
as the serving benchmark times them). The decoded text is then cut by a named answer rule.

Adding a rule: a function `str -> str` decorated `@answer_rule("name")`; readers and runners
pick it by name (`get_answer_rule`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Callable, Sequence

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..backbone import Backbone

AnswerRule = Callable[[str], str]

_RULES: dict[str, AnswerRule] = {}

PAPER = "paper"  # the evaluation protocol's cut, which every reported number uses
SENTENCE = "sentence"  # the first sentence, for people: what `ask` and `Reader` answer with


def default_stops(backbone: "Backbone") -> tuple[int, ...]:
    """The model's end-of-sequence ids (tokenizer EOS first, then the generation config's)."""
    return tuple(backbone.eos_token_ids)


def cut_at_stop(tokens: Sequence[int], stops: Sequence[int]) -> list[int]:
    """The tokens before the first stop token (all of them when none occurs)."""
    for i, token in enumerate(tokens):
        if token in stops:
            return list(tokens[:i])
    return list(tokens)


def answer_rule(name: str):
    """Decorator registering a text -> answer function under `name`."""

    def register(rule: AnswerRule) -> AnswerRule:
        if name in _RULES:
            raise ValueError(f"answer rule {name!r} is registered twice")
        _RULES[name] = rule
        return rule

    return register


def get_answer_rule(name: str) -> AnswerRule:
    if name not in _RULES:
        raise ConfigError(f"unknown answer rule {name!r}; known rules: {', '.join(answer_rules())}")
    return _RULES[name]


def answer_rules() -> list[str]:
    """The registered rule names, sorted."""
    return sorted(_RULES)


_FIRST_BREAK = re.compile(r"[.\n]")


@answer_rule(PAPER)
def cut_at_first_period(text: str) -> str:
    """The text up to its first "." or newline, trimmed (the paper's evaluation protocol)."""
    return _FIRST_BREAK.split(text.strip(), maxsplit=1)[0].strip()


# A full stop that ends a sentence: followed by whitespace or the end of the text. One followed by
# anything else sits inside a token (3.14.2, example.org/a.b, a.b@example.org) and never cuts.
_FULL_STOP = re.compile(r"\.(?=\s|$)")
# What comes before a full stop that does not end a sentence: initials and letter-dot abbreviations
# (e.g., i.e., U.S., J.), and the common abbreviations of names, titles, places and references.
_INITIALS = re.compile(r"(?:[A-Za-z]\.)*[A-Za-z]")
ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st jr sr vs etc cf ca approx fig vol pp ed eds inc ltd co corp dept univ est "
    "mt ft ave rd blvd gen col capt lt sgt rev hon "
    "jan feb mar apr jun jul aug sep sept oct nov dec".split()
)
_OPENERS = "\"'([{\u201c\u2018"


def _ends_abbreviation(text: str, stop: int) -> bool:
    """Whether the word before the full stop at `stop` is an abbreviation (the stop is part of it)."""
    word = text[: stop].rsplit(maxsplit=1)[-1].lstrip(_OPENERS) if text[:stop].strip() else ""
    return bool(word) and (_INITIALS.fullmatch(word) is not None or word.lower() in ABBREVIATIONS)


@answer_rule(SENTENCE)
def first_sentence(text: str) -> str:
    """The first line's first sentence, trimmed: cut at a full stop followed by whitespace or the
    end (a run of full stops goes with it), never inside a version, decimal, URL or e-mail address
    and never after an abbreviation ("e.g.", "Dr.", "U.S.", initials), which keeps its full stop.
    End-of-sequence tokens have already ended the text (`Decoder.stops`)."""
    line = text.strip().split("\n", 1)[0]
    for stop in _FULL_STOP.finditer(line):
        end = stop.start()
        if _ends_abbreviation(line, end):
            continue
        return line[:end].rstrip(".").strip()
    return line.strip()
