"""Where each slot's content comes from: one document's transmission, laid out token by token and slot by slot.

`explain_text(reader, text)` compresses a document the way `Reader.compress` does, through the
same `Reader.compressed_chunks` (chunks of `reader.chunk_tokens` tokens, encoded `ENCODE_BATCH`
at a time), but asks the compressor for its diagnostics (`ComprExIT.forward(..., diagnostics=True)`): the layer weights, sender
capacities and transport plans that made these very slots, not a re-computation. It turns
them into plain numpy arrays over the whole document, with slots numbered globally in the
order a `CompressedDocument` keeps them, so the page and the figures need no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..backbone import Backbone
from ..compressor import Slots
from ..progress import Progress
from ..reader import Reader


@dataclass
class Explanation:
    """One document's transmission.

    tokens: the text of each context token; joined, they give back the document.
    chunk_starts: index of the first token of each compressed chunk.
    capacity: (tokens,) sender capacity rho_t; it sums to 1 over each transport window.
    window_sizes: (tokens,) real tokens in each token's window, so capacity * size is 1 for a
        token sent like all others.
    states: hidden-state index of each column of `layer_weights` (0 = embedding output).
    layer_weights: (tokens, states) depth-wise weights a_t^l; each row sums to 1.
    slot_start: (slots,) index of the first token of the window each slot draws from.
    draws: (slots, W) share of each slot's value drawn from token slot_start + j, that is
        P_tk * K' (slot value = sum_t P_tk v_t / (1/K')); each row sums to 1, zero past the
        window's real tokens.
    slot_field: (slots, 2) [start, end) of the slot's own field of r tokens, whose mean is
        its receiver in the transport cost.
    """

    tokens: list[str]
    chunk_starts: list[int]
    capacity: np.ndarray
    window_sizes: np.ndarray
    states: list[int]
    layer_weights: np.ndarray
    slot_start: np.ndarray
    draws: np.ndarray
    slot_field: np.ndarray
    ratio: int
    backbone: str
    compressor: str

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)

    @property
    def num_slots(self) -> int:
        return len(self.slot_start)

    def relative_capacity(self) -> np.ndarray:
        """(tokens,) rho_t against a uniform sender: 1 is average, 3 sends three times as much."""
        return self.capacity * self.window_sizes

    def slot_chunk(self) -> np.ndarray:
        """(slots,) index of the chunk each slot belongs to."""
        return np.searchsorted(np.asarray(self.chunk_starts), self.slot_start, side="right") - 1

    def slot_sources(self, slot: int, floor: float = 0.0) -> list[tuple[int, float]]:
        """(token, share) pairs slot `slot` draws at least `floor` of its value from, largest first."""
        shares = self.draws[slot]
        keep = np.flatnonzero(shares > floor) if floor > 0 else np.flatnonzero(shares)
        order = keep[np.argsort(-shares[keep], kind="stable")]
        return [(int(self.slot_start[slot] + j), float(shares[j])) for j in order]


def token_texts(backbone: Backbone, text: str, ids: list[int]) -> list[str]:
    """The text of each token, so the page shows the document as it was written.

    From a fast tokenizer's character offsets, token i spans from its start to the next
    token's start: whitespace a tokenizer folds into no token stays visible, and the pieces
    join back to the document. Tokenizers without offsets (or whose ids differ from `ids`)
    fall back to decoding each token alone.
    """
    try:
        encoded = backbone.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, TypeError, ValueError):
        encoded = None
    if encoded is not None and list(encoded["input_ids"]) == list(ids):
        starts = [start for start, _ in encoded["offset_mapping"]]
        starts[0] = 0
        ends = starts[1:] + [len(text)]
        if all(start <= end for start, end in zip(starts, ends)):
            return [text[start:end] for start, end in zip(starts, ends)]
    return [backbone.decode([token]) for token in ids]


@torch.no_grad()
def explain_text(reader: Reader, text: str, progress: Progress | None = None) -> Explanation:
    """Compress `text` with `reader` and return where each of its slots draws from (progress: a bar of
    the tokens compressed, progress.py)."""
    ids = reader.context_ids(text)
    parts: list[dict[str, np.ndarray]] = []
    chunk_starts: list[int] = []
    offset = 0
    for batch, out in reader.compressed_chunks(ids, diagnostics=True, progress=progress):
        for row, chunk in enumerate(batch):
            chunk_starts.append(offset)
            parts.append(_chunk_arrays(out, row, len(chunk), offset, reader.compressor.config.ratio))
            offset += len(chunk)
    joined = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    return Explanation(
        tokens=token_texts(reader.backbone, text, ids),
        chunk_starts=chunk_starts,
        states=list(out.diagnostics.states),
        ratio=reader.compressor.config.ratio,
        backbone=reader.backbone.identity.describe(),
        compressor=reader.compressor_name,
        **joined,
    )


def _chunk_arrays(out: Slots, row: int, length: int, offset: int, ratio: int) -> dict[str, np.ndarray]:
    """Row `row` of a compressed batch (a chunk of `length` tokens starting at token `offset`) as arrays."""
    found = out.diagnostics
    windows, window, per_window = found.plan.shape[1:]
    plan = found.plan[row].float().cpu().numpy()  # (windows, W, K)
    used = out.mask[row].reshape(windows, per_window).cpu().numpy()  # (windows, K) non-empty slots
    window_of_slot, slot_in_window = np.nonzero(used)  # row-major: the global slot order
    receivers = used.sum(1)  # K' per window
    draws = plan[window_of_slot, :, slot_in_window] * receivers[window_of_slot, None]  # (slots, W)
    window_start = window_of_slot * window
    field_start = window_start + slot_in_window * ratio
    window_end = np.minimum(window_start + window, length)
    sizes = np.minimum(window, length - np.arange(windows) * window)  # real tokens per window
    return {
        "capacity": found.capacity[row].float().cpu().numpy().reshape(-1)[:length],
        "window_sizes": np.repeat(sizes, window)[:length],
        "layer_weights": found.layer_weights[row, :length].float().cpu().numpy(),
        "slot_start": offset + window_start,
        "draws": draws,
        "slot_field": offset + np.stack([field_start, np.minimum(field_start + ratio, window_end)], axis=1),
    }
