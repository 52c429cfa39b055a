"""The two zero-shot bounds: the frozen model reading the full context, and reading none."""

from __future__ import annotations

from typing import Sequence

from ..prefix import SoftPrefix
from .base import DecoderPrefix, Method, register_method


@register_method("zero-shot")
class FullContext(Method):
    """Upper bound without training: `[BOS] + context tokens + prompt`."""

    def prepare(self, contexts: Sequence[Sequence[int]]) -> DecoderPrefix:
        return DecoderPrefix([SoftPrefix.of_tokens(self.backbone, c) for c in contexts])


@register_method("no-context")
class NoContext(Method):
    """Lower bound: `[BOS] + prompt`; what the model knows without the document."""

    def prepare(self, contexts: Sequence[Sequence[int]]) -> DecoderPrefix:
        return DecoderPrefix([SoftPrefix.of_tokens(self.backbone, []) for _ in contexts])
