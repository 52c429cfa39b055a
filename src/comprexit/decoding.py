"""Assemble what the decoder reads, `[BOS] + prefix + prompt (+ target)`, and decode from it.

Rows are left-padded so that every row's real positions are contiguous and its last real
token sits at the end, which batched greedy decoding needs. A key/value prefix (500x) is
read as `cache + [BOS] + prompt` instead (see `prefix.py`).

For many questions over one document, `prefill` computes the decoder's key/value cache of
`[BOS] + prefix` once and `cached_answers` reuses it, so each question only prefills itself.
There the padding of a batch sits between the cached prefix and the prompts. Positions stay
contiguous, but a sliding-window layer (Gemma-3: 512 positions) also counts those pad slots
once a sequence outgrows its window, so its window holds a few real tokens fewer. With
`exact=True` (the default) prompts are then batched by length, so that no padding is needed
and the answers equal those of the left-padded path; `exact=False` batches them all, as a
throughput-minded server would.

`greedy_answers` and `prefill` take an optional `StaticDecoder` (static_decoding.py): decoding
then runs from preallocated static caches, with the decode steps compiled by generate where the
decoder says so, or, with its subclass `GraphDecoder` (graph_decoding.py), through our own
compiled loop; a `PrefixCache` prefilled with a decoder holds a static snapshot, and
`cached_answers` decodes it through that decoder. Answers are the same token for token; the eager
dynamic cache stays the default, being the faster one on a CPU.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import torch

from .backbone import Backbone
from .prefix import KVPrefix, KVPrefixBatch
from .static_decoding import StaticDecoder


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
    prefixes: Sequence[torch.Tensor | KVPrefix | None],
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int = 20,
    decoder: StaticDecoder | None = None,
) -> list[str]:
    """Greedy continuations (raw text, not yet post-processed) of each row.

    prefixes: per row a (positions, hidden) tensor or None, read as `[BOS] + prefix + prompt`;
        or, for every row, a `KVPrefix`, read as `cache + [BOS] + prompt` (always decoded eagerly:
        the 500x prefixes differ per row, and they are a training-time baseline).
    decoder: decode from a static cache (see static_decoding.py) instead of a dynamic one.
    """
    if any(isinstance(p, KVPrefix) for p in prefixes):
        return _kv_greedy_answers(backbone, prefixes, prompts, max_new_tokens)
    batch = build_decoder_batch(backbone, prefixes, prompts)
    tokens = backbone.generate(batch.inputs_embeds, batch.attention_mask, max_new_tokens=max_new_tokens,
                               decoder=decoder)
    return [backbone.decode(row) for row in tokens]


def _kv_greedy_answers(backbone, prefixes, prompts, max_new_tokens) -> list[str]:
    """Left-padded `[BOS] + prompt_i` after row i's key/value prefix, at positions continuing the prefix's."""
    if not all(isinstance(p, KVPrefix) for p in prefixes):
        raise TypeError("a batch mixes key/value prefixes with other prefixes")
    kv = KVPrefixBatch.stack([p for p in prefixes])
    rows = [backbone.bos_ids + list(prompt) for prompt in prompts]
    cached, width = kv.width, max(len(r) for r in rows)
    ids = torch.full((len(rows), cached + width), backbone.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    positions = torch.zeros_like(ids)
    mask[:, :cached] = kv.mask().cpu()
    for i, (row, start) in enumerate(zip(rows, kv.next_positions)):
        ids[i, cached + width - len(row) :] = torch.tensor(row)
        mask[i, cached + width - len(row) :] = 1
        positions[i, cached + width - len(row) :] = torch.arange(start, start + len(row))
    tokens = backbone.generate(
        attention_mask=mask, max_new_tokens=max_new_tokens, input_ids=ids, past_key_values=kv.cache(backbone),
        position_ids=positions,
    )
    return [backbone.decode(row) for row in tokens]


@dataclass
class PrefixCache:
    """The decoder's key/value cache over `[BOS] + prefix` for one document.

    past_key_values: a batch-1 DynamicCache, or with `decoder` a batch-1 StaticCache of
        `max_cache_len` positions that each question batch copies into the decoder's working cache.
    """

    past_key_values: object
    length: int
    decoder: StaticDecoder | None = None
    max_cache_len: int | None = None

    def nbytes_by_layer_type(self, backbone: Backbone) -> dict[str, int]:
        """Bytes of keys and values per attention type (Gemma-3 caps sliding-window layers); a
        static snapshot counts all it allocates, its whole cache length."""
        types = getattr(backbone.config, "layer_types", None) or ["full_attention"] * backbone.identity.num_layers
        sizes: dict[str, int] = defaultdict(int)
        for index, layer in enumerate(self.past_key_values.layers):
            for tensor in (layer.keys, layer.values):
                if tensor is not None:
                    sizes[types[index]] += tensor.numel() * tensor.element_size()
        return dict(sizes)


@torch.no_grad()
def prefill(backbone: Backbone, prefix: torch.Tensor | None, decoder: StaticDecoder | None = None) -> PrefixCache:
    """Run `[BOS] + prefix` once and keep the decoder's cache; prefix: (positions, hidden) or None.

    With `decoder`, the cache is a static snapshot for that decoder's caches.
    """
    batch = build_decoder_batch(backbone, [prefix], [[]])
    if decoder is not None:
        snapshot, length = decoder.snapshot(batch.inputs_embeds, batch.attention_mask)
        return PrefixCache(snapshot, batch.inputs_embeds.shape[1], decoder, length)
    out = backbone.model(
        inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask, use_cache=True
    )
    return PrefixCache(out.past_key_values, batch.inputs_embeds.shape[1])


@torch.no_grad()
def cached_answers(
    backbone: Backbone,
    cache: PrefixCache,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int = 20,
    force_new_tokens: bool = False,
    exact: bool = True,
) -> list[str]:
    """Greedy continuations of `cached prefix + prompt_i`; the cache itself is left untouched.

    A cache prefilled with a `StaticDecoder` decodes through that decoder's static caches.
    """
    window = getattr(backbone.config, "sliding_window", None)
    longest = cache.length + max(len(p) for p in prompts) + max_new_tokens
    if exact and window and longest > window and len({len(p) for p in prompts}) > 1:
        answers: dict[int, str] = {}
        for length in sorted({len(p) for p in prompts}):
            rows = [i for i, p in enumerate(prompts) if len(p) == length]
            texts = cached_answers(backbone, cache, [prompts[i] for i in rows], max_new_tokens, force_new_tokens)
            answers.update(zip(rows, texts))
        return [answers[i] for i in range(len(prompts))]
    batch, width = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((batch, cache.length + width), backbone.pad_token_id, dtype=torch.long)
    mask = torch.zeros((batch, cache.length + width), dtype=torch.long)
    mask[:, : cache.length] = 1
    for row, prompt in enumerate(prompts):
        if prompt:
            ids[row, cache.length + width - len(prompt) :] = torch.tensor(list(prompt))
            mask[row, cache.length + width - len(prompt) :] = 1
    # generation appends to the cache it is given, so it gets a copy with a row per question
    if cache.decoder is not None:
        past = cache.decoder.load(cache.past_key_values, cache.max_cache_len, batch, ids.shape[1] + max_new_tokens)
    else:
        past = copy.deepcopy(cache.past_key_values)
        past.batch_repeat_interleave(batch)
    tokens = backbone.generate(
        attention_mask=mask, max_new_tokens=max_new_tokens, input_ids=ids, past_key_values=past,
        force_new_tokens=force_new_tokens, decoder=cache.decoder,
    )
    return [backbone.decode(row) for row in tokens]
