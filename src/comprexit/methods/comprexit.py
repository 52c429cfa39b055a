"""ComprExIT as an evaluation method: the decoder reads the compressor's slots."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ..compressor import ComprExIT
from ..config import ComprExITConfig
from ..errors import ConfigError
from ..weights import shipped_compressor_dir
from .base import DecoderPrefix, Method, register_method


@register_method("comprexit")
class ComprExITMethod(Method):
    """Slots of a trained compressor (`weights`: a folder; default: the shipped one)."""

    def __init__(self, backbone, weights: str | Path | None = None, compressor: ComprExIT | None = None):
        super().__init__(backbone)
        if compressor is None:
            weights = weights or shipped_compressor_dir(backbone.identity)
            if weights is None:
                raise ConfigError(
                    f"method 'comprexit' needs --weights DIR: no trained compressor is shipped for {backbone.identity.name}"
                )
            compressor = ComprExIT.from_pretrained(weights, backbone)
        self.weights = str(weights) if weights else "in-memory"
        self.compressor = compressor.to(backbone.device).eval()

    @torch.no_grad()
    def prepare(self, contexts: Sequence[Sequence[int]]) -> DecoderPrefix:
        out = self.compressor.compress(self.backbone.encode(contexts))
        return DecoderPrefix([slots[mask] for slots, mask in zip(out.slots, out.mask)])

    def settings(self) -> dict:
        return {
            "method": self.name,
            "weights": self.weights,
            "config": self.compressor.config.to_dict(),
            "trainable_parameters": self.trainable_parameters(),
        }

    def trainable_parameters(self) -> int:
        return self.compressor.parameter_count()

    @classmethod
    def untrained(cls, backbone, config: ComprExITConfig | None = None) -> "ComprExITMethod":
        return cls(backbone, compressor=ComprExIT.for_backbone(backbone, config))
