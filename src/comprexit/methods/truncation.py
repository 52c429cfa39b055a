"""Truncation baselines: the decoder reads only ceil(T / ratio) of the context's tokens, uncompressed.

The same budget of decoder positions as ComprExIT's slots at that ratio, spent on the last
(`truncate-last`) or the first (`truncate-first`) tokens of the (already budget-cut) context.
Nothing is trained.
"""

from __future__ import annotations

import math
from typing import Sequence

from ..backbone import Backbone
from ..config import is_int_at_least
from ..errors import ConfigError
from ..prefix import SoftPrefix
from .base import DecoderPrefix, Method, register_method


class RatioBudget(Method):
    """A training-free method whose prefix has ceil(T / ratio) positions (`--ratio`, default 4)."""

    def __init__(self, backbone: Backbone, ratio: int = 4):
        super().__init__(backbone)
        if not is_int_at_least(ratio, 1):
            raise ConfigError(f"ratio must be an integer >= 1, got {ratio!r}")
        self.ratio = ratio

    def settings(self) -> dict:
        return {"method": self.name, "ratio": self.ratio}


class Truncation(RatioBudget):
    """Keep `ceil(T / ratio)` context tokens; subclasses choose which."""

    def keep(self, context: list[int], budget: int) -> list[int]:
        raise NotImplementedError

    def prepare(self, contexts: Sequence[Sequence[int]]) -> DecoderPrefix:
        kept = [self.keep(list(c), math.ceil(len(c) / self.ratio)) for c in contexts]
        return DecoderPrefix([SoftPrefix.of_tokens(self.backbone, k) for k in kept])


@register_method("truncate-last")
class TruncateLast(Truncation):
    """The last ceil(T / ratio) tokens (the ones nearest the question)."""

    def keep(self, context: list[int], budget: int) -> list[int]:
        return context[len(context) - budget :]


@register_method("truncate-first")
class TruncateFirst(Truncation):
    """The first ceil(T / ratio) tokens."""

    def keep(self, context: list[int], budget: int) -> list[int]:
        return context[:budget]
