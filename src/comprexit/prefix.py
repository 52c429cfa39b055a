"""What a method hands the frozen decoder before `[BOS] + prompt`: vectors, or keys and values.

* Soft prefix: vectors in the decoder's input-embedding space (ComprExIT's slots, ICAE's
  memory states, prompt-tuning tokens, kept context tokens). Per context a
  `(positions, hidden)` tensor; batched for training as `SoftPrefixBatch`.
* Key/value prefix (500xCompressor): every layer's keys and values of a few positions,
  which the decoder attends to as a cache. Per context a `KVPrefix`; batched as
  `KVPrefixBatch`. The decoder then reads `[BOS] + prompt` after the cache, at position ids
  that continue those the encoder gave the cached positions (`next_position`), so rotary
  position offsets between the prompt and the cache are the ones the encoder produced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch
from transformers import DynamicCache

if TYPE_CHECKING:
    from .backbone import Backbone


@dataclass(eq=False)
class KVPrefix:
    """One context's key/value prefix.

    keys, values: per decoder layer a (kv_heads, positions, head_dim) tensor (after the
        layer's own key normalisation and rotary embedding, as a cache holds them).
    next_position: position id of the first token the decoder reads after them.
    """

    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    next_position: int

    def __len__(self) -> int:
        return int(self.keys[0].shape[-2])


@dataclass(eq=False)
class SoftPrefixBatch:
    """embeds: (batch, P, hidden) input-embedding vectors; row i's first `lengths[i]` are real, the rest padding."""

    embeds: torch.Tensor
    lengths: list[int]

    def rows(self) -> list[torch.Tensor]:
        return [row[:n] for row, n in zip(self.embeds, self.lengths)]


@dataclass(eq=False)
class KVPrefixBatch:
    """A batch of key/value prefixes, left-padded so each row's real positions end the cache.

    keys, values: per layer (batch, kv_heads, P, head_dim); row i's last `lengths[i]`
        positions are real. next_positions: per row, the position id after its prefix.
    """

    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    lengths: list[int]
    next_positions: list[int]

    @property
    def width(self) -> int:
        return int(self.keys[0].shape[-2])

    def mask(self) -> torch.Tensor:
        """(batch, P) long attention mask, 1 on real positions."""
        device = self.keys[0].device
        lengths = torch.tensor(self.lengths, device=device)
        return (torch.arange(self.width, device=device)[None, :] >= self.width - lengths[:, None]).long()

    def rows(self) -> list[KVPrefix]:
        P = self.width
        return [
            KVPrefix(tuple(k[i, :, P - n :] for k in self.keys), tuple(v[i, :, P - n :] for v in self.values), start)
            for i, (n, start) in enumerate(zip(self.lengths, self.next_positions))
        ]

    @classmethod
    def stack(cls, rows: Sequence[KVPrefix]) -> "KVPrefixBatch":
        """Left-pad single prefixes (zeros on padding) into one batch."""
        width = max(len(r) for r in rows)

        def pad(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
            heads, _, dim = tensors[0].shape
            out = tensors[0].new_zeros(len(tensors), heads, width, dim)
            for i, t in enumerate(tensors):
                out[i, :, width - t.shape[1] :] = t
            return out

        layers = len(rows[0].keys)
        return cls(
            keys=tuple(pad([r.keys[layer] for r in rows]) for layer in range(layers)),
            values=tuple(pad([r.values[layer] for r in rows]) for layer in range(layers)),
            lengths=[len(r) for r in rows],
            next_positions=[r.next_position for r in rows],
        )

    def cache(self, backbone: "Backbone") -> DynamicCache:
        """A fresh decoder cache holding these keys and values (the model's own sliding-window layers included)."""
        dtype = backbone.dtype
        data = [(k.to(dtype), v.to(dtype)) for k, v in zip(self.keys, self.values)]
        return DynamicCache(ddp_cache_data=data, config=backbone.model.config)
