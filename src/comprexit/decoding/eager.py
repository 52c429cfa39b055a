"""The default decoder: transformers' generate over dynamic caches, run eagerly.

The fastest path on a CPU, where compiling costs minutes and rarely pays; the reference the
static decoders are checked against, token for token.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Sequence

from transformers import DynamicCache
from transformers.cache_utils import Cache

from ..assembly import DecoderInputs
from .cache import PrefixCache
from .generate import GenerateDecoder
from .prefill import PREFILL_CHUNK, Advance, prefill

if TYPE_CHECKING:
    from ..backbone import Backbone


class DynamicCaches:
    """Caches that grow with what they hold (the model's own sliding-window layers included)."""

    def __init__(self, backbone: "Backbone"):
        self.backbone = backbone

    def fresh(self, rows: int, positions: int) -> Cache:
        return DynamicCache(config=self.backbone.model.config.get_text_config(decoder=True))

    def snapshot(self, inputs: DecoderInputs, chunk: int | None, advance: Advance | None = None) -> Cache:
        return prefill(self.backbone.model, self.fresh(1, inputs.width), inputs, chunk, advance)

    def working(self, cache: PrefixCache, rows: int, positions: int) -> Cache:
        """A copy (generation appends to the cache it is given), with a row per prompt."""
        past = copy.deepcopy(cache.past_key_values)
        if cache.rows != rows:
            past.batch_repeat_interleave(rows)
        return past

    def describe(self) -> dict:
        return {"cache": "dynamic"}


class EagerDecoder(GenerateDecoder):
    """Greedy decoding by generate over dynamic caches, uncompiled."""

    def __init__(self, backbone: "Backbone", stops: Sequence[int] | None = None,
                 prefill_chunk: int | None = PREFILL_CHUNK):
        super().__init__(backbone, DynamicCaches(backbone), None, stops, prefill_chunk)

    def describe(self) -> dict:
        return {**super().describe(), "compiled": False}
