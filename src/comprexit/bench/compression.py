"""What compressing costs: the encoder pass (the floor) against encoder + compressor, part by part."""

from __future__ import annotations

import copy

import torch

from ..backbone import Backbone
from ..compressor import ComprExIT
from .timing import SectionTimer, median_seconds, peak_memory


def random_contexts(backbone: Backbone, tokens: int, count: int, seed: int = 0) -> list[list[int]]:
    """Token ids drawn uniformly from the vocabulary (above the special tokens); never all zeros."""
    generator = torch.Generator().manual_seed(seed)
    vocab = backbone.identity.vocab_size
    return torch.randint(min(1000, vocab // 2), vocab, (count, tokens), generator=generator).tolist()


@torch.no_grad()
def encoder_pass(backbone: Backbone, contexts: list[list[int]]) -> None:
    """The floor: one frozen forward with all hidden states, nothing else."""
    ids = torch.tensor([backbone.bos_ids + c for c in contexts], device=backbone.device)
    backbone.model.base_model(input_ids=ids, output_hidden_states=True, use_cache=False)


@torch.no_grad()
def compressor_breakdown(backbone: Backbone, compressor: ComprExIT, contexts: list[list[int]]) -> dict[str, float]:
    """Seconds per part of one compression: encode, depth mixing, allocation (Sinkhorn), the rest of width, projector."""
    timer = SectionTimer(backbone.device)
    with timer.section("encoder_and_stack"):
        encoded = backbone.encode(contexts)
    hidden = encoded.hidden_states
    token_embeddings = hidden[:, :, 0] if compressor.config.embedding_skip else None
    if compressor.state_indices != list(range(hidden.shape[2])):
        hidden = hidden[:, :, compressor.state_indices]
    with torch.autocast(backbone.device.type, dtype=backbone.dtype, enabled=backbone.dtype != torch.float32):
        with timer.section("depth_mixing"):
            anchors, _ = compressor.depth(hidden, encoded.mask)
        with timer.module(compressor.width.allocation, "sinkhorn"), timer.section("width_total"):
            width = compressor.width(anchors, encoded.mask, passengers=token_embeddings)
        with timer.section("projector"):
            projected = compressor.projector(width.slots)
            compressor.slot_scale(projected if width.carried is None else projected + width.carried)
    parts = dict(timer.seconds)
    parts["width_other"] = parts.pop("width_total") - parts.get("sinkhorn", 0.0)
    return parts


def compiled_copy(compressor: ComprExIT, mode: str) -> ComprExIT:
    """A copy whose forward runs through torch.compile: the eager compressor is launch-bound on a GPU
    (30 Sinkhorn iterations of small kernels), which fusion and, with mode='reduce-overhead', CUDA
    graphs remove."""
    compiled = copy.deepcopy(compressor)
    compiled.compile(mode=mode, dynamic=False)
    return compiled


def compression_cost(
    backbone: Backbone, compressor: ComprExIT, tokens: int, count: int, repeats: int = 5,
    compile_mode: str | None = None,
) -> dict:
    """Median seconds of the encoder pass alone and of full compression, the parts, peak memory.

    With `compile_mode`, also the compressor compiled with torch.compile in that mode (after
    warm-up, so compilation time is excluded; it is reported separately).
    """
    contexts = random_contexts(backbone, tokens, count)
    device = backbone.device
    row: dict = {"tokens": tokens, "contexts": count}
    autocast = dict(device_type=device.type, dtype=backbone.dtype, enabled=backbone.dtype != torch.float32)

    def compress():
        with torch.no_grad(), torch.autocast(**autocast):
            compressor.compress(backbone.encode(contexts))

    with peak_memory(device, row, "peak_memory_encoder_bytes"):
        row["encoder_seconds"] = median_seconds(lambda: encoder_pass(backbone, contexts), device, repeats)
    with peak_memory(device, row, "peak_memory_compress_bytes"):
        row["compress_seconds"] = median_seconds(compress, device, repeats)
    row["overhead_share"] = row["compress_seconds"] / row["encoder_seconds"] - 1
    parts = [compressor_breakdown(backbone, compressor, contexts) for _ in range(3)]
    row["parts_seconds"] = {k: sorted(p[k] for p in parts)[1] for k in parts[0]}
    row["tokens_per_second"] = tokens * count / row["compress_seconds"]
    if compile_mode:
        row.update(_compiled_cost(backbone, compressor, contexts, compile_mode, autocast, repeats, row["encoder_seconds"]))
    return row


def _compiled_cost(backbone, compressor, contexts, mode, autocast, repeats, encoder_seconds) -> dict:
    with torch.no_grad():
        encoded = backbone.encode(contexts)
    warmup = SectionTimer(backbone.device)
    try:
        compiled = compiled_copy(compressor, mode)
        with warmup.section("warmup"), torch.no_grad(), torch.autocast(**autocast):
            for _ in range(3):  # compile, then let CUDA graphs record
                compiled.compress(encoded)
    except Exception as error:  # a missing compiler toolchain must not sink the whole benchmark
        return {"compile_mode": mode, "compile_error": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"}

    def compress():
        with torch.no_grad(), torch.autocast(**autocast):
            compiled.compress(backbone.encode(contexts))

    seconds = median_seconds(compress, backbone.device, repeats)
    return {"compile_mode": mode, "compile_warmup_seconds": round(warmup.seconds["warmup"], 2),
            "compress_compiled_seconds": seconds, "overhead_share_compiled": seconds / encoder_seconds - 1}
