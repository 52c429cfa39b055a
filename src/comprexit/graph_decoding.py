"""Greedy decoding from static caches through a loop of our own, compiled, without `generate`.

Why: on an H100 the decode step that generate compiles (static_decoding.py) takes 2.6 ms for
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
import weakref
from dataclasses import dataclass

import torch
from transformers import CompileConfig
from transformers.cache_utils import Cache, StaticLayer

from .errors import ConfigError
from .static_decoding import StaticDecoder, check_fits

logger = logging.getLogger(__name__)

BUCKET = 64  # question prefills are padded to a multiple of this many positions
CHECK_EVERY = 8  # decode steps between checks whether every row has ended (when EOS may stop)
LAYER_TYPES = ("full_attention", "sliding_attention")


@dataclass
class StepState:
    """Device tensors a decode step reads and updates in place (fixed addresses, for CUDA graphs).

    valid: (batch, cache length) bool, False on pad slots; True from the question's end on (later
        slots are hidden by the causal mask until an answer token is written there).
    tokens, positions: (batch, 1) the token each row reads next and its position id.
    answers: (batch, cache length) tokens chosen so far, `step` of them; done: (batch,) a stop token seen.
    bias: (vocab,) added to the logits: -inf on stop tokens while they are suppressed, else 0.
    """

    valid: torch.Tensor
    tokens: torch.Tensor
    positions: torch.Tensor
    answers: torch.Tensor
    step: torch.Tensor
    done: torch.Tensor
    bias: torch.Tensor
    stops: torch.Tensor

    @classmethod
    def allocate(cls, batch: int, length: int, vocab: int, stops: list[int], device: torch.device) -> "StepState":
        long = dict(dtype=torch.long, device=device)
        state = cls(
            valid=torch.zeros(batch, length, dtype=torch.bool, device=device),
            tokens=torch.zeros(batch, 1, **long), positions=torch.zeros(batch, 1, **long),
            answers=torch.zeros(batch, length, **long), step=torch.zeros(1, **long),
            done=torch.zeros(batch, dtype=torch.bool, device=device),
            bias=torch.zeros(vocab, dtype=torch.float32, device=device),
            stops=torch.tensor(stops or [-1], **long),  # -1: no stop token (matches no token)
        )
        for tensor in vars(state).values():
            torch._dynamo.mark_static_address(tensor)
        return state


def _choose(state: StepState, logits: torch.Tensor) -> None:
    """Greedy token per row from (batch, vocab) logits, written into the state."""
    token = (logits.float() + state.bias).argmax(-1, keepdim=True)
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
    out = model(inputs_embeds=embeds, attention_mask=state.valid, position_ids=positions, past_key_values=cache,
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
                past_key_values=cache, use_cache=True, logits_to_keep=1)
    state.positions.add_(1)
    _choose(state, out.logits[:, -1])


class GraphDecoder(StaticDecoder):
    """Static caches with a greedy loop of our own: compiled prefill per bucket, compiled decode steps.

    Plugs in wherever a `StaticDecoder` does (`Backbone.generate(..., decoder=...)`, `prefill`,
    `cached_answers`, `Reader(decoder=...)`) and gives the same tokens.
    compile_config: torch.compile settings (always `fullgraph=True, dynamic=False`); None runs the
        same functions eagerly (for tests: compiling costs seconds even with the "eager" backend).
    bucket: question prefills are padded on the right to a multiple of this (less where the cache
        has no room), so that each bucket compiles once.
    """

    def __init__(self, backbone, max_cache_len: int | None = None, compile_config: CompileConfig | None = None,
                 reserve: int = 512, bucket: int = BUCKET, check_every: int = CHECK_EVERY):
        super().__init__(backbone, max_cache_len, compile_config, reserve)
        if bucket < 1 or check_every < 1:
            raise ConfigError(f"bucket and check_every must be >= 1, got {bucket} and {check_every}")
        layer_types = set(getattr(backbone.config, "layer_types", None) or [])
        if layer_types - set(LAYER_TYPES):
            raise ConfigError(f"a GraphDecoder handles layer types {LAYER_TYPES}, this model has {sorted(layer_types)}")
        self.bucket, self.check_every = bucket, check_every
        self._states: dict[tuple[int, int], StepState] = {}
        self._filled = weakref.WeakKeyDictionary()  # cache -> positions it holds, known on the host
        if compile_config is None:
            self._prefill, self._step = prefill_step, decode_step
        else:
            options = {**compile_config.to_dict(), "fullgraph": True, "dynamic": False}
            self._prefill, self._step = _compiled(prefill_step, options), _compiled(decode_step, options)

    @classmethod
    def compiled(cls, backbone, max_cache_len: int | None = None, mode: str = "reduce-overhead",
                 backend: str = "inductor", reserve: int = 512) -> "GraphDecoder":
        """Prefill and decode steps compiled by torch.compile in `mode` with `backend` (any device)."""
        return cls(backbone, max_cache_len, CompileConfig(fullgraph=True, dynamic=False, mode=mode, backend=backend),
                   reserve)

    def describe(self) -> dict:
        return {**super().describe(), "loop": "own", "bucket": self.bucket}

    # ------------------------------------------------------------------ caches
    def _new_cache(self, length: int) -> Cache:
        """Every layer a StaticLayer of `length` positions (the sliding window lives in the mask)."""
        return Cache(layers=[StaticLayer(max_cache_len=length) for _ in range(self.backbone.identity.num_layers)])

    def fresh(self, batch: int, positions: int) -> Cache:
        cache = super().fresh(batch, positions)
        self._filled[cache] = 0
        return cache

    def snapshot(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> tuple[Cache, int]:
        cache, length = super().snapshot(inputs_embeds, attention_mask)
        self._filled[cache] = inputs_embeds.shape[1]
        return cache, length

    def load(self, snapshot: Cache, length: int, batch: int, positions: int) -> Cache:
        """The working cache for `batch` rows with the snapshot's positions copied into every row (only
        those: the slots after them are written before anything attends to them)."""
        check_fits(positions, length)
        filled = self._filled[snapshot]
        cache = self._working(batch, length)
        for target, source in zip(cache.layers, snapshot.layers, strict=True):
            for mine, theirs in ((target.keys, source.keys), (target.values, source.values)):
                mine[:, :, :filled].copy_(theirs[:, :, :filled].expand(batch, -1, -1, -1))
            target.cumulative_length.copy_(source.cumulative_length)
        self._filled[cache] = filled
        return cache

    def _state(self, batch: int, length: int) -> StepState:
        key = (batch, length)
        if key not in self._states:
            vocab = self.backbone.model.get_output_embeddings().weight.shape[0]
            self._states[key] = StepState.allocate(batch, length, vocab, self.backbone.stop_token_ids,
                                                   self.backbone.device)
        return self._states[key]

    # ------------------------------------------------------------------ decoding
    @torch.no_grad()
    def generate(self, model, *, attention_mask: torch.Tensor, max_new_tokens: int,
                 inputs_embeds: torch.Tensor | None = None, input_ids: torch.Tensor | None = None,
                 past_key_values: Cache | None = None, position_ids: torch.Tensor | None = None,
                 min_new_tokens: int | None = None, do_sample: bool = False, temperature: float | None = None,
                 top_p: float | None = None, top_k: int | None = None, eos_token_id: list[int] | None = None,
                 pad_token_id: int | None = None) -> torch.Tensor:
        """Greedy tokens, shaped as `model.generate` returns them (after `input_ids`, if given).

        Either left-padded `inputs_embeds` (decoded from the empty working cache), or `input_ids`
        whose first positions `past_key_values` (a working cache from `load`) already holds.
        `min_new_tokens == max_new_tokens` suppresses the stop tokens. Rows that end early go on
        decoding; the caller cuts each row at its first stop token (`Backbone.generate` does), so
        `pad_token_id` is not needed. The stop tokens are the backbone's (`eos_token_id` must be them).
        """
        if do_sample or any(value is not None for value in (temperature, top_p, top_k)):
            raise ConfigError("a GraphDecoder decodes greedily only (no sampling settings)")
        if eos_token_id is not None and list(eos_token_id) != list(self.backbone.stop_token_ids):
            raise ConfigError(f"a GraphDecoder stops at the backbone's stop tokens {self.backbone.stop_token_ids}, "
                              f"not {eos_token_id}")
        if min_new_tokens not in (None, 0, max_new_tokens):
            raise ConfigError(f"min_new_tokens must be 0 or max_new_tokens ({max_new_tokens}), got {min_new_tokens}")
        device = self.backbone.device
        mask = attention_mask.to(device).bool()
        rows, seen = mask.shape
        if inputs_embeds is not None:
            cache, cached = self.fresh(rows, seen + max_new_tokens), 0
            embeds = inputs_embeds.to(device, self.backbone.dtype)
        else:
            if past_key_values is None or past_key_values not in self._filled:
                raise ConfigError("past_key_values must be a working cache of this GraphDecoder (from `load`)")
            cache, cached = past_key_values, self._filled[past_key_values]
            embeds = self.backbone.embed(input_ids[:, cached:].to(device))
        if position_ids is None:  # as generate counts them: real positions only, pads at 0
            position_ids = (mask.long().cumsum(-1) - 1).masked_fill(~mask, 0)
        positions = position_ids.to(device)[:, cached:]
        length, width = cache.layers[0].max_cache_len, seen - cached
        check_fits(cached + width + max_new_tokens, length)
        state = self._state(rows, length)
        state.valid[:, :seen].copy_(mask)
        state.valid[:, seen:] = True
        state.bias.zero_()
        if min_new_tokens and self.backbone.stop_token_ids:
            state.bias.index_fill_(0, state.stops, float("-inf"))
        bucket = max(width, min(-(-width // self.bucket) * self.bucket, length - cached))
        pads = bucket - width
        embeds = torch.cat([embeds, embeds.new_zeros(rows, pads, embeds.shape[-1])], 1)
        positions = torch.cat([positions, positions[:, -1:] + torch.arange(1, pads + 1, device=device)], 1)
        marks = torch.tensor([width - 1, pads], dtype=torch.long, device=device)
        with torch.profiler.record_function("question prefill"):
            self._prefill(self.backbone.model, cache, state, embeds, positions, marks)
        steps = 1
        with torch.profiler.record_function("decode steps"):
            while steps < max_new_tokens:
                self._step(self.backbone.model, cache, state)
                steps += 1
                if not min_new_tokens and steps % self.check_every == 0 and bool(state.done.all()):
                    break
        self._filled[cache] = cached + width + steps - 1  # the last chosen token is not in the cache
        tokens = state.answers[:, :steps].clone()
        return tokens if input_ids is None else torch.cat([input_ids.to(device), tokens], 1)

    def stepper(self, cache: Cache):
        """A callable running one decode step on a loaded working cache (pad tokens, every slot real),
        as `comprexit bench` times steps; each call appends one position."""
        rows, length = cache.layers[0].keys.shape[0], cache.layers[0].max_cache_len
        state, filled = self._state(rows, length), self._filled[cache]
        state.valid.fill_(True)
        state.tokens.fill_(self.backbone.pad_token_id)
        state.positions.fill_(filled)
        state.step.zero_()

        def step() -> None:
            check_fits(self._filled[cache] + 1, length)
            self._step(self.backbone.model, cache, state)
            self._filled[cache] += 1

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
