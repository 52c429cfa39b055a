"""The text that trained prompt vectors start from, and its input embeddings.

Trained vectors in the input-embedding space (prompt tuning's virtual tokens, ComprExIT's reader
tokens) start as the input embeddings (Gemma's sqrt(H) scale included) of the tokens of
`INIT_TEXT`, repeated to fill them: real vocabulary embeddings are a common choice (Lester et
al., 2021) and put the vectors on the scale the decoder expects. Kept apart from `prompting`,
which scripts without torch borrow.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from .errors import ConfigError

if TYPE_CHECKING:
    from .backbone import Backbone

INIT_TEXT = "Read the document below carefully, then answer the question about it with a short span taken from it."


@torch.no_grad()
def text_vectors(backbone: "Backbone", text: str, count: int) -> torch.Tensor:
    """(count, hidden) float32 input embeddings of `text`'s tokens, repeated to fill `count`: the start of trained
    prompt vectors."""
    ids = backbone.tokenize(text)
    if not ids:
        raise ConfigError(f"init_text {text!r} gives no tokens")
    ids = (ids * math.ceil(count / len(ids)))[:count]
    return backbone.embed(torch.tensor(ids, device=backbone.device)).float()
