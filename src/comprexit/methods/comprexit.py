"""ComprExIT as a method: the decoder reads the compressor's slots. Also the paper's ablations by name."""

from __future__ import annotations

from pathlib import Path

import torch

from ..backbone import Backbone, BackboneIdentity
from ..compressor import ComprExIT
from ..config import ComprExITConfig
from ..errors import ConfigError
from ..prefix import SoftPrefixBatch
from ..weights import shipped_compressor_dir
from .base import register_method
from .trainable import ContextBatch, ContextEncoder, TrainableMethod, register_encoder


def _middle_layer(identity: BackboneIdentity) -> dict:
    # the paper's middle layer is hidden state 9 of Llama-3.2-1B's 16 layers: keep that relative depth
    return {"layers": [round(identity.num_layers * 9 / 16)]}


# `comprexit train --method comprexit --ablation NAME`: the paper's ablations (METHOD.md, "Ablations")
ABLATIONS = {
    "wo-allocation": lambda identity: {"allocation": "attention"},  # each slot attends over its window
    "embedding-only": lambda identity: {"layers": [0]},  # the embedding output instead of all layers
    "middle-layer": _middle_layer,
    "last-layer": lambda identity: {"layers": [identity.num_layers]},  # the final (normed) state only
}


def ablation_of(config: dict, num_layers: int) -> str | None:
    """The ablation a saved ComprExIT config is (None: the full method), from the config alone."""
    from ..backbone import BackboneIdentity

    identity = BackboneIdentity(name="", model_type="", hidden_size=0, num_layers=num_layers, vocab_size=0)
    for name, overrides in ABLATIONS.items():
        if all(_same(config.get(key), value) for key, value in overrides(identity).items()):
            return name
    return None


def _same(saved, wanted) -> bool:
    return list(saved) == list(wanted) if isinstance(wanted, (list, tuple)) and saved is not None else saved == wanted


@register_encoder("comprexit")
class ComprExITEncoder(ContextEncoder):
    """The trainer's view of a ComprExIT compressor: it reads every layer's states of the frozen pass."""

    config_class = ComprExITConfig
    reads_frozen_states = True
    ablations = ABLATIONS

    def __init__(self, compressor: ComprExIT):
        super().__init__(compressor.config, compressor.identity)
        self.compressor = compressor

    @classmethod
    def for_backbone(cls, backbone: Backbone, config: ComprExITConfig | None = None) -> "ComprExITEncoder":
        return cls(ComprExIT.for_backbone(backbone, config))

    def forward(self, batch: ContextBatch) -> SoftPrefixBatch:
        """Each context's slots, led by the reader tokens where the compressor has them.

        The reader tokens are the prefix's `lead`, not rows of its vectors: read once before each
        row, they stay once at the front when chunks' prefixes are joined into a document's
        (`chunks.join_chunks`), whether a document is one chunk or several.
        """
        index = None if batch.chunk_index is None else torch.tensor(batch.chunk_index)
        out = self.compressor(batch.hidden_states, batch.mask, chunk_index=index)
        # non-empty slots come first; counted from the context lengths, without waiting for the device
        lengths = [self.compressor.num_slots(len(c)) for c in batch.contexts]
        return SoftPrefixBatch(out.slots, lengths, lead=self.compressor.reader_tokens)

    def parameter_count(self) -> int:
        return self.compressor.parameter_count()

    def save_pretrained(self, directory: str | Path) -> Path:
        return self.compressor.save_pretrained(directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, backbone: Backbone, added: dict | None = None) -> "ComprExITEncoder":
        return cls(ComprExIT.from_pretrained(directory, backbone, added=added))


@register_method("comprexit")
class ComprExITMethod(TrainableMethod):
    """Slots of a trained compressor (`weights`: a folder; default: the shipped one)."""

    encoder_class = ComprExITEncoder

    def __init__(
        self,
        backbone: Backbone,
        weights: str | Path | None = None,
        encoder: ComprExITEncoder | None = None,
        compressor: ComprExIT | None = None,
    ):
        if compressor is not None:
            encoder = ComprExITEncoder(compressor)
        elif encoder is None:
            weights = weights or shipped_compressor_dir(backbone.identity)
            if weights is None:
                raise ConfigError(
                    f"method 'comprexit' needs --weights DIR: no trained compressor is shipped for {backbone.identity.name}"
                )
        super().__init__(backbone, weights, encoder)

    @property
    def compressor(self) -> ComprExIT:
        return self.encoder.compressor
