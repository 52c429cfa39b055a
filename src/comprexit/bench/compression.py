"""What compressing costs: the encoder pass (the floor) against encoder + compressor, part by part."""

from __future__ import annotations

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
            slots, _, _, pooled = compressor.width(anchors, encoded.mask, passengers=token_embeddings)
        with timer.section("projector"):
            projected = compressor.projector(slots)
            compressor.slot_scale(projected if pooled is None else projected + pooled)
    parts = dict(timer.seconds)
    parts["width_other"] = parts.pop("width_total") - parts.get("sinkhorn", 0.0)
    return parts


def compression_cost(
    backbone: Backbone, compressor: ComprExIT, tokens: int, count: int, repeats: int = 5
) -> dict:
    """Median seconds of the encoder pass alone and of full compression, the parts, peak memory."""
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
    return row
