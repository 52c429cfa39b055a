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
        raise ConfigError(f"unknown answer rule {name!r}; known rules: {', '.join(sorted(_RULES))}")
    return _RULES[name]


_FIRST_BREAK = re.compile(r"[.\n]")


@answer_rule(PAPER)
def cut_at_first_period(text: str) -> str:
    """The text up to its first "." or newline, trimmed (the paper's evaluation protocol)."""
    return _FIRST_BREAK.split(text.strip(), maxsplit=1)[0].strip()
