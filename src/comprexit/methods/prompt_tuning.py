"""Prompt tuning with the full context: trainable virtual tokens read before the uncompressed context.

The decoder reads `[BOS] + virtual tokens + context + prompt`; only the virtual tokens train.
Nothing is compressed: this is the paper's upper reference for what a soft prefix can add to
the frozen model reading the whole document.

Initialisation: the virtual tokens start as the input embeddings of the tokens of `init_text`,
repeated to fill them (`prompt_vectors.text_vectors`, which ComprExIT's reader tokens start from too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from ..assembly import Tokens, assemble
from ..backbone import Backbone, BackboneIdentity
from ..config import ConfigFields, is_int_at_least
from ..prefix import SoftPrefixBatch
from ..prompt_vectors import INIT_TEXT, text_vectors
from .base import register_method
from .trainable import ContextBatch, ContextEncoder, TrainableMethod, register_encoder


@dataclass
class PromptTuningConfig(ConfigFields):
    label: ClassVar[str] = "prompt-tuning config"

    virtual_tokens: int = field(default=32, metadata={"help": "trainable vectors read before the context"})
    init_text: str = field(default=INIT_TEXT, metadata={"help": "their initial values: this text's token embeddings"})

    def _problems(self):
        if not is_int_at_least(self.virtual_tokens, 1):
            yield f"virtual_tokens must be an integer >= 1, got {self.virtual_tokens!r}"
        if not isinstance(self.init_text, str) or not self.init_text.strip():
            yield f"init_text must be a non-empty string, got {self.init_text!r}"


@register_encoder("prompt-tuning")
class PromptTuningEncoder(ContextEncoder):
    """`virtual tokens + embed(context)` for every context; gradients reach only the virtual tokens."""

    config_class = PromptTuningConfig
    # the decoder reads the context itself, so reconstructing it (ae) would only teach copying
    objectives = ("ce", "kl")
    reads_in_chunks = False  # it compresses nothing: a long context is read whole

    def __init__(self, config: PromptTuningConfig, identity: BackboneIdentity, backbone: Backbone, init: torch.Tensor):
        super().__init__(config, identity)
        self.backbone = backbone  # a plain object, not a submodule: its weights stay out of state dicts
        self.tokens = nn.Parameter(init.detach().float().clone())  # (virtual_tokens, hidden)

    @classmethod
    def for_backbone(cls, backbone: Backbone, config: PromptTuningConfig | None = None) -> "PromptTuningEncoder":
        config = config or PromptTuningConfig()
        init = text_vectors(backbone, config.init_text, config.virtual_tokens)
        return cls(config, backbone.identity, backbone, init).to(backbone.device)

    def forward(self, batch: ContextBatch) -> SoftPrefixBatch:
        context = assemble(self.backbone, Tokens(batch.contexts)).embeds()  # (batch, tokens, hidden), right-padded
        soft = self.tokens.to(context.dtype).expand(len(batch.contexts), -1, -1)
        n = self.config.virtual_tokens
        return SoftPrefixBatch(torch.cat([soft, context], dim=1), [n + len(c) for c in batch.contexts])


@register_method("prompt-tuning")
class PromptTuningMethod(TrainableMethod):
    """Upper reference: `[BOS] + trained virtual tokens + full context + prompt`."""

    encoder_class = PromptTuningEncoder
