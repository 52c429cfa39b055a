"""Greedy decoding from static caches through a loop of our own, compiled, without `generate`.

Why: on an H100 the decode step that generate compiles (static.py) takes 2.6 ms for
Gemma-3-270M at batch 8 over 2048 tokens (results/bench/h100-graph-2048.md), while its 536 MB of
bf16 weights take ~0.16 ms to read at the H100's 3.35 TB/s; around it generate runs the
question prefill eagerly and, per step, builds inputs and masks, processes logits and checks
stopping criteria on the host. A `GraphDecoder` keeps transformers' model forward and cache
layers, and changes what runs around them:

* The question prefill runs through the model compiled with static shapes: the batch of
  prompts (left-padded as in every other path) is padded on the right up to a bucket, a
  multiple of `bucket` positions, so each bucket compiles once. Right pads sit after every real
  position, so no real query sees them; afterwards the caches are wound back to the last real
  position, and the answer tokens overwrite the pad slots before anything attends to them.
* Each decode step is one compiled call without arguments: it reads the step's tokens and
  positions from preallocated device tensors and updates them in place, argmax included, and
  writes each row's token into an answer buffer. Under CUDA graphs (mode "reduce-overhead") a
  step is then one graph replay, and no step waits for the device: the tokens are read back
  once, after the loop (or every `check_every` steps, to stop once every row has ended).

Sliding-window layers: transformers' `StaticSlidingWindowLayer` keeps a Python count of the
positions it has seen, which picks its branches and its mask offsets; a compiled step would
guard on it and recompile (and re-record its CUDA graph) at every position. A GraphDecoder's
caches are `StaticLayer`s for every layer instead, each holding the whole cache length, and the
window is applied by the model's own sliding-window mask over absolute cache positions; that
attends to exactly the positions the other paths keep in their windows (pad slots counted
alike), so the answers are the same token for token (tests/test_graph_decoding.py). It costs
memory and bandwidth: Gemma-3-270M's 15 sliding layers hold the whole cache, not 512 positions.
"""

from __future__ import annotations

import logging
import types
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import torch
from transformers import CompileConfig
from transformers.cache_utils import Cache

from ..assembly import DecoderInputs
from ..errors import ConfigError
from ..hf_compat import cache_argument
from .base import Decoder
from .cache import PrefixCache
from .prefill import PREFILL_CHUNK, Advance
from .static_caches import RESERVE, FullLengthLayout, StaticCaches, check_fits

if TYPE_CHECKING:
    from ..backbone import Backbone

logger = logging.getLogger(__name__)

BUCKET = 64  # question prefills are padded to a multiple of this many positions
CHECK_EVERY = 8  # decode steps between checks whether every row has ended (when stop tokens may end rows)
LAYER_TYPES = ("full_attention", "sliding_attention")


@dataclass
class StepState:
    """Device tensors a decode step reads and updates in place (fixed addresses, for CUDA graphs).

    valid: (batch, cache length) bool, False on pad slots; True from the question's end on (later
        slots are hidden by the causal mask until an answer token is written there).
    tokens, positions: (batch, 1) the token each row reads next and its position id.
    answers: (batch, cache length) tokens chosen so far, `step` of them; done: (batch,) a stop token seen.
    stops: (stops,) the stop token ids ([-1], which matches no token, when there are none).
    """

    valid: torch.Tensor
    tokens: torch.Tensor
    positions: torch.Tensor
    answers: torch.Tensor
    step: torch.Tensor
    done: torch.Tensor
    stops: torch.Tensor

    @classmethod
    def allocate(cls, batch: int, length: int, stops: Sequence[int], device: torch.device) -> "StepState":
        long = dict(dtype=torch.long, device=device)
        state = cls(
            valid=torch.zeros(batch, length, dtype=torch.bool, device=device),
            tokens=torch.zeros(batch, 1, **long), positions=torch.zeros(batch, 1, **long),
            answers=torch.zeros(batch, length, **long), step=torch.zeros(1, **long),
            done=torch.zeros(batch, dtype=torch.bool, device=device),
            stops=torch.tensor(list(stops) or [-1], **long),
        )
        for tensor in vars(state).values():
            torch._dynamo.mark_static_address(tensor)
        return state


def _choose(state: StepState, logits: torch.Tensor) -> None:
    """Greedy token per row from (batch, vocab) logits, written into the state."""
    token = logits.float().argmax(-1, keepdim=True)
    state.tokens.copy_(token)
    state.answers.index_copy_(1, state.step, token)
    state.step.add_(1)
    state.done.logical_or_((token == state.stops).any(-1))


def prefill_step(model, cache: Cache, state: StepState, embeds: torch.Tensor, positions: torch.Tensor,
                 marks: torch.Tensor) -> None:
    """Run a right-padded question batch into the cache and choose each row's first token.

    embeds: (batch, bucket, hidden); positions: (batch, bucket) position ids;
    marks: (2,) long, [index of the last real position, number of right pads].
    """
    last = marks[:1]
    out = model(inputs_embeds=embeds, attention_mask=state.valid, position_ids=positions, **cache_argument(cache),
                use_cache=True, logits_to_keep=last)
    for layer in cache.layers:  # wind back over the right pads
        layer.cumulative_length.sub_(marks[1])
    state.positions.copy_(positions.index_select(1, last) + 1)
    state.step.zero_()
    state.done.zero_()
    _choose(state, out.logits[:, -1])


def decode_step(model, cache: Cache, state: StepState) -> None:
    """One decode step: every row reads its last chosen token, and the next one is chosen."""
    out = model(input_ids=state.tokens, attention_mask=state.valid, position_ids=state.positions,
                **cache_argument(cache), use_cache=True, logits_to_keep=1)
    state.positions.add_(1)
    _choose(state, out.logits[:, -1])


class GraphDecoder(Decoder):
    """Static caches with a greedy loop of our own: compiled prefill per bucket, compiled decode steps.

    Plugs in wherever a decoder does (`Reader(decoder=...)`, the bench) and gives the same tokens.
    max_cache_len, reserve: as a `StaticDecoder`'s (static_caches.py).
    compile_config: torch.compile settings (always `fullgraph=True, dynamic=False`); None runs the
        same functions eagerly (for tests: compiling costs seconds even with the "eager" backend).
    bucket: question prefills are padded on the right to a multiple of this (less where the cache
        has no room), so that each bucket compiles once.
    """

    def __init__(self, backbone: "Backbone", max_cache_len: int | None = None,
                 compile_config: CompileConfig | None = None, reserve: int = RESERVE, bucket: int = BUCKET,
                 check_every: int = CHECK_EVERY, stops: Sequence[int] | None = None,
                 prefill_chunk: int | None = PREFILL_CHUNK):
        super().__init__(backbone, stops, prefill_chunk)
        if bucket < 1 or check_every < 1:
            raise ConfigError(f"bucket and check_every must be >= 1, got {bucket} and {check_every}")
        layer_types = set(getattr(backbone.config, "layer_types", None) or [])
        if layer_types - set(LAYER_TYPES):
            raise ConfigError(f"a GraphDecoder handles layer types {LAYER_TYPES}, this model has {sorted(layer_types)}")
        self.caches = StaticCaches(backbone, FullLengthLayout(), max_cache_len, reserve)
        self.compile_config = compile_config
        self.bucket, self.check_every = bucket, check_every
        self._states: dict[tuple[int, int], StepState] = {}
        if compile_config is None:
            self._prefill_step, self._step = prefill_step, decode_step
        else:
            options = {**compile_config.to_dict(), "fullgraph": True, "dynamic": False}
            self._prefill_step, self._step = _compiled(prefill_step, options), _compiled(decode_step, options)

    @classmethod
    def compiled(cls, backbone: "Backbone", max_cache_len: int | None = None, mode: str = "reduce-overhead",
                 backend: str = "inductor", reserve: int = RESERVE, stops: Sequence[int] | None = None) -> "GraphDecoder":
        """Prefill and decode steps compiled by torch.compile in `mode` with `backend` (any device)."""
        config = CompileConfig(fullgraph=True, dynamic=False, mode=mode, backend=backend)
        return cls(backbone, max_cache_len, config, reserve, stops=stops)

    def describe(self) -> dict:
        config = self.compile_config
        return {**super().describe(), **self.caches.describe(), "compiled": config is not None,
                "compile_mode": config.mode if config else None,
                "compile_backend": config.backend if config else None, "loop": "own", "bucket": self.bucket}

    def _state(self, batch: int, length: int) -> StepState:
        key = (batch, length)
        if key not in self._states:
            self._states[key] = StepState.allocate(batch, length, self.stops, self.backbone.device)
        return self._states[key]

    # ------------------------------------------------------------------ the strategy
    def _prefill(self, inputs: DecoderInputs, advance: Advance | None) -> Cache:
        return self.caches.snapshot(inputs, self.prefill_chunk, advance)

    def _generate(self, inputs: DecoderInputs, max_new_tokens: int) -> torch.Tensor:
        cache = self.caches.fresh(inputs.rows, inputs.width + max_new_tokens)
        return self._decode(cache, inputs.embeds(), inputs.attention_mask.bool(), inputs.position_ids, max_new_tokens)

    def _generate_after(self, cache: PrefixCache, inputs: DecoderInputs, max_new_tokens: int) -> torch.Tensor:
        working = self.caches.working(cache, inputs.rows, cache.length + inputs.width + max_new_tokens)
        mask = inputs.attention_after(cache.mask).bool()
        return self._decode(working, self.backbone.embed(inputs.input_ids), mask, inputs.position_ids, max_new_tokens)

    @torch.no_grad()
    def _decode(self, cache: Cache, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                max_new_tokens: int) -> torch.Tensor:
        """(rows, steps) greedy tokens of a working cache holding `cached` positions, after new positions.

        embeds: (rows, width, hidden) the new positions, left-padded; positions: (rows, width) their ids;
        mask: (rows, cached + width) bool, the cached positions' then the new ones'.
        Rows that end early go on decoding; the caller cuts each at its first stop token.
        """
        device = self.backbone.device
        rows, seen = mask.shape
        cached, length = self.caches.filled(cache), self.caches.length(cache)
        width = seen - cached
        check_fits(seen + max_new_tokens, length)
        state = self._state(rows, length)
        state.valid[:, :seen].copy_(mask)
        state.valid[:, seen:] = True
        bucket = max(width, min(-(-width // self.bucket) * self.bucket, length - cached))
        pads = bucket - width
        embeds = torch.cat([embeds.to(device, self.backbone.dtype), embeds.new_zeros(rows, pads, embeds.shape[-1])], 1)
        positions = torch.cat([positions, positions[:, -1:] + torch.arange(1, pads + 1, device=device)], 1)
        marks = torch.tensor([width - 1, pads], dtype=torch.long, device=device)
        with torch.profiler.record_function("question prefill"):
            self._prefill_step(self.backbone.model, cache, state, embeds, positions, marks)
        steps = 1
        with torch.profiler.record_function("decode steps"):
            while steps < max_new_tokens:
                self._step(self.backbone.model, cache, state)
                steps += 1
                if self.stops and steps % self.check_every == 0 and bool(state.done.all()):
                    break
        self.caches.set_filled(cache, seen + steps - 1)  # the last chosen token is not in the cache
        return state.answers[:, :steps].clone()

    def stepper(self, cache: PrefixCache, rows: int, steps: int) -> Callable[[], None]:
        """One compiled decode step on a loaded working cache (pad tokens, every slot real); each call
        appends one position."""
        working = self.caches.working(cache, rows, cache.length + steps)
        length = self.caches.length(working)
        state = self._state(rows, length)
        state.valid.fill_(True)
        state.tokens.fill_(self.backbone.pad_token_id)
        state.positions.fill_(cache.length)
        state.step.zero_()

        def step() -> None:
            check_fits(self.caches.filled(working) + 1, length)
            self._step(self.backbone.model, working, state)
            self.caches.set_filled(working, self.caches.filled(working) + 1)

        return step


def _compiled(function, options: dict):
    """`function` under torch.compile, as a caller of the compiled loop needs it.

    * It is compiled from a copy of its code object, so each decoder has a dynamo cache of its own:
      dynamo keeps compiled graphs per code object, and compiles at most `recompile_limit` (8)
      shapes of one; with fullgraph=True one more raises, and so does the call that needs it.
    * Past that limit (many batch sizes or buckets), a shape runs uncompiled, with a warning.
    * Before each call, CUDA-graph trees are told that a new step begins: the functions return
      nothing, and no output of an earlier replay is read again.
    """
    own = types.FunctionType(function.__code__.replace(), function.__globals__, function.__name__)
    compiled = torch.compile(own, **options)
    limit_hit = torch._dynamo.exc.FailOnRecompileLimitHit

    def run(*args):
        torch.compiler.cudagraph_mark_step_begin()
        try:
            return compiled(*args)
        except limit_hit:
            logger.warning("%s has compiled as many shapes as dynamo allows (recompile_limit); this one runs "
                           "uncompiled", function.__name__)
            return function(*args)

    return run
