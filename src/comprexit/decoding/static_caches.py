"""Preallocated static key/value caches, as the static and the graph decoder use them.

* One working cache per (rows, cache length), allocated once and reused, instead of a new cache
  per call: CUDA graphs re-record whenever the address of a static input changes
  (`torch._dynamo.mark_static_address(guard=False)`).
* `max_cache_len`: one length for every cache, so that each batch size compiles one decode graph
  for every context length and answer length, instead of one per configuration; None chooses
  the next power of two (at least `MIN_BUCKET`) that holds what a call needs (a prefix: plus
  `reserve` positions for question and answer). Full-attention layers then attend over the
  whole (masked) length; that costs memory bandwidth, small next to the launches it saves.
* A document's prefix is run once with batch 1 into a cache of its own through the model's
  forward (`snapshot`), so every layer's layout is the library's; each question batch copies it
  into the working cache in place (`working`, broadcast over rows), leaving the snapshot as it was.

How the layers of a cache are laid out is a `Layout`: transformers' `StaticCache`
(`LibraryLayout`, whose sliding-window layers keep only their window) or a `StaticLayer` of the
whole length for every layer (`FullLengthLayout`, the graph decoder's: the window then lives in
the attention mask). The positions each cache holds are counted here, on the host.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Protocol

import torch
from transformers import StaticCache
from transformers.cache_utils import Cache, StaticLayer

from ..assembly import DecoderInputs
from ..errors import ConfigError, InputError
from .cache import PrefixCache
from .prefill import Advance, prefill

if TYPE_CHECKING:
    from ..backbone import Backbone

MIN_BUCKET = 1024  # smallest cache length when lengths are chosen per call
RESERVE = 512  # positions a prefix snapshot keeps free for a question and its answer


class Layout(Protocol):
    def new(self, backbone: "Backbone", length: int) -> Cache:
        """An empty cache of `length` positions."""

    def copy(self, target: Cache, source: Cache, filled: int) -> None:
        """Copy the first `filled` positions of a batch-1 `source` into every row of `target`, in place."""


class LibraryLayout:
    """transformers' `StaticCache`, laid out per layer type: a sliding-window layer
    (`StaticSlidingWindowLayer`, Gemma-3: 512 positions) keeps the last `min(window, length)`
    keys and values and a Python-side count of every position seen, which `copy` carries along,
    so that a prompt after a long prefix reads the keys the eager dynamic cache keeps."""

    def new(self, backbone: "Backbone", length: int) -> Cache:
        return StaticCache(config=backbone.model.config.get_text_config(decoder=True), max_cache_len=length)

    def copy(self, target: Cache, source: Cache, filled: int) -> None:
        for mine, theirs in zip(target.layers, source.layers, strict=True):
            if type(mine) is not type(theirs) or not isinstance(theirs, StaticLayer):
                raise ConfigError(f"cannot copy a {type(theirs).__name__} into a {type(mine).__name__}")
            mine.keys.copy_(theirs.keys.expand_as(mine.keys))
            mine.values.copy_(theirs.values.expand_as(mine.values))
            mine.cumulative_length.copy_(theirs.cumulative_length)
            if hasattr(theirs, "cumulative_length_int"):  # sliding-window layers also count on the Python side
                mine.cumulative_length_int = theirs.cumulative_length_int


class FullLengthLayout:
    """A `StaticLayer` of the whole length for every layer: no Python-side count that a compiled
    step would guard on; `copy` moves only the filled positions (the rest is written before
    anything attends to it)."""

    def new(self, backbone: "Backbone", length: int) -> Cache:
        return Cache(layers=[StaticLayer(max_cache_len=length) for _ in range(backbone.identity.num_layers)])

    def copy(self, target: Cache, source: Cache, filled: int) -> None:
        for mine, theirs in zip(target.layers, source.layers, strict=True):
            for into, of in ((mine.keys, theirs.keys), (mine.values, theirs.values)):
                into[:, :, :filled].copy_(of[:, :, :filled].expand(into.shape[0], -1, -1, -1))
            mine.cumulative_length.copy_(theirs.cumulative_length)


class StaticCaches:
    """Working caches per (rows, length) and batch-1 prefix snapshots, laid out by `layout`."""

    def __init__(self, backbone: "Backbone", layout: Layout, max_cache_len: int | None = None, reserve: int = RESERVE):
        self.backbone = backbone
        self.layout = layout
        self.max_cache_len = max_cache_len
        self.reserve = reserve
        self._working: dict[tuple[int, int], Cache] = {}
        self._length = weakref.WeakKeyDictionary()  # cache -> its length (positions it can hold)
        self._filled = weakref.WeakKeyDictionary()  # cache -> positions it holds, known on the host

    def describe(self) -> dict:
        return {"max_cache_len": self.max_cache_len}

    def cache_length(self, positions: int) -> int:
        """`max_cache_len`, or the next power of two (at least MIN_BUCKET) that holds `positions`."""
        if self.max_cache_len is not None:
            return self.max_cache_len
        length = MIN_BUCKET
        while length < positions:
            length *= 2
        return length

    def length(self, cache: Cache) -> int:
        return self._length[cache]

    def filled(self, cache: Cache) -> int:
        return self._filled[cache]

    def set_filled(self, cache: Cache, positions: int) -> None:
        self._filled[cache] = positions

    def fresh(self, rows: int, positions: int) -> Cache:
        """The empty working cache for `rows` rows that will hold `positions` positions in all."""
        length = self.cache_length(positions)
        check_fits(positions, length)
        cache = self._working_cache(rows, length)
        cache.reset()
        self._filled[cache] = 0
        return cache

    @torch.no_grad()
    def snapshot(self, inputs: DecoderInputs, chunk: int | None, advance: Advance | None = None) -> Cache:
        """A batch-1 cache over the one row of `inputs`, read `chunk` positions per pass (prefill.py),
        with room for `reserve` more positions (the question and answer) when lengths are chosen per prefix."""
        length = self.cache_length(inputs.width + self.reserve)
        check_fits(inputs.width, length)
        cache = prefill(self.backbone.model, self.layout.new(self.backbone, length), inputs, chunk, advance)
        self._length[cache], self._filled[cache] = length, inputs.width
        return cache

    def working(self, cache: PrefixCache, rows: int, positions: int) -> Cache:
        """The working cache for `rows` rows, overwritten in place with the snapshot's positions in every row.

        positions: all that the rows will hold (prefix, prompts, new tokens).
        """
        snapshot = cache.past_key_values
        length, filled = self._length[snapshot], self._filled[snapshot]
        check_fits(positions, length)
        working = self._working_cache(rows, length)
        self.layout.copy(working, snapshot, filled)
        self._filled[working] = filled
        return working

    def _working_cache(self, rows: int, length: int) -> Cache:
        key = (rows, length)
        if key not in self._working:
            config = self.backbone.model.config.get_text_config(decoder=True)
            heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
            head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
            cache = self.layout.new(self.backbone, length)
            cache.early_initialization(rows, heads, head_dim, self.backbone.dtype, self.backbone.device)
            self._working[key] = cache
            self._length[cache] = length
        return self._working[key]


def check_fits(positions: int, length: int) -> None:
    """Refuse, with a message naming the fix, a batch whose positions overrun a static cache."""
    if positions > length:
        raise InputError(
            f"{positions} positions do not fit a static decoder cache of {length}; "
            "give the decoder a larger max_cache_len (or None to size caches per prefix)"
        )
