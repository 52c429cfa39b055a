"""Mean pooling: each slot is the mean of `ratio` consecutive context-token input embeddings.

A training-free reference with exactly ComprExIT's slot layout (slot k covers tokens
k*r .. k*r + r - 1, the last slot what remains). The frozen decoder reads these superposed
embeddings as `[BOS] + slots + prompt`.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..prefix import SoftPrefix
from .base import DecoderPrefix, register_method
from .truncation import RatioBudget


@register_method("mean-pool")
class MeanPool(RatioBudget):
    """ceil(T / ratio) slots, each the average input embedding of its field of r tokens."""

    @torch.no_grad()
    def prepare(self, contexts: Sequence[Sequence[int]]) -> DecoderPrefix:
        device = self.backbone.device
        prefixes = []
        for context in contexts:
            embeds = self.backbone.embed(torch.tensor(list(context), device=device)).float()
            fields = embeds.split(self.ratio)  # the last field may be shorter
            prefixes.append(SoftPrefix(torch.stack([f.mean(0) for f in fields]).to(self.backbone.dtype)))
        return DecoderPrefix(prefixes)
