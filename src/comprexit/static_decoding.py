"""Greedy decoding from preallocated key/value caches, with transformers compiling the decode step.

Why: on a GPU an eager decode step of a small model costs its kernel launches and Python, not
its FLOPs (Gemma-3-270M, batch 8: ~30 ms per step through 18 layers, results/bench/h100.md), so
the decode steps dominate a question's latency whatever the decoder reads before them.
transformers' `generate` runs its decode steps (never the prefill) through `torch.compile` (CUDA
graphs under the default `CompileConfig(mode="reduce-overhead")`) when the cache it decodes with
is compileable, i.e. a `StaticCache` (fixed shapes and addresses), and only on CUDA, XPU, Neuron
or TPU, unless `CompileConfig._compile_all_devices` is set (`_valid_auto_compile_criteria` in
transformers/generation/utils.py). A `StaticDecoder` uses exactly that path; it writes no decode
loop of its own, because generate accepts a `StaticCache` that already holds a prefix (its
subclass `GraphDecoder`, graph_decoding.py, does write one, to leave generate's per-step work out).

What it adds around the library:

* One working cache per (batch size, cache length), allocated once and handed to generate as
  `past_key_values`, instead of `cache_implementation="static"`: generate would build a new cache
  (new tensors, new addresses) on every call, and CUDA graphs re-record whenever the address of a
  static input changes (`torch._dynamo.mark_static_address(guard=False)`).
* `max_cache_len`: one length for every cache, so that each batch size compiles one decode graph
  (plus a variant while sliding-window layers are not yet full) for every context length and
  answer length, instead of one per configuration. Full-attention layers then attend over the
  whole (masked) length; that costs memory bandwidth, small next to the launches it saves.
* A document's prefix, `[BOS] + slots` or `[BOS] + context`, is run once with batch 1 into a
  StaticCache through the model's own forward (`snapshot`), so every layer's layout is the
  library's; each question batch copies it into the working cache in place (`load`, broadcast
  over rows), leaving the snapshot untouched, then generates.

Sliding-window layers (`StaticSlidingWindowLayer`, Gemma-3: 512 positions) keep the last
`min(window, max_cache_len)` keys and values, and a Python-side count of every position seen.
Once a prefix outgrows the window, a prompt appended to it is attended to together with the
last `window - 1` cached positions (the mask's offset follows the count), which is what the
eager `DynamicSlidingWindowLayer` keeps, so both paths read the same keys; `load` copies the
count along with the tensors, and tests/test_static_decoding.py checks the answers token by token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from transformers import CompileConfig, StaticCache
from transformers.cache_utils import Cache, StaticLayer

from .errors import ConfigError, InputError

if TYPE_CHECKING:
    from .backbone import Backbone

MIN_BUCKET = 1024  # smallest cache length when lengths are chosen per call


class StaticDecoder:
    """Preallocated caches and the compile settings for `Backbone.generate(..., decoder=...)`.

    max_cache_len: the length of every cache; None chooses the next power of two (at least 1024)
        that holds the positions a call needs (a prefix: plus `reserve` for question and answer).
    compile_config: how generate compiles its decode steps; None decodes eagerly from the static
        cache (generate is told not to compile, which it would otherwise do on a GPU by itself).
    """

    def __init__(
        self,
        backbone: "Backbone",
        max_cache_len: int | None = None,
        compile_config: CompileConfig | None = None,
        reserve: int = 512,
    ):
        self.backbone = backbone
        self.max_cache_len = max_cache_len
        self.compile_config = compile_config
        self.reserve = reserve
        self._caches: dict[tuple[int, int], Cache] = {}

    @classmethod
    def compiled(
        cls, backbone: "Backbone", max_cache_len: int | None = None, mode: str = "reduce-overhead",
        backend: str = "inductor", reserve: int = 512,
    ) -> "StaticDecoder":
        """Decode steps compiled by generate. On a CPU generate compiles only through the private
        `_compile_all_devices` flag of CompileConfig (slow to compile, rarely faster; for tests)."""
        config = CompileConfig(mode=mode, backend=backend)
        if backbone.device.type not in ("cuda", "xpu"):
            config._compile_all_devices = True
        return cls(backbone, max_cache_len, config, reserve)

    @property
    def compiled_steps(self) -> bool:
        return self.compile_config is not None

    def describe(self) -> dict:
        config = self.compile_config
        return {"max_cache_len": self.max_cache_len, "compiled": config is not None,
                "compile_mode": config.mode if config else None, "compile_backend": config.backend if config else None}

    def cache_length(self, positions: int) -> int:
        """The cache length for `positions` positions: `max_cache_len`, or the next power of two (at least 1024)."""
        if self.max_cache_len is not None:
            return self.max_cache_len
        length = MIN_BUCKET
        while length < positions:
            length *= 2
        return length

    def generate_options(self) -> dict:
        if self.compile_config is None:
            return {"disable_compile": True}
        return {"compile_config": self.compile_config}

    def generate(self, model, **kwargs) -> torch.Tensor:
        """`model.generate(**kwargs)` from this decoder's caches: left-padded `inputs_embeds` without
        `past_key_values` start from the empty working cache; `past_key_values` must be one of its caches."""
        if kwargs.get("past_key_values") is None:
            rows, width = kwargs["inputs_embeds"].shape[:2]
            kwargs["past_key_values"] = self.fresh(rows, width + kwargs["max_new_tokens"])
        return model.generate(**kwargs, **self.generate_options())

    # ------------------------------------------------------------------ caches
    def _new_cache(self, length: int) -> Cache:
        """An empty cache of `length` positions, laid out per layer type by transformers."""
        return StaticCache(config=self.backbone.model.config.get_text_config(decoder=True), max_cache_len=length)

    def _working(self, batch: int, length: int) -> Cache:
        key = (batch, length)
        if key not in self._caches:
            config = self.backbone.model.config.get_text_config(decoder=True)
            heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
            head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
            cache = self._new_cache(length)
            cache.early_initialization(batch, heads, head_dim, self.backbone.dtype, self.backbone.device)
            self._caches[key] = cache
        return self._caches[key]

    def fresh(self, batch: int, positions: int) -> Cache:
        """The empty working cache for `batch` rows that will hold `positions` positions in all."""
        length = self.cache_length(positions)
        check_fits(positions, length)
        cache = self._working(batch, length)
        cache.reset()
        return cache

    @torch.no_grad()
    def snapshot(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> tuple[Cache, int]:
        """(cache, its length): a batch-1 StaticCache over `inputs_embeds` (1, n, hidden), with room
        for `reserve` more positions (the question and answer) when lengths are chosen per prefix."""
        if inputs_embeds.shape[0] != 1:
            raise ValueError("a prefix snapshot holds one row; questions are broadcast over it by `load`")
        positions = inputs_embeds.shape[1]
        length = self.cache_length(positions + self.reserve)
        check_fits(positions, length)
        cache = self._new_cache(length)
        self.backbone.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, past_key_values=cache,
                            use_cache=True, logits_to_keep=1)
        return cache, length

    def load(self, snapshot: Cache, length: int, batch: int, positions: int) -> Cache:
        """The working cache for `batch` rows, overwritten in place with the snapshot's prefix in every row.

        length: the snapshot's cache length; positions: all the rows will hold (prefix, prompts, new tokens).
        """
        check_fits(positions, length)
        cache = self._working(batch, length)
        for target, source in zip(cache.layers, snapshot.layers, strict=True):
            if type(target) is not type(source) or not isinstance(source, StaticLayer):
                raise ConfigError(f"cannot copy a {type(source).__name__} into a {type(target).__name__}")
            target.keys.copy_(source.keys.expand_as(target.keys))
            target.values.copy_(source.values.expand_as(target.values))
            target.cumulative_length.copy_(source.cumulative_length)
            if hasattr(source, "cumulative_length_int"):  # sliding-window layers also count on the Python side
                target.cumulative_length_int = source.cumulative_length_int
        return cache


def check_fits(positions: int, length: int) -> None:
    """Refuse, with a message naming the fix, a batch whose positions overrun a static cache."""
    if positions > length:
        raise InputError(
            f"{positions} positions do not fit a static decoder cache of {length}; "
            "give the StaticDecoder a larger max_cache_len (or None to size caches per prefix)"
        )
