"""The QA prompt the decoder reads after the context, and answer post-processing."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ConfigError, InputError

DEFAULT_TEMPLATE = (
    "Question: {question}\nAnswer the question directly with a short span only, no explanation. Answer:"
)

_CUT = re.compile(r"[.\n]")


@dataclass(frozen=True)
class PromptTemplate:
    """A prompt with one `{question}` field, read after `[BOS] + context (or slots)`.

    No separator or special token stands between the context and the prompt (METHOD.md).
    """

    text: str = DEFAULT_TEMPLATE

    def __post_init__(self) -> None:
        if self.text.count("{question}") != 1:
            raise ConfigError(f"a prompt template needs exactly one '{{question}}' field, got {self.text!r}")
        try:
            self.text.format(question="")
        except (KeyError, IndexError, ValueError) as error:
            raise ConfigError(f"prompt template {self.text!r} has fields other than {{question}}: {error}") from error

    def render(self, question: str) -> str:
        if not isinstance(question, str) or not question.strip():
            raise InputError("the question is empty")
        return self.text.format(question=question.strip())


def postprocess_answer(text: str) -> str:
    """Cut a generated answer at its first "." or newline (the evaluation protocol), trimmed."""
    return _CUT.split(text.strip(), maxsplit=1)[0].strip()
