"""Greedy decoding from preallocated key/value caches, with transformers compiling the decode step.

Why: on a GPU an eager decode step of a small model costs its kernel launches and Python, not
its FLOPs (Gemma-3-270M, batch 8: ~30 ms per step through 18 layers, results/bench/h100.md), so
the decode steps dominate a question's latency whatever the decoder reads before them.
transformers' `generate` runs its decode steps (never the prefill) through `torch.compile` (CUDA
graphs under the default `CompileConfig(mode="reduce-overhead")`) when the cache it decodes with
is compileable, i.e. a `StaticCache` (fixed shapes and addresses), and only on CUDA, XPU, Neuron
or TPU, unless `CompileConfig._compile_all_devices` is set (`_valid_auto_compile_criteria` in
transformers/generation/utils.py). A `StaticDecoder` uses exactly that path; it writes no decode
loop of its own, because generate accepts a `StaticCache` that already holds a prefix (the
`GraphDecoder`, graph.py, does write one, to leave generate's per-step work out).

What it adds around the library are its caches (static_caches.py): one working cache per (batch
size, cache length) handed to generate, instead of `cache_implementation="static"` (generate
would build a new cache, at new addresses, on every call, and CUDA graphs re-record whenever
the address of a static input changes); one length for every cache, so each batch size compiles
one decode graph (plus a variant while sliding-window layers are not yet full); a document's
prefix run once into a batch-1 snapshot that each question batch copies in place.

Sliding-window layers (`StaticSlidingWindowLayer`, Gemma-3: 512 positions) keep the last
`min(window, max_cache_len)` keys and values, and a Python-side count of every position seen.
Once a prefix outgrows the window, a prompt appended to it is attended to together with the
last `window - 1` cached positions (the mask's offset follows the count), which is what the
eager `DynamicSlidingWindowLayer` keeps, so both paths read the same keys; copying a snapshot
carries the count along with the tensors, and tests/test_static_decoding.py checks the answers
token by token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from transformers import CompileConfig

from .generate import GenerateDecoder
from .prefill import PREFILL_CHUNK
from .static_caches import RESERVE, LibraryLayout, StaticCaches

if TYPE_CHECKING:
    from ..backbone import Backbone


class StaticDecoder(GenerateDecoder):
    """Greedy decoding by generate from preallocated static caches.

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
        reserve: int = RESERVE,
        stops: Sequence[int] | None = None,
        prefill_chunk: int | None = PREFILL_CHUNK,
    ):
        super().__init__(backbone, StaticCaches(backbone, LibraryLayout(), max_cache_len, reserve), compile_config, stops,
                         prefill_chunk)

    @classmethod
    def compiled(
        cls, backbone: "Backbone", max_cache_len: int | None = None, mode: str = "reduce-overhead",
        backend: str = "inductor", reserve: int = RESERVE, stops: Sequence[int] | None = None,
    ) -> "StaticDecoder":
        """Decode steps compiled by generate. On a CPU generate compiles only through the private
        `_compile_all_devices` flag of CompileConfig (slow to compile, rarely faster; for tests)."""
        config = CompileConfig(mode=mode, backend=backend)
        if backbone.device.type not in ("cuda", "xpu"):
            config._compile_all_devices = True
        return cls(backbone, max_cache_len, config, reserve, stops)
