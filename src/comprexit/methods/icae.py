"""ICAE (Ge et al., 2024): the LLM itself, with LoRA, compresses the context into memory tokens.

Encoder: the backbone with LoRA adapters (peft; r 128, alpha 32, dropout 0.05, every linear
projection of attention and MLP) reads `[BOS] + context + M memory tokens`, the memory
tokens being M learned input vectors. Their last-layer hidden states (Hugging Face's final
state, i.e. after the model's final norm, as ICAE's code reads them) are the decoder's soft
prefix: the frozen backbone, adapters off, reads `[BOS] + memory states + prompt`.

M = ceil(T / ratio) for a T-token context (the number of slots ComprExIT gets), or a fixed
`memory_tokens` (the paper: 128). Only the adapters and the memory vectors train.

The adapters live in a copy of the backbone's module tree that shares every weight tensor
with it (no extra memory), so the backbone object the decoder, the teacher and every other
method use never contains an adapter: "decoder with LoRA disabled" holds by construction.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from ..assembly import Tokens, Vectors, assemble
from ..backbone import Backbone
from ..config import ConfigFields, is_int_at_least, is_number
from ..errors import ConfigError, InputError
from ..prefix import SoftPrefixBatch
from .base import register_method
from .trainable import ContextBatch, ContextEncoder, TrainableMethod, register_encoder


@dataclass
class ICAEConfig(ConfigFields):
    label: ClassVar[str] = "ICAE config"

    ratio: int = field(default=4, metadata={"help": "memory tokens per context: ceil(tokens / ratio)"})
    memory_tokens: int | None = field(
        default=None, metadata={"help": "a fixed number of memory tokens instead of ceil(tokens / ratio) (paper: 128)"}
    )
    max_context_tokens: int = field(
        default=512, metadata={"help": "longest context; sizes the learned memory table when memory_tokens is None"}
    )
    lora_rank: int = 128
    lora_alpha: float = 32.0
    lora_dropout: float = 0.05
    lora_targets: str | tuple[str, ...] = field(
        default="all-linear", metadata={"help": "'all-linear' (attention and MLP projections) or module names"}
    )

    def __post_init__(self) -> None:
        if isinstance(self.lora_targets, list):
            self.lora_targets = tuple(self.lora_targets)
        self._validate()

    def _problems(self):
        for name in ("ratio", "max_context_tokens", "lora_rank"):
            if not is_int_at_least(getattr(self, name), 1):
                yield f"{name} must be an integer >= 1, got {getattr(self, name)!r}"
        if self.memory_tokens is not None and not is_int_at_least(self.memory_tokens, 1):
            yield f"memory_tokens must be None or an integer >= 1, got {self.memory_tokens!r}"
        if not is_number(self.lora_alpha) or not self.lora_alpha > 0:
            yield f"lora_alpha must be > 0, got {self.lora_alpha!r}"
        if not is_number(self.lora_dropout) or not 0 <= self.lora_dropout < 1:
            yield f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}"
        targets = self.lora_targets
        if not (targets == "all-linear" or (isinstance(targets, tuple) and targets and all(isinstance(t, str) for t in targets))):
            yield f"lora_targets must be 'all-linear' or a non-empty list of module names, got {targets!r}"

    @property
    def table_size(self) -> int:
        """Learned memory vectors: M when fixed, else the count for the longest context."""
        return self.memory_tokens or math.ceil(self.max_context_tokens / self.ratio)

    def count(self, tokens: int) -> int:
        """Memory tokens for a context of `tokens` tokens."""
        return self.memory_tokens or math.ceil(tokens / self.ratio)


def lora_copy(model: nn.Module, config: ICAEConfig, exclude: list[str] | None = None):
    """A peft `PeftModel` over a copy of `model` that shares all its tensors, with fresh LoRA adapters.

    `model` itself is left untouched (no adapter layers are injected into it). `exclude`:
    full names of modules that get no adapter even though they match the targets.
    """
    from peft import LoraConfig, get_peft_model

    shared = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    twin = copy.deepcopy(model, shared)
    targets = config.lora_targets if config.lora_targets == "all-linear" else list(config.lora_targets)
    lora = LoraConfig(
        r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=targets, bias="none", exclude_modules=exclude or None,
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # transformers deprecation notes raised inside peft
            return get_peft_model(twin, lora)
    except ValueError as error:
        raise ConfigError(f"LoRA adapters cannot be placed: {str(error).splitlines()[0]}") from error


class MemoryTokenEncoder(ContextEncoder):
    """LoRA encoder over `[BOS] + context + memory tokens`, shared by ICAE and 500xCompressor.

    Registered tensors (what trains, saves and syncs): `memory` (table_size, hidden) and the
    adapters' A/B matrices. The LoRA model itself is kept outside the module tree, so that
    state dicts, optimizers and data-parallel wrappers never see the backbone's weights.
    Subclasses turn the encoder pass into a prefix (`readout`).
    """

    config_class = ICAEConfig

    def __init__(self, config: ICAEConfig, backbone: Backbone):
        super().__init__(config, backbone.identity)
        from peft.tuners.lora import LoraLayer

        self.backbone = backbone
        peft_model = lora_copy(backbone.model, config, self.unread_modules(backbone.model))
        object.__setattr__(self, "lora_model", peft_model)  # deliberately not a submodule
        scale = backbone.embedding_rms()
        self.memory = nn.Parameter(torch.randn(config.table_size, backbone.hidden_size, device=backbone.device) * scale)
        self.adapters = nn.ModuleDict({
            name.replace(".", "-"): nn.ModuleDict({"A": layer.lora_A, "B": layer.lora_B, "dropout": layer.lora_dropout})
            for name, layer in peft_model.get_base_model().named_modules()
            if isinstance(layer, LoraLayer)
        })

    @classmethod
    def for_backbone(cls, backbone: Backbone, config: ICAEConfig | None = None) -> "MemoryTokenEncoder":
        return cls(config or cls.config_class(), backbone)

    def train(self, mode: bool = True) -> "MemoryTokenEncoder":
        super().train(mode)
        self.lora_model.train(mode)  # adapter dropout and gradient checkpointing follow the encoder's mode
        return self

    def enable_gradient_checkpointing(self) -> None:
        # only the adapted copy's layers are wrapped; the backbone the decoder uses is untouched
        self.lora_model.get_base_model().activation_checkpointing_enable({"use_reentrant": False})

    def forward(self, batch: ContextBatch):
        backbone = self.backbone
        contexts = batch.contexts
        counts = [self.config.count(len(c)) for c in contexts]
        if self.max_context_tokens is not None and max(len(c) for c in contexts) > self.max_context_tokens:
            raise InputError(
                f"{self.method} was built for contexts of at most {self.config.max_context_tokens} tokens, "
                f"got {max(len(c) for c in contexts)}"
            )
        device = backbone.device
        inputs = assemble(backbone, Tokens([backbone.bos_ids + c for c in contexts]), Vectors(self.memory, counts))
        embeds = inputs.embeds()  # (batch, width, hidden), right-padded
        rows = torch.arange(len(contexts)).repeat_interleave(torch.tensor(counts)).to(device)
        slot = torch.cat([torch.arange(m) for m in counts]).to(device)  # memory index within its row
        cols = torch.tensor(inputs.starts[1], device=device)[rows] + slot
        mask, positions = inputs.attention_mask, inputs.position_ids
        return self.readout(embeds, mask, positions, rows, slot, cols, counts)

    def readout(self, embeds, mask, positions, rows, slot, cols, counts):
        """The prefix from the LoRA encoder's pass; `rows`, `slot`, `cols` locate every memory token."""
        raise NotImplementedError

    def unread_modules(self, model: nn.Module) -> list[str]:
        """Modules whose output never reaches the prefix: an adapter there would get no gradient."""
        return []

    @property
    def max_context_tokens(self) -> int | None:
        return None if self.config.memory_tokens else self.config.max_context_tokens

    @property
    def transformer(self) -> nn.Module:
        """The adapted model without its LM head."""
        return self.lora_model.get_base_model().base_model


@register_encoder("icae")
class ICAEEncoder(MemoryTokenEncoder):
    """Prefix: the memory tokens' final hidden states, in context order."""

    def readout(self, embeds, mask, positions, rows, slot, cols, counts):
        final = self.transformer(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False
        ).last_hidden_state
        prefix = final.new_zeros(len(counts), max(counts), final.shape[-1])
        prefix = prefix.index_put((rows, slot), final[rows, cols])
        return SoftPrefixBatch(prefix, counts)


@register_method("icae")
class ICAEMethod(TrainableMethod):
    """`[BOS] + memory states + prompt`, read by the backbone without adapters."""

    encoder_class = ICAEEncoder
