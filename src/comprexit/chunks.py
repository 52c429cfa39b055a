"""Long contexts: cut into chunks that are compressed one by one, and the chunks' prefixes joined in order.

A compressor reads one chunk per encoder pass (the length it was trained on); a longer
document is its chunks' slots one after the other. `Reader` does this at inference, the
trainer in long-context training and `comprexit eval` for contexts longer than a chunk, with
these functions, so all three cut and join alike.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .assembly import places
from .errors import ConfigError
from .prefix import SoftPrefixBatch

CHUNK_TOKENS = 512  # context tokens per encoder pass: the context length the compressors are trained on


def split_chunks(ids: Sequence[int], size: int) -> list[list[int]]:
    """`ids` in consecutive chunks of `size` tokens (the last may be shorter); an empty context is one empty chunk."""
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)] or [[]]


def chunk_layout(contexts: Sequence[Sequence[int]], size: int) -> tuple[list[list[int]], list[int], list[int]]:
    """Every context cut into chunks of `size`: the chunks of context 0, then of context 1, ...;
    each context's chunk count; and each chunk's index within its context (the chunk-position signal)."""
    pieces = [split_chunks(c, size) for c in contexts]
    counts = [len(p) for p in pieces]
    return [chunk for p in pieces for chunk in p], counts, [k for n in counts for k in range(n)]


def join_chunks(prefix, counts: Sequence[int]) -> SoftPrefixBatch:
    """Each document's chunk prefixes concatenated in order: one row per document.

    prefix: a `SoftPrefixBatch` of (chunks, P, hidden), the chunks of document 0 first, then
        those of document 1, ...; chunk c's first `prefix.lengths[c]` vectors are real.
    counts: chunks of each document.
    Returns (documents, P', hidden) whose row i holds its real vectors first (`lengths[i]` of
    them) and zeros after, so documents of different chunk counts share a batch. One gather
    and one scatter, laid out on the host from the lengths: differentiable, no device sync.
    The prefix's `lead` (reader tokens) goes with it unchanged: read once per document, not per chunk.
    """
    if not isinstance(prefix, SoftPrefixBatch):
        raise ConfigError("contexts longer than one chunk need a method whose prefix is vectors; "
                          f"this one gives {type(prefix).__name__}")
    chunk_lengths = list(prefix.lengths)
    owner = torch.arange(len(counts)).repeat_interleave(torch.tensor(list(counts)))  # (chunks,) document of each chunk
    starts, running = [], {}
    for document, n in zip(owner.tolist(), chunk_lengths):
        starts.append(running.get(document, 0))  # where the chunk's vectors go in its document's row
        running[document] = starts[-1] + n
    lengths = [running.get(i, 0) for i in range(len(counts))]
    chunk, _, within = places([0] * len(chunk_lengths), chunk_lengths)  # (n,) source chunk and vector
    _, column, _ = places(starts, chunk_lengths)  # (n,) destination column
    device = prefix.embeds.device
    values = prefix.embeds[chunk.to(device), within.to(device)]  # (n, hidden)
    out = prefix.embeds.new_zeros(len(counts), max(lengths, default=0), prefix.embeds.shape[-1])
    return SoftPrefixBatch(out.index_put((owner[chunk].to(device), column.to(device)), values), lengths, prefix.lead)
