"""Greedy decoding through transformers' `generate`: what the eager and the static decoder share.

They differ in where their caches come from (a `Caches` strategy: dynamic caches, or
preallocated static ones) and in whether generate compiles its decode step; the generate
call with its greedy settings, and the single decode step `comprexit bench` times, are
written once, here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol

import torch
from transformers import CompileConfig
from transformers.cache_utils import Cache

from ..assembly import DecoderInputs
from ..hf_compat import cache_argument
from .base import Decoder
from .cache import PrefixCache
from .prefill import PREFILL_CHUNK, Advance

if TYPE_CHECKING:
    from ..backbone import Backbone


class Caches(Protocol):
    """Where a generate-based decoder's key/value caches come from."""

    def fresh(self, rows: int, positions: int) -> Cache:
        """An empty cache for `rows` rows that will hold `positions` positions in all."""

    def snapshot(self, inputs: DecoderInputs, chunk: int | None, advance: Advance | None = None) -> Cache:
        """A batch-1 cache holding the one row of `inputs`, read `chunk` positions per pass (prefill.py)."""

    def working(self, cache: PrefixCache, rows: int, positions: int) -> Cache:
        """A cache for `rows` rows holding `cache`'s positions, which generate may append to
        (`positions` in all); `cache` itself stays as it was."""

    def describe(self) -> dict:
        """What identifies these caches in a results file."""


class GenerateDecoder(Decoder):
    """Greedy decoding by `model.generate` from the caches `caches` provides.

    compile_config: how generate compiles its decode steps; None decodes eagerly (generate is
        told not to compile, which it would otherwise do by itself for static caches on a GPU).
    """

    def __init__(self, backbone: "Backbone", caches: Caches, compile_config: CompileConfig | None = None,
                 stops=None, prefill_chunk: int | None = PREFILL_CHUNK):
        super().__init__(backbone, stops, prefill_chunk)
        self.caches = caches
        self.compile_config = compile_config

    def describe(self) -> dict:
        config = self.compile_config
        return {**Decoder.describe(self), **self.caches.describe(), "compiled": config is not None,
                "compile_mode": config.mode if config else None, "compile_backend": config.backend if config else None}

    def _prefill(self, inputs: DecoderInputs, advance: Advance | None) -> Cache:
        return self.caches.snapshot(inputs, self.prefill_chunk, advance)

    def _generate(self, inputs: DecoderInputs, max_new_tokens: int) -> torch.Tensor:
        past = self.caches.fresh(inputs.rows, inputs.width + max_new_tokens)
        return self._greedy(past, max_new_tokens, inputs_embeds=inputs.embeds(), attention_mask=inputs.attention_mask,
                            position_ids=inputs.position_ids)

    def _generate_after(self, cache: PrefixCache, inputs: DecoderInputs, max_new_tokens: int) -> torch.Tensor:
        past = self.caches.working(cache, inputs.rows, cache.length + inputs.width + max_new_tokens)
        # generate takes the ids of the cached positions too (pad ids here) and runs only the rest
        cached = torch.full((inputs.rows, cache.length), self.backbone.pad_token_id, dtype=torch.long,
                            device=inputs.input_ids.device)
        ids = torch.cat([cached, inputs.input_ids], dim=1)
        positions = torch.cat([torch.zeros_like(cached), inputs.position_ids], dim=1)
        out = self._greedy(past, max_new_tokens, input_ids=ids, attention_mask=inputs.attention_after(cache.mask),
                           position_ids=positions)
        return out[:, ids.shape[1] :]

    def _greedy(self, past: Cache, max_new_tokens: int, **inputs) -> torch.Tensor:
        options = {"disable_compile": True} if self.compile_config is None else {"compile_config": self.compile_config}
        return self.backbone.model.generate(
            **inputs, **cache_argument(past), max_new_tokens=max_new_tokens, do_sample=False, temperature=None,
            top_p=None, top_k=None, pad_token_id=self.backbone.pad_token_id, eos_token_id=list(self.stops), **options,
        )

    def stepper(self, cache: PrefixCache, rows: int, steps: int) -> Callable[[], None]:
        """One decode step as generate runs it: its inputs prepared, then the model's forward (the
        compiled call generate itself decodes with, where it compiles), one position appended."""
        model, device = self.backbone.model, self.backbone.device
        past = self.caches.working(cache, rows, cache.length + steps)
        forward = model.get_compiled_call(self.compile_config) if self.compile_config else model.__call__
        ids = torch.full((rows, 1), self.backbone.pad_token_id, dtype=torch.long, device=device)
        seen = [cache.length]

        def step() -> None:
            mask = torch.ones(rows, seen[0] + 1, dtype=torch.long, device=device)
            positions = torch.full((rows, 1), seen[0], dtype=torch.long, device=device)
            inputs = model.prepare_inputs_for_generation(
                ids, next_sequence_length=1, **cache_argument(past), attention_mask=mask, position_ids=positions,
                use_cache=True, logits_to_keep=1,
            )
            forward(**inputs, return_dict=True)
            seen[0] += 1

        return step
