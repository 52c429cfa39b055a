"""Reading a long prefix into a key/value cache in chunks, so that memory grows with its length, not its square.

Why: one forward pass over T positions makes every attention layer hold (heads, T, T) scores at
once (sdpa on a CPU materialises them), which is what made `ask --full-context` take 10.1 GB at
7,562 tokens and 20.3 GB at 16,994. Fed `chunk` positions at a time through the cache, each pass
attends from `chunk` queries to the positions cached so far, so the scores are (heads, chunk, T)
and the cache itself (linear in T; a sliding-window layer keeps only its window) is what grows.

The answers are the same: every position attends to the same keys with the same mask as in one
pass (a sliding-window layer's cache keeps the `window - 1` positions the next chunk needs, and
its mask offsets follow the positions seen), up to float rounding in the order of the sums
(tests/test_prefill.py checks the answers token for token on a tiny hybrid model).
"""

from __future__ import annotations

from typing import Callable

import torch
from transformers.cache_utils import Cache

from ..assembly import DecoderInputs
from ..hf_compat import cache_argument

PREFILL_CHUNK = 512  # positions per forward pass (as many as a compressed chunk has tokens)

Advance = Callable[[int], None]  # told how many more positions have been read (a progress bar's `update`)


@torch.no_grad()
def prefill(model, cache: Cache, inputs: DecoderInputs, chunk: int | None = PREFILL_CHUNK,
            advance: Advance | None = None) -> Cache:
    """Run the one row of `inputs` (batch 1, no padding) into `cache`, `chunk` positions per pass.

    chunk: None reads the row in one pass. Only the last position's logits are computed.
    """
    if inputs.rows != 1:
        raise ValueError("a prefix is prefilled one row at a time; prompts are broadcast over its cache")
    embeds = inputs.embeds()  # (1, width, hidden)
    step = inputs.width if chunk is None else chunk
    for start in range(0, inputs.width, step):
        end = min(start + step, inputs.width)
        model(inputs_embeds=embeds[:, start:end], attention_mask=inputs.attention_mask[:, :end],
              position_ids=inputs.position_ids[:, start:end], **cache_argument(cache), use_cache=True,
              logits_to_keep=1)
        if advance is not None:
            advance(end - start)
    return cache
