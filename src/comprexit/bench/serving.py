"""Many questions over one document: what each way of serving them costs per question, and in memory.

(a) full context: every batch of questions re-reads the whole document (prefill each time);
(b) prefix caching: the document's key/value cache is computed once and reused (the strong
    baseline a serving system would use);
(c) ComprExIT: the document is compressed once, the decoder's cache over `[BOS] + slots` is
    computed once, and each question only prefills itself.

Each is timed once per decode path: "eager" (transformers' dynamic cache, eager forward),
"static" (static caches with generate's compiled decode step, decoding/static.py) and "graph"
(the same caches decoded by our own compiled loop, decoding/graph.py). The first call of each is
timed apart: on the compiled paths it compiles, and it is kept out of the medians. The decoders
have no stop tokens, so every batch decodes exactly its stated number of new tokens.
"""

from __future__ import annotations

import time

import torch

from ..assembly import LEFT
from ..decoding import Decoder, EagerDecoder
from ..prefix import SoftPrefix, SoftPrefixBatch
from ..reader import Reader
from .compression import random_contexts
from .timing import median_seconds

QUESTIONS = [
    "Who designed the tower?",
    "When was the station connected to the grid?",
    "What did the keepers wind every four hours?",
    "How far away can the light be seen on a clear night?",
    "What pattern do the flashes make?",
    "Where was the lens made?",
    "Who was the last keeper?",
    "What do the cottages house today?",
]
MODES = ("a_full_context", "b_prefix_cache", "c_slots")


def _questions(count: int) -> list[str]:
    return [QUESTIONS[i % len(QUESTIONS)] for i in range(count)]


def serving_prompts(reader: Reader, batch: int) -> list[list[int]]:
    return [reader.prompt_ids(q) for q in _questions(batch)]


def serving_costs(
    reader: Reader, context_tokens: int, batch: int, new_tokens: int, repeats: int = 3,
    decoders: dict[str, Decoder] | None = None,
    slot_decoders: dict[str, Decoder] | None = None,
) -> dict:
    """Per-question latency of (a), (b), (c) for one batch of `batch` questions, and one-time costs.

    decoders: decode path name -> its decoder (stop tokens none, so that every batch decodes
    exactly `new_tokens`); default an eager one only. slot_decoders: the same paths' decoders for (c), whose caches need only hold the slots
    (default: `decoders`). Each path's numbers go under `paths`; the eager path's also at the top
    level, where results files kept them before there were decode paths.
    """
    backbone, device = reader.backbone, reader.backbone.device
    context = random_contexts(backbone, context_tokens, 1, seed=context_tokens)[0]
    full = backbone.embed(torch.tensor(context, device=device))
    row: dict = {"context_tokens": context_tokens, "batch": batch, "new_tokens": new_tokens}
    document = reader.compress_ids(context)
    row["c_compress_seconds"] = median_seconds(lambda: reader.compress_ids(context), device, repeats)
    row["slots"] = document.num_slots
    slots = document.prefix().to(device)
    prompts = serving_prompts(reader, batch)
    decoders = decoders or {"eager": EagerDecoder(backbone, stops=())}
    row["paths"] = {
        name: path_costs(backbone, full, slots, prompts, new_tokens, repeats, decoder,
                         (slot_decoders or decoders)[name])
        for name, decoder in decoders.items()
    }
    if "eager" in row["paths"]:  # a compiled path that decodes wrongly shows here, not in its timings
        reference = row["paths"]["eager"]["c_answers"]
        for costs in row["paths"].values():
            costs["c_answers_as_eager"] = sum(a == b for a, b in zip(costs["c_answers"], reference, strict=True))
        row.update({k: v for k, v in row["paths"]["eager"].items()
                    if k not in ("first_call_seconds", "c_answers", "c_answers_as_eager")})
    eager = EagerDecoder(backbone)
    row["memory"] = document_memory(reader, eager.prefill(full), eager.prefill(slots), document)
    return row


def path_costs(backbone, full, slots, prompts, new_tokens, repeats, decoder: Decoder,
               slot_decoder: Decoder | None = None) -> dict:
    """(a), (b), (c) through one decode path: batch seconds (median), per question, one-time prefills.
    (c) decodes through `slot_decoder` where given (the same path, caches sized for the slots)."""
    slot_decoder = slot_decoder if slot_decoder is not None else decoder
    device, batch = backbone.device, len(prompts)
    # a server batches every question, pads and all (decoding/base.py explains the sliding-window nuance)
    decode = dict(max_new_tokens=new_tokens, exact=False)
    costs: dict = {"first_call_seconds": {}}

    def timed(mode: str, run) -> None:
        costs["first_call_seconds"][mode] = median_seconds(run, device, repeats=1, warmup=0)
        costs[f"{mode}_batch_seconds"] = median_seconds(run, device, repeats)

    timed("a_full_context", lambda: _full_batch(backbone, full, prompts, new_tokens, decoder))
    context_cache = decoder.prefill(full)
    costs["b_prefill_seconds"] = median_seconds(lambda: decoder.prefill(full), device, repeats)
    timed("b_prefix_cache", lambda: decoder.cached_answers(context_cache, prompts, **decode))
    slot_cache = slot_decoder.prefill(slots)
    costs["c_slot_prefill_seconds"] = median_seconds(lambda: slot_decoder.prefill(slots), device, repeats)

    def c_batch() -> None:  # its answers are kept, for the check against the eager path's
        costs["c_answers"] = slot_decoder.cached_answers(slot_cache, prompts, **decode)

    timed("c_slots", c_batch)
    for mode in MODES:
        seconds = costs[f"{mode}_batch_seconds"]
        costs[f"{mode}_seconds_per_question"] = seconds / batch
        costs[f"{mode}_questions_per_second"] = batch / seconds
    costs["speedup_c_over_a"] = costs["a_full_context_batch_seconds"] / costs["c_slots_batch_seconds"]
    costs["speedup_c_over_b"] = costs["b_prefix_cache_batch_seconds"] / costs["c_slots_batch_seconds"]
    return costs


def _full_batch(backbone, full, prompts, new_tokens, decoder: Decoder):
    """(a): the same left-padded `[BOS] + context + prompt` batch as evaluation reads, tokens only."""
    inputs = SoftPrefixBatch.stack([SoftPrefix(full)] * len(prompts)).inputs(backbone, prompts, side=LEFT)
    decoder.generate(inputs, new_tokens)


def document_memory(reader: Reader, context_cache, slot_cache, document) -> dict:
    """Bytes a document occupies when kept for later questions, by what is kept."""
    backbone = reader.backbone
    b = context_cache.nbytes_by_layer_type(backbone)
    c = slot_cache.nbytes_by_layer_type(backbone)
    element = torch.tensor([], dtype=backbone.dtype).element_size()
    slots_bytes = document.num_slots * backbone.hidden_size * element
    return {
        "b_kv_cache_bytes": sum(b.values()),
        "b_kv_cache_bytes_by_layer_type": b,
        "c_slots_bytes": slots_bytes,
        "c_slot_cache_bytes": sum(c.values()),
        "c_slot_cache_bytes_by_layer_type": c,
        "kv_cache_over_slots": sum(b.values()) / slots_bytes,
        "kv_cache_over_slot_cache": sum(b.values()) / sum(c.values()),
        "dtype": str(backbone.dtype).replace("torch.", ""),
    }


def interactive_ask(reader: Reader, text: str, questions: list[str]) -> dict:
    """What a user of `comprexit ask` waits for: compress once, then one question at a time."""
    start = time.perf_counter()
    document = reader.compress(text)
    compress_seconds = time.perf_counter() - start
    per_question = []
    for question in questions:
        start = time.perf_counter()
        reader.ask(document, [question])
        per_question.append(time.perf_counter() - start)
    return {
        "context_tokens": document.context_tokens,
        "slots": document.num_slots,
        "compress_seconds": compress_seconds,
        "question_seconds": per_question,
        "first_question_seconds": per_question[0],
        "later_question_seconds_median": sorted(per_question[1:])[len(per_question[1:]) // 2] if len(per_question) > 1 else None,
    }
