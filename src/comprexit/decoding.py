"""Assemble what the decoder reads, `[BOS] + prefix + prompt (+ target)`, and decode from it.

Rows are left-padded so that every row's real positions are contiguous and its last real
token sits at the end, which batched greedy decoding needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .backbone import Backbone


@dataclass
class DecoderBatch:
    """inputs_embeds: (batch, length, hidden); attention_mask: (batch, length) long, 0 on left padding."""

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor

    @property
    def position_ids(self) -> torch.Tensor:
        """0 at each row's first real position, so left padding does not shift positions."""
        return (self.attention_mask.cumsum(-1) - 1).clamp_min(0)


def build_decoder_batch(
    backbone: Backbone,
    prefixes: Sequence[torch.Tensor | None],
    prompts: Sequence[Sequence[int]],
) -> DecoderBatch:
    """Left-padded `[BOS] + prefix_i + embed(prompt_i)` for every row.

    prefixes: per row a (n_i, hidden) tensor of vectors already in input-embedding space
        (slots, or embedded context tokens), or None for no prefix.
    prompts: per row the token ids read after the prefix.
    """
    device, dtype = backbone.device, backbone.dtype
    bos = backbone.embed(torch.tensor(backbone.bos_ids, dtype=torch.long, device=device))
    rows = []
    for prefix, prompt in zip(prefixes, prompts, strict=True):
        parts = [bos]
        if prefix is not None and len(prefix):
            parts.append(prefix.to(device, dtype))
        if len(prompt):
            parts.append(backbone.embed(torch.tensor(list(prompt), dtype=torch.long, device=device)))
        rows.append(torch.cat(parts).to(dtype))
    width = max(len(row) for row in rows)
    embeds = torch.zeros(len(rows), width, backbone.hidden_size, dtype=dtype, device=device)
    mask = torch.zeros(len(rows), width, dtype=torch.long, device=device)
    for i, row in enumerate(rows):
        embeds[i, width - len(row) :] = row
        mask[i, width - len(row) :] = 1
    return DecoderBatch(embeds, mask)


def greedy_answers(
    backbone: Backbone,
    prefixes: Sequence[torch.Tensor | None],
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int = 20,
) -> list[str]:
    """Greedy continuations (raw text, not yet post-processed) of each row."""
    batch = build_decoder_batch(backbone, prefixes, prompts)
    tokens = backbone.generate(batch.inputs_embeds, batch.attention_mask, max_new_tokens=max_new_tokens)
    return [backbone.decode(row) for row in tokens]
