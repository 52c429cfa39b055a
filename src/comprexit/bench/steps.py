"""Where a decode step goes: one step timed alone, eager against compiled, next to generate's.

generate's time per new token (from two serving rows of one document: the difference of their
batch times over the difference of their new tokens) holds the forward and generate's own work
around it: each step's inputs and masks, logits processors, stopping checks. Timing one step's
inputs and forward alone (batch of questions, one new token, over a cache of the whole document)
splits the two. The compiled step is the very callable generate decodes with (`get_compiled_call`
of the model), so it reuses generate's compiled graphs; a GraphDecoder's step is its own compiled
step, argmax and bookkeeping included. Each decoder builds its own step (`Decoder.stepper`).
"""

from __future__ import annotations

import torch

from ..backbone import Backbone
from ..decoding import Decoder
from .compression import random_contexts
from .timing import median_seconds

STEPS, WARMUP = 10, 3  # positions the profile appends to a cache: STEPS + WARMUP


@torch.no_grad()
def decode_step_seconds(backbone: Backbone, prefix: torch.Tensor, batch: int, decoder: Decoder) -> float:
    """Median seconds of one decode step (inputs + forward) for `batch` rows after `[BOS] + prefix`."""
    step = decoder.stepper(decoder.prefill(prefix), batch, STEPS + WARMUP)
    return median_seconds(step, backbone.device, STEPS, warmup=WARMUP)


def step_profile(backbone: Backbone, context_tokens: int, batch: int, decoders: dict[str, Decoder]) -> dict:
    """One decode step per decode path over a `context_tokens` document (random tokens, as in serving)."""
    context = random_contexts(backbone, context_tokens, 1, seed=context_tokens)[0]
    prefix = backbone.embed(torch.tensor(context, device=backbone.device))
    return {"context_tokens": context_tokens, "batch": batch,
            "step_seconds": {name: decode_step_seconds(backbone, prefix, batch, d) for name, d in decoders.items()}}


def generate_step_seconds(rows: list[dict], context_tokens: int, path: str, mode: str = "b_prefix_cache") -> float | None:
    """generate's seconds per new token for one document: slope of batch time over new tokens
    between the fewest and the most new tokens measured (None with fewer than two)."""
    points = sorted((r["new_tokens"], r["paths"][path][f"{mode}_batch_seconds"])
                    for r in rows if r["context_tokens"] == context_tokens and path in r.get("paths", {}))
    if len(points) < 2 or points[0][0] == points[-1][0]:
        return None
    (n0, t0), (n1, t1) = points[0], points[-1]
    return (t1 - t0) / (n1 - n0)
