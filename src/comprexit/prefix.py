"""What a method hands the frozen decoder before the prompt: vectors, or keys and values.

Two kinds, each a type that knows how the decoder reads it, in evaluation (`answers`, rows of
one kind) and in training (`final_states`, a batch):

* Soft prefix: vectors in the decoder's input-embedding space (ComprExIT's slots, ICAE's
  memory states, prompt-tuning tokens, kept context tokens), read as `[BOS] + prefix +
  prompt` (ComprExIT's reader tokens, where it has them, lead the prefix). Per context a
  `SoftPrefix`, `(positions, hidden)`; none at all is an empty one
  (the no-context bound). Batched for training as `SoftPrefixBatch`.
* Key/value prefix (500xCompressor): every layer's keys and values of a few positions,
  which the decoder attends to as a cache, then reads `[BOS] + prompt` at position ids that
  continue those the encoder gave the cached positions (`next_position`), so rotary position
  offsets between the prompt and the cache are the ones the encoder produced. Per context a
  `KVPrefix`; batched as `KVPrefixBatch`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch
from torch.nn.utils.rnn import pad_sequence
from transformers import DynamicCache

from .assembly import LEFT, RIGHT, DecoderInputs, Tokens, Vectors, assemble
from .decoding.cache import PrefixCache
from .decoding.eager import EagerDecoder

if TYPE_CHECKING:
    from .backbone import Backbone
    from .decoding.base import Decoder


class Prefix(ABC):
    """One context's prefix."""

    @abstractmethod
    def __len__(self) -> int:
        """Positions the decoder reads for it."""

    @abstractmethod
    def stored_values(self) -> int:
        """Numbers it holds: what keeping this context's compressed form costs, whatever their precision."""

    @classmethod
    @abstractmethod
    def answers(cls, decoder: "Decoder", rows: Sequence["Prefix"], prompts: Sequence[Sequence[int]],
                max_new_tokens: int) -> list[str]:
        """Raw greedy text of each prompt read after its row (all rows of this kind)."""


@dataclass(eq=False)
class SoftPrefix(Prefix):
    """embeds: (positions, hidden) input-embedding vectors read between `[BOS]` and the prompt."""

    embeds: torch.Tensor

    @classmethod
    def of_tokens(cls, backbone: "Backbone", ids: Sequence[int]) -> "SoftPrefix":
        """The input embeddings of token ids (none: an empty prefix)."""
        return cls(backbone.embed(torch.tensor(list(ids), dtype=torch.long, device=backbone.device)))

    def __len__(self) -> int:
        return int(self.embeds.shape[0])

    def stored_values(self) -> int:
        return int(self.embeds.numel())

    @classmethod
    def answers(cls, decoder, rows, prompts, max_new_tokens) -> list[str]:
        inputs = SoftPrefixBatch.stack(rows).inputs(decoder.backbone, prompts, side=LEFT)
        return decoder.texts(decoder.generate(inputs, max_new_tokens))


@dataclass(eq=False)
class KVPrefix(Prefix):
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

    def stored_values(self) -> int:
        return sum(int(k.numel()) + int(v.numel()) for k, v in zip(self.keys, self.values, strict=True))

    @classmethod
    def answers(cls, decoder, rows, prompts, max_new_tokens) -> list[str]:
        """Left-padded `[BOS] + prompt_i` after row i's keys and values. Always decoded eagerly, with the
        decoder's stop tokens: the prefixes differ per row (nothing to share), and 500x is a
        training-time baseline."""
        backbone = decoder.backbone
        batch = KVPrefixBatch.stack(rows)
        eager = EagerDecoder(backbone, decoder.stops)
        cache = PrefixCache(batch.cache(backbone), batch.mask(), batch.next_positions, eager)
        return eager.cached_answers(cache, [backbone.bos_ids + list(p) for p in prompts], max_new_tokens, exact=False)


@dataclass(eq=False)
class SoftPrefixBatch:
    """embeds: (batch, P, hidden) input-embedding vectors; row i's first `lengths[i]` are real, the rest padding.

    lead: (Q, hidden) vectors every row reads first, between `[BOS]` and its own (ComprExIT's reader
        tokens), or None. They belong to a document, not to one of its chunks: `lengths` does not
        count them, and joining chunks (`chunks.join_chunks`) keeps them once.
    """

    embeds: torch.Tensor
    lengths: list[int]
    lead: torch.Tensor | None = None

    @classmethod
    def stack(cls, rows: Sequence[SoftPrefix]) -> "SoftPrefixBatch":
        """Pad single prefixes on the right into one batch."""
        first = rows[0].embeds
        return cls(pad_sequence([r.embeds.to(first) for r in rows], batch_first=True), [len(r) for r in rows])

    @classmethod
    def empty(cls, backbone: "Backbone", rows: int) -> "SoftPrefixBatch":
        """No prefix for `rows` rows (the no-context reference)."""
        return cls(torch.zeros(rows, 0, backbone.hidden_size, dtype=backbone.dtype, device=backbone.device), [0] * rows)

    def rows(self) -> list[SoftPrefix]:
        """One prefix per row, the lead (if any) before the row's vectors."""
        if self.lead is None:
            return [SoftPrefix(row[:n]) for row, n in zip(self.embeds, self.lengths)]
        return [SoftPrefix(torch.cat([self.lead.to(row), row[:n]])) for row, n in zip(self.embeds, self.lengths)]

    def inputs(self, backbone: "Backbone", tokens: Sequence[Sequence[int]], insert: torch.Tensor | None = None,
               side: str = RIGHT) -> DecoderInputs:
        """`[BOS] (+ lead) + prefix_i (+ insert) + tokens_i` per row; insert: an optional (hidden,) vector."""
        rows = len(self.lengths)
        lead = [] if self.lead is None else [Vectors(self.lead, [len(self.lead)] * rows)]
        return assemble(backbone, Tokens([backbone.bos_ids] * rows), *lead, Vectors(self.embeds, self.lengths),
                        *_marker(insert, rows), Tokens(tokens), side=side)

    def final_states(self, backbone: "Backbone", targets: Sequence[Sequence[int]], insert: torch.Tensor | None = None,
                     ) -> tuple[torch.Tensor, list[int]]:
        """(batch, width, hidden) final states over right-padded `[BOS] + prefix_i (+ insert) + targets_i`,
        and each row's column of its first target."""
        inputs = self.inputs(backbone, targets, insert)
        return backbone.final_hidden(inputs.embeds(), inputs.attention_mask, inputs.position_ids), inputs.starts[-1]


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
    def gather(cls, keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor], columns: Sequence[Sequence[int]],
               next_positions: list[int]) -> "KVPrefixBatch":
        """Row i's `columns[i]` (in order) of an encoder pass's per-layer (batch, kv_heads, S, head_dim) keys and
        values (a cache's), left-padded with zeros; differentiable."""
        lengths = [len(row) for row in columns]
        width = max(lengths)
        index = torch.zeros(len(columns), width, dtype=torch.long)
        for i, row in enumerate(columns):
            index[i, width - len(row) :] = torch.tensor(list(row), dtype=torch.long)
        device = keys[0].device
        index = index.to(device)
        real = (torch.arange(width)[None, :] >= width - torch.tensor(lengths)[:, None]).to(device)[:, None, :, None]

        def pick(states: torch.Tensor) -> torch.Tensor:  # (batch, kv_heads, S, head_dim) -> (batch, kv_heads, width, head_dim)
            return states.gather(2, index[:, None, :, None].expand(-1, states.shape[1], -1, states.shape[3])) * real

        return cls(tuple(pick(k) for k in keys), tuple(pick(v) for v in values), lengths, list(next_positions))

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

    def inputs(self, backbone: "Backbone", tokens: Sequence[Sequence[int]], insert: torch.Tensor | None = None,
               side: str = RIGHT) -> DecoderInputs:
        """`[BOS] (+ insert) + tokens_i` per row, at positions continuing row i's prefix."""
        rows = len(self.lengths)
        return assemble(backbone, Tokens([backbone.bos_ids] * rows), *_marker(insert, rows), Tokens(tokens), side=side,
                        start=self.next_positions)

    def final_states(self, backbone: "Backbone", targets: Sequence[Sequence[int]], insert: torch.Tensor | None = None,
                     ) -> tuple[torch.Tensor, list[int]]:
        """(batch, width, hidden) final states of the new positions, `[BOS] (+ insert) + targets_i` read
        after row i's keys and values, and each row's column of its first target."""
        inputs = self.inputs(backbone, targets, insert)
        final = backbone.final_hidden(inputs.embeds(), inputs.attention_after(self.mask()), inputs.position_ids,
                                      past_key_values=self.cache(backbone))
        return final, inputs.starts[-1]


def _marker(insert: torch.Tensor | None, rows: int) -> list[Vectors]:
    """The segment of one (hidden,) vector read by every row (the autoencoding marker), or none."""
    return [] if insert is None else [Vectors(insert[None], [1] * rows)]
