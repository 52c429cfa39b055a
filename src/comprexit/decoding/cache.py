"""A prefilled prefix: the decoder's key/value cache over what is read before the prompts.

For many questions over one document, a decoder computes the cache of `[BOS] + prefix` once
(`Decoder.prefill`) and every question batch only prefills itself (`Decoder.cached_answers`),
leaving the cache as it was. A key/value prefix (500x) is such a cache too, one row per prompt.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch

if TYPE_CHECKING:
    from ..backbone import Backbone
    from .base import Decoder


@dataclass(eq=False)
class PrefixCache:
    """past_key_values: the cache (a DynamicCache; a static decoder's batch-1 snapshot).
    mask: (rows, length) long, 1 on the cached positions the prompts attend to; one row (a
        document's, shared by every prompt) or one per prompt (key/value prefixes).
    start: position id of the first token read after the cache (an int, or one per row).
    decoder: the decoder that made it; only it reads it (a static snapshot fits its caches alone).
    """

    past_key_values: object
    mask: torch.Tensor
    start: int | Sequence[int]
    decoder: "Decoder"

    @property
    def length(self) -> int:
        return int(self.mask.shape[1])

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])

    def nbytes_by_layer_type(self, backbone: "Backbone") -> dict[str, int]:
        """Bytes of keys and values per attention type (Gemma-3 caps sliding-window layers); a
        static snapshot counts all it allocates, its whole cache length."""
        types = getattr(backbone.config, "layer_types", None) or ["full_attention"] * backbone.identity.num_layers
        sizes: dict[str, int] = defaultdict(int)
        for index, layer in enumerate(self.past_key_values.layers):
            for tensor in (layer.keys, layer.values):
                if tensor is not None:
                    sizes[types[index]] += tensor.numel() * tensor.element_size()
        return dict(sizes)
