"""What `comprexit train` trains: a `ContextEncoder`, and the evaluation method that reads it.

A context encoder is the trainable part of a method: token-id contexts in, a differentiable
prefix out (`SoftPrefixBatch` or `KVPrefixBatch`). The trainer, the objectives and the
validation loop only use this interface, so every trainable method gets the same data,
losses, checkpoints, resume and model selection.

    encoder = EncoderClass.for_backbone(backbone, config)    # fresh, sized for the backbone
    prefix = encoder(ContextBatch.of(backbone, contexts, encoder))  # differentiable
    encoder.parameter_count(); encoder.save_pretrained(dir)
    load_encoder(dir, backbone, method="icae")              # refuses another method or backbone

Adding a trainable method: a module with a config dataclass, a `ContextEncoder` subclass
decorated `@register_encoder("name")`, and a `TrainableMethod` subclass registered under the
same name with `encoder_class` pointing at it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import torch
from torch import nn

from ..backbone import Backbone, BackboneIdentity
from ..chunks import CHUNK_TOKENS, chunk_layout, join_chunks
from ..config import ConfigFields
from ..errors import ConfigError
from ..prefix import KVPrefixBatch, SoftPrefixBatch
from ..saving import folder_method, load_state_into, read_checkpoint_config, read_folder_config, save_folder
from .base import DecoderPrefix, Method, registrar

OBJECTIVES = ("ce", "kl", "ae")


@dataclass
class ContextBatch:
    """An encoder's input: token-id contexts (no BOS), plus the frozen pass's states where the encoder reads them.

    hidden_states: (batch, tokens, layers + 1, hidden) right-padded, or None.
    mask: (batch, tokens) bool, True on real tokens, or None.
    chunk_index: which chunk of its document each context is, where the contexts are chunks of
        longer documents (long-context training); None: each is a whole context.
    """

    contexts: list[list[int]]
    hidden_states: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    chunk_index: list[int] | None = None

    @classmethod
    def of(cls, backbone: Backbone, contexts: Sequence[Sequence[int]], encoder: "ContextEncoder",
           chunk_index: list[int] | None = None) -> "ContextBatch":
        """The batch `encoder` needs, running the frozen encoder pass only if it reads its states."""
        contexts = [list(c) for c in contexts]
        if not encoder.reads_frozen_states:
            return cls(contexts, chunk_index=chunk_index)
        encoded = backbone.encode(contexts)
        return cls(contexts, encoded.hidden_states, encoded.mask, chunk_index)


class ContextEncoder(nn.Module):
    """Base class of trainable context encoders.

    Class attributes a subclass sets:
      config_class: its validated config dataclass (with `from_dict` / `to_dict`).
      reads_frozen_states: True if it reads every layer's states of the frozen backbone's
        pass over the context (ComprExIT); the trainer then reuses that pass as the teacher.
      reads_in_chunks: True if a context longer than one chunk is compressed chunk by chunk, the
        chunks' prefixes joined (compressors, trained on one chunk); False if it reads a context whole
        (prompt tuning, which compresses nothing).
      objectives: the training objectives it supports (a subset of ce, kl, ae).
      ablations: named config changes (`--ablation NAME`), each a function of the backbone's
        identity returning config fields.
    The registry name (`method`) is set by `@register_encoder`.
    """

    method: ClassVar[str] = ""
    config_class: ClassVar[type[ConfigFields]]
    reads_frozen_states: ClassVar[bool] = False
    reads_in_chunks: ClassVar[bool] = True
    objectives: ClassVar[tuple[str, ...]] = OBJECTIVES
    ablations: ClassVar[dict[str, Callable[[BackboneIdentity], dict[str, Any]]]] = {}

    def __init__(self, config: ConfigFields, identity: BackboneIdentity):
        super().__init__()
        self.config = config
        self.identity = identity

    @classmethod
    def for_backbone(cls, backbone: Backbone, config: ConfigFields | None = None) -> "ContextEncoder":
        """A freshly initialised encoder for `backbone` (default config if None), on its device."""
        raise NotImplementedError

    def forward(self, batch: ContextBatch) -> SoftPrefixBatch | KVPrefixBatch:
        """The differentiable prefix of every context in the batch."""
        raise NotImplementedError

    # ------------------------------------------------------------------ training knobs
    @classmethod
    def check_ablation(cls, ablation: str | None) -> None:
        if ablation is not None and ablation not in cls.ablations:
            known = f"its ablations: {', '.join(cls.ablations)}" if cls.ablations else "it has none"
            raise ConfigError(f"method {cls.method!r} has no ablation {ablation!r} ({known})")

    @classmethod
    def build_config(
        cls, fields: dict[str, Any], identity: BackboneIdentity, ablation: str | None = None
    ) -> ConfigFields:
        """The config from user fields plus a named ablation's fields (which must not contradict them)."""
        cls.check_ablation(ablation)
        if ablation is not None:
            changes = cls.ablations[ablation](identity)
            clash = sorted(k for k, v in changes.items() if k in fields and fields[k] != v)
            if clash:
                raise ConfigError(f"--ablation {ablation} sets {clash}, which the method config sets differently")
            fields = {**fields, **changes}
        return cls.config_class.from_dict(fields)

    @classmethod
    def check_objectives(cls, weights: dict[str, float]) -> None:
        """Refuse a training objective (with a positive weight) that this method cannot use."""
        refused = [name for name, weight in weights.items() if weight > 0 and name not in cls.objectives]
        if refused:
            raise ConfigError(
                f"method {cls.method!r} does not support the {'/'.join(refused)} objective "
                f"(it supports {', '.join(cls.objectives)}): set {refused[0]}_weight to 0"
            )

    def enable_gradient_checkpointing(self) -> None:
        """Recompute the trainable encoder pass in the backward pass instead of keeping its activations."""
        raise ConfigError(f"method {self.method!r} runs no trainable pass through the LLM: gradient checkpointing does not apply")

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @property
    def max_context_tokens(self) -> int | None:
        """The longest context it can encode (None: no limit)."""
        return None

    # ------------------------------------------------------------------ save / load
    def save_pretrained(self, directory: str | Path) -> Path:
        """The trained tensors and a JSON config (method, config, backbone identity, parameter count)."""
        meta = {"method": self.method, "config": self.config.to_dict(), "backbone": self.identity.to_dict(),
                "parameters": self.parameter_count()}
        return save_folder(directory, self, meta)

    @classmethod
    def from_pretrained(cls, directory: str | Path, backbone: Backbone, added: dict | None = None) -> "ContextEncoder":
        """Load a folder written by `save_pretrained`, refusing another method's or another backbone's.

        added: config fields to turn on over the trained weights (`ConfigFields.with_additions`:
            only a config's `additive_fields`, none here; ComprExIT overrides this).
        """
        meta, _ = read_folder_config(directory, cls.method, backbone)
        config = cls.config_class.from_dict(meta["config"])
        encoder = cls.for_backbone(backbone, config.with_additions(added) if added else config)
        load_state_into(encoder, directory)
        return encoder


_ENCODERS: dict[str, type[ContextEncoder]] = {}


def register_encoder(name: str):
    """Class decorator: `comprexit train --method name` trains this encoder."""
    return registrar(_ENCODERS, "method", name)


def trainable_methods() -> list[str]:
    from .base import available_methods

    available_methods()  # imports the built-in methods, which registers their encoders
    return sorted(_ENCODERS)


def encoder_class(method: str) -> type[ContextEncoder]:
    """The encoder `comprexit train --method method` trains; a one-line error for untrainable or unknown names."""
    from .base import available_methods

    known = available_methods()
    if method not in known:
        raise ConfigError(f"unknown method {method!r}; known methods: {', '.join(known)}")
    if method not in _ENCODERS:
        raise ConfigError(
            f"method {method!r} has nothing to train; trainable methods: {', '.join(sorted(_ENCODERS))}"
        )
    return _ENCODERS[method]


def load_encoder(directory: str | Path, backbone: Backbone, method: str | None = None) -> ContextEncoder:
    """Load any method's weights folder; with `method`, refuse a folder of another method."""
    saved = folder_method(read_checkpoint_config(Path(directory)))
    return encoder_class(method or saved).from_pretrained(directory, backbone)


class TrainableMethod(Method):
    """The evaluation side of a trained encoder: `--weights DIR` (a `comprexit train` output) or an encoder in memory."""

    encoder_class: ClassVar[type[ContextEncoder]]

    def __init__(self, backbone: Backbone, weights: str | Path | None = None, encoder: ContextEncoder | None = None):
        super().__init__(backbone)
        if encoder is None:
            if weights is None:
                raise ConfigError(
                    f"method {self.name!r} needs --weights DIR (a folder written by `comprexit train --method {self.name}`)"
                )
            encoder = self.encoder_class.from_pretrained(weights, backbone)
        self.weights = str(weights) if weights else "in-memory"
        self.encoder = encoder.to(backbone.device).eval()
        self.chunk_tokens = CHUNK_TOKENS  # a longer context is compressed chunk by chunk (see `prepare`)

    @classmethod
    def untrained(cls, backbone: Backbone, config: ConfigFields | None = None) -> "TrainableMethod":
        """The method with freshly initialised weights (tests, smoke runs)."""
        return cls(backbone, encoder=cls.encoder_class.for_backbone(backbone, config))

    @torch.no_grad()
    def prepare(self, contexts: Sequence[Sequence[int]]) -> DecoderPrefix:
        """The prefix of each context; one longer than `chunk_tokens` is compressed chunk by chunk, as
        `Reader` and long-context training compress it (`chunks.chunk_layout`, `chunks.join_chunks`)."""
        contexts = [list(c) for c in contexts]
        if self.encoder.reads_in_chunks and any(len(c) > self.chunk_tokens for c in contexts):
            chunks, counts, index = chunk_layout(contexts, self.chunk_tokens)
            prefix = join_chunks(self.encoder(ContextBatch.of(self.backbone, chunks, self.encoder, index)), counts)
        else:
            prefix = self.encoder(ContextBatch.of(self.backbone, contexts, self.encoder))
        return DecoderPrefix(prefix.rows())

    def settings(self) -> dict[str, Any]:
        return {
            "method": self.name,
            "weights": self.weights,
            "config": self.encoder.config.to_dict(),
            "trainable_parameters": self.trainable_parameters(),
        }

    def trainable_parameters(self) -> int:
        return self.encoder.parameter_count()
