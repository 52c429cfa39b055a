"""The QA prompt the decoder reads after the context (what cuts its answer: decoding/answers.py)."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError, InputError

# The newline that opens the prompt separates it from the context (or the slots). With it, the
# zero-shot bounds on the bundled Gemma-3-270M reproduce the reference figures within 1 F1;
# without it, NaturalQuestions F1 falls by 3.5 (results/prompt_check/README.md).
DEFAULT_TEMPLATE = (
    "\nQuestion: {question}\nAnswer the question directly with a short span only, no explanation. Answer:"
)


@dataclass(frozen=True)
class PromptTemplate:
    """A prompt with one `{question}` field, read after `[BOS] + context (or slots)`.

    Every method reads the same prompt; no special token stands between the context and it.
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

