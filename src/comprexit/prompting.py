"""The QA prompt the decoder reads after the context (what cuts its answer: decoding/answers.py), and
the text that trained prompt vectors start from.

Trained vectors in the input-embedding space (prompt tuning's virtual tokens, ComprExIT's reader
tokens) start as the input embeddings (Gemma's sqrt(H) scale included) of the tokens of
`INIT_TEXT`, repeated to fill them: real vocabulary embeddings are a common choice (Lester et
al., 2021) and put the vectors on the scale the decoder expects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .errors import ConfigError, InputError

if TYPE_CHECKING:
    from .backbone import Backbone

INIT_TEXT = "Read the document below carefully, then answer the question about it with a short span taken from it."

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



@torch.no_grad()
def text_vectors(backbone: "Backbone", text: str, count: int) -> torch.Tensor:
    """(count, hidden) float32 input embeddings of `text`'s tokens, repeated to fill `count`: the start of trained
    prompt vectors."""
    ids = backbone.tokenize(text)
    if not ids:
        raise ConfigError(f"init_text {text!r} gives no tokens")
    ids = (ids * math.ceil(count / len(ids)))[:count]
    return backbone.embed(torch.tensor(ids, device=backbone.device)).float()
