"""The two zero-shot bounds: the frozen model reading the full context, and reading none."""

from __future__ import annotations

from typing import Sequence

import torch

from .base import DecoderPrefix, Method, register_method


@register_method("zero-shot")
class FullContext(Method):
    """Upper bound without training: `[BOS] + context tokens + prompt`."""

    def prepare(self, contexts: Sequence[Sequence[int]]) -> DecoderPrefix:
        device = self.backbone.device
        return DecoderPrefix([self.backbone.embed(torch.tensor(list(c), device=device)) for c in contexts])


@register_method("no-context")
class NoContext(Method):
    """Lower bound: `[BOS] + prompt`; what the model knows without the document."""

    def prepare(self, contexts: Sequence[Sequence[int]]) -> DecoderPrefix:
        return DecoderPrefix([None] * len(contexts))
