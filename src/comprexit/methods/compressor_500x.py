"""500xCompressor (Li et al., 2025): like ICAE, but the decoder reads the memory tokens' keys and values.

Encoder: the backbone with LoRA on the query and value projections reads
`[BOS] + context + M memory tokens` (positions 0 .. T + M, as ICAE). The keys and values of
the M memory positions at EVERY layer, as the encoder's cache holds them (rotary embedding
applied at those positions), form the prefix; the context's own keys and values are dropped.

Decoder layout (the frozen backbone, adapters off): it attends to that cache, then reads
`[BOS] + prompt` (+ target in training) at position ids continuing from the last memory
position (T + M + 1, ...), so every relative rotary offset between the prompt and a memory
token is the one the encoder produced; the gap left by the dropped context is masked out,
not re-numbered. `[BOS]` after the cache is 500xCompressor's own regeneration layout
("KV values + [BOS] + text"), and gives the first target token an input to be predicted from.
Only the adapters and the memory vectors train. The last layer's query projection gets no
adapter: its output never reaches the cache (it could get no gradient). The backbone needs a
BOS token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from torch import nn
from transformers import DynamicCache

from ..backbone import Backbone
from ..errors import ConfigError
from ..hf_compat import cache_argument
from ..prefix import KVPrefixBatch
from .base import register_method
from .icae import ICAEConfig, MemoryTokenEncoder
from .trainable import TrainableMethod, register_encoder


KEY_VALUE_PROJECTIONS = ("k_proj", "v_proj")


@dataclass
class Compressor500xConfig(ICAEConfig):
    label: ClassVar[str] = "500x config"

    lora_targets: str | tuple[str, ...] = field(
        default=("q_proj", "v_proj"), metadata={"help": "module names given LoRA adapters (the paper: q and v)"}
    )


@register_encoder("500x")
class Compressor500xEncoder(MemoryTokenEncoder):
    """Prefix: the memory tokens' keys and values at every layer (`KVPrefixBatch`)."""

    config_class = Compressor500xConfig

    def __init__(self, config: Compressor500xConfig, backbone: Backbone):
        if not backbone.bos_ids:
            raise ConfigError(f"500x reads `[BOS] + prompt` after its cache, and {backbone.identity.name} has no BOS token")
        super().__init__(config, backbone)

    def unread_modules(self, model: nn.Module) -> list[str]:
        """In the last layer only the key and value projections reach the cache (its queries,
        output projection and MLP only shape a final state nobody reads): no adapter elsewhere there."""
        last = f".layers.{self.identity.num_layers - 1}."
        return [
            name for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and last in name and name.rsplit(".", 1)[-1] not in KEY_VALUE_PROJECTIONS
        ]

    def enable_gradient_checkpointing(self) -> None:
        raise ConfigError(
            "500x reads the key/value cache its encoder pass writes, which gradient checkpointing drops: "
            "train it without gradient checkpointing"
        )

    def readout(self, embeds, mask, positions, rows, slot, cols, counts):
        # a cache built without the model config keeps every position, even in sliding-window layers
        cache = DynamicCache()
        self.transformer(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions, **cache_argument(cache), use_cache=True
        )
        firsts = cols[slot == 0].tolist()  # each row's first memory column
        columns = [range(first, first + n) for first, n in zip(firsts, counts)]
        keys = [layer.keys for layer in cache.layers]
        values = [layer.values for layer in cache.layers]
        return KVPrefixBatch.gather(keys, values, columns, [first + n for first, n in zip(firsts, counts)])  # T + M + 1


@register_method("500x")
class Compressor500xMethod(TrainableMethod):
    """The backbone (adapters off) attends to the memory tokens' keys and values, then reads `[BOS] + prompt`."""

    encoder_class = Compressor500xEncoder
