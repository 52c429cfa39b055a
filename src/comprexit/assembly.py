"""How every sequence the frozen model reads is laid out: one function, `assemble`, for all of them.

A row is a run of segments, each either token ids (`Tokens`: `[BOS]`, a context, a prompt,
training targets) or vectors already in input-embedding space (`Vectors`: slots, memory
tokens, a learned marker). The encoder pass reads `[BOS] + context`; evaluation and serving
read `[BOS] + prefix + prompt`; training reads `[BOS] + prefix (+ marker) + targets`; ICAE's
encoder reads `[BOS] + context + memory tokens`. They differ only in their segments and in
the side their padding goes:

* right (training, encoder passes): every row starts at column 0, and per-row segment
  starts say where its targets begin, so scored positions are found without host syncs;
* left (greedy decoding): every row's last real token ends the batch, which batched
  generation needs; positions count real tokens only, so padding shifts none of them.

Position ids follow one formula (`position_ids`), the one transformers' `generate` applies
when it counts them itself, so a batch laid out here and one generate counts agree.
Embeddings are built in one scatter for the whole batch: the token embeddings and the vectors
go to their (row, column) places in a zero tensor. No per-row loop runs on the device and
nothing is read back from it; the layout, known on the host from the rows' lengths, goes to
the device in two copies (ids and mask; then the scatter's indices).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import torch

if TYPE_CHECKING:
    from .backbone import Backbone

LEFT, RIGHT = "left", "right"


@dataclass(frozen=True)
class Tokens:
    """A segment of token ids: per row its ids (a row may be empty)."""

    rows: Sequence[Sequence[int]]

    def lengths(self) -> list[int]:
        return [len(row) for row in self.rows]

    def place(self, ids: torch.Tensor, row: torch.Tensor, col: torch.Tensor) -> None:
        """Write the ids into a (batch, width) id matrix at their (row, column) places."""
        ids[row, col] = torch.tensor([token for row_ids in self.rows for token in row_ids], dtype=torch.long)

    def values(self, inputs: "DecoderInputs", row: torch.Tensor, col: torch.Tensor, within: torch.Tensor) -> torch.Tensor:
        """(n, hidden) input embeddings of the ids, looked up where `place` put them."""
        return inputs.backbone.embed(inputs.input_ids[row, col])


@dataclass(frozen=True)
class Vectors:
    """A segment of input-embedding vectors: row i reads the first `counts[i]` of its vectors.

    embeds: (batch, P, hidden), a set per row (what lies past a row's count is never read);
        or (P, hidden), one table every row reads from its start (vector j of each row is row j).
    """

    embeds: torch.Tensor
    counts: Sequence[int]

    def __post_init__(self) -> None:
        if self.embeds.ndim not in (2, 3):
            raise ValueError(f"vectors must be (batch, P, hidden) or (P, hidden), got shape {tuple(self.embeds.shape)}")

    def lengths(self) -> list[int]:
        return [int(n) for n in self.counts]

    def place(self, ids: torch.Tensor, row: torch.Tensor, col: torch.Tensor) -> None:
        """Vectors have no token id: their columns keep the pad id."""

    def values(self, inputs: "DecoderInputs", row: torch.Tensor, col: torch.Tensor, within: torch.Tensor) -> torch.Tensor:
        """(n, hidden): vector `within[k]` of row `row[k]`, on the vectors' device."""
        row, within = row.to(self.embeds.device), within.to(self.embeds.device)
        return self.embeds[row, within] if self.embeds.ndim == 3 else self.embeds[within]


Segment = Tokens | Vectors


@dataclass
class DecoderInputs:
    """A padded batch of rows, as the model reads it.

    input_ids: (batch, width) long: the tokens where they sit, the pad id elsewhere (vectors included).
    attention_mask: (batch, width) long, 1 on real positions.
    position_ids: (batch, width) long, `position_ids(attention_mask, start)`.
    starts: starts[s][i] is the column where segment s of row i begins.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    starts: list[list[int]]
    backbone: "Backbone" = field(repr=False)
    segments: tuple[Segment, ...] = field(repr=False)

    @property
    def rows(self) -> int:
        return self.input_ids.shape[0]

    @property
    def width(self) -> int:
        return self.input_ids.shape[1]

    def embeds(self) -> torch.Tensor:
        """(batch, width, hidden) input embeddings, zero on padding, in the backbone's dtype.

        One lookup per token segment and one scatter of every value; differentiable with
        respect to the vectors (training).
        """
        device, dtype = self.backbone.device, self.backbone.dtype
        found = [places(starts, segment.lengths()) for segment, starts in zip(self.segments, self.starts)]
        index = torch.cat([torch.stack(place) for place in found], dim=1).to(device)  # (3, n): one copy to the device
        values = [
            segment.values(self, row, col, within).to(device, dtype)
            for segment, (row, col, within) in zip(self.segments, index.split([len(p[0]) for p in found], dim=1))
            if len(row)
        ]
        out = torch.zeros(self.rows, self.width, self.backbone.hidden_size, dtype=dtype, device=device)
        return out.index_put((index[0], index[1]), torch.cat(values)) if values else out

    def attention_after(self, cached: torch.Tensor) -> torch.Tensor:
        """(batch, cached + width) mask of these rows read after cached positions.

        cached: (batch or 1, cached) mask of the cached positions, 1 on real ones.
        """
        mask = self.attention_mask
        return torch.cat([cached.to(mask).expand(self.rows, -1), mask], dim=1)


def position_ids(attention_mask: torch.Tensor, start: int | Sequence[int] = 0) -> torch.Tensor:
    """(batch, width) long: each real position's rank among its row's real positions, plus `start`;
    0 on padding. start: the position id of each row's first real position (an int, or one per row)."""
    mask = attention_mask.long()
    offset = start if isinstance(start, int) else torch.tensor(list(start), dtype=torch.long, device=mask.device)[:, None]
    return (mask.cumsum(-1) - 1 + offset).masked_fill(mask == 0, 0)


def assemble(backbone: "Backbone", *segments: Segment, side: str = RIGHT, start: int | Sequence[int] = 0) -> DecoderInputs:
    """Rows made of `segments` (each row: its part of every segment, in order), padded on `side`.

    start: position id of each row's first real position (an int, or one per row): 0 for a
        sequence of its own; the cached length (or a key/value prefix's next position) for rows
        read after a cache.
    """
    if side not in (LEFT, RIGHT):
        raise ValueError(f"side must be {LEFT!r} or {RIGHT!r}, got {side!r}")
    lengths = [segment.lengths() for segment in segments]
    if not lengths or len({len(row_lengths) for row_lengths in lengths}) != 1:
        raise ValueError(f"segments must hold the same rows, got {[len(n) for n in lengths]} rows")
    totals = [sum(row) for row in zip(*lengths)]
    width = max(totals)
    cursor = [width - total if side == LEFT else 0 for total in totals]
    starts = []
    for row_lengths in lengths:
        starts.append(cursor)
        cursor = [c + n for c, n in zip(cursor, row_lengths)]
    columns = torch.arange(width)[None, :]
    first, end = torch.tensor(starts[0])[:, None], torch.tensor(cursor)[:, None]
    mask = ((columns >= first) & (columns < end)).long()
    ids = torch.full((len(totals), width), backbone.pad_token_id, dtype=torch.long)
    for segment, segment_starts in zip(segments, starts):
        row, col, _ = places(segment_starts, segment.lengths())
        if len(row):
            segment.place(ids, row, col)
    ids, mask = torch.stack([ids, mask]).to(backbone.device)  # one copy to the device
    return DecoderInputs(ids, mask, position_ids(mask, start), starts, backbone, segments)


def places(starts: Sequence[int], lengths: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row, column, index within the row's part) of every element of a segment, row by row, on the CPU."""
    counts = torch.tensor(list(lengths), dtype=torch.long)
    row = torch.arange(len(counts)).repeat_interleave(counts)
    within = torch.arange(int(counts.sum())) - (counts.cumsum(0) - counts).repeat_interleave(counts)
    return row, torch.tensor(list(starts), dtype=torch.long).repeat_interleave(counts) + within, within
