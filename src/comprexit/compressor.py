"""ComprExIT: the trainable module that turns a context's hidden states into decoder slots."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from .backbone import BackboneIdentity
from .config import ComprExITConfig
from .errors import ConfigError
from .modules import DepthTransmission, Projector, ProjectorBranch, SlotScale, WidthTransmission, make_allocation
from .prompt_vectors import INIT_TEXT, text_vectors
from .saving import CONFIG_FILE, WEIGHTS_FILE, load_state_into, read_folder_config, save_folder

if TYPE_CHECKING:
    from .backbone import Backbone, EncodedContexts

__all__ = ["CONFIG_FILE", "WEIGHTS_FILE", "ComprExIT", "Diagnostics", "Slots"]


@dataclass
class Diagnostics:
    """Where each slot's content came from: the tensors the forward pass computed on its way.

    They are the very tensors the slots were made from (not a second computation), so they
    explain exactly these slots. `comprexit explain` draws them.

    states: index of each hidden state mixed, in the order of `layer_weights`' last axis
        (0 is the embedding output, l the output of layer l).
    layer_weights: (batch, tokens, states) a_t^l of depth-wise transmission; 0 on padding.
    capacity: (batch, windows, W) sender capacity rho_t; each window sums to 1 over its real tokens.
    plan: (batch, windows, W, K) float32 transport plan; token rows sum to rho, the columns of the
        window's K' non-empty slots to 1/K' (empty slots: 0). Slot k of window w is column k,
        i.e. slot w*K + k of `Slots.mask`'s axis.
    """

    states: list[int]
    layer_weights: torch.Tensor
    capacity: torch.Tensor
    plan: torch.Tensor


@dataclass
class Slots:
    """Compressor output.

    slots: (batch, slots, hidden) float32 vectors in the decoder's input-embedding space.
    mask: (batch, slots) bool, False on empty slots (fields that hold only padding).
    diagnostics: the internals behind the slots, when the forward pass was asked for them.
    """

    slots: torch.Tensor
    mask: torch.Tensor
    diagnostics: Diagnostics | None = None


class ComprExIT(nn.Module):
    """Depth-wise transmission -> width-wise transmission -> projector.

    Build one for a backbone with `ComprExIT.for_backbone(backbone, config)`; it reads the
    backbone's hidden states (`Backbone.encode`) and never touches its weights.

    With `projector_branch` the projector gains a wider residual branch (`ProjectorBranch`, output
    layer at zero) whose output is added to the projector's before any slot scaling.
    With `reader_tokens` it also holds `reader_tokens`, (P, hidden) vectors the decoder reads once
    per document before the slots. They are no part of any chunk's `Slots`: whoever hands the
    decoder a document's prefix puts them first (`ComprExITEncoder`, `Reader.compress_ids`).
    reader_init: their starting values ((P, hidden); `for_backbone` gives the embeddings of
        `prompt_vectors.INIT_TEXT`); None: zeros, for a compressor whose weights are loaded next.
    """

    def __init__(
        self,
        config: ComprExITConfig,
        identity: BackboneIdentity,
        embedding_rms: float = 1.0,
        reader_init: torch.Tensor | None = None,
    ):
        super().__init__()
        self.config = config
        self.identity = identity
        self.embedding_rms = float(embedding_rms)
        num_states = identity.num_layers + 1
        self.state_indices = list(config.layers) if config.layers is not None else list(range(num_states))
        if max(self.state_indices) >= num_states:
            raise ConfigError(
                f"layers {list(config.layers)} out of range: {identity.name} has hidden states 0..{num_states - 1}"
            )
        hidden = identity.hidden_size
        self.depth = DepthTransmission(
            hidden, len(self.state_indices), config.gate_dim, config.depth_temperature, config.normalize_layers
        )
        self.width = WidthTransmission(
            hidden,
            config.metric_dim,
            config.ratio,
            config.window,
            config.capacity_temperature,
            config.capacity_floor,
            make_allocation(config.allocation, config.sinkhorn_epsilon, config.sinkhorn_iterations),
        )
        self.projector = Projector(hidden, config.projector_init_gain, zero_output=config.embedding_skip)
        self.slot_scale = SlotScale(embedding_rms) if config.slot_scale == "embedding" else nn.Identity()
        # Off (the default), the module has no such parameter at all, so weights saved without it load as before.
        self.chunk_position = nn.Embedding(config.chunk_positions, hidden) if config.chunk_positions else None
        if self.chunk_position is not None:
            nn.init.zeros_(self.chunk_position.weight)
        # Created after every other randomly initialised module, and only when on: the other parameters
        # draw the same random numbers either way, and weights saved without it load as before.
        self.projector_branch = None
        if config.projector_branch:
            self.projector_branch = ProjectorBranch(hidden, config.projector_branch, config.projector_init_gain)
        # Created last, and only when on: the other parameters draw the same random numbers either way.
        self.reader_tokens = None
        if config.reader_tokens:
            init = torch.zeros(config.reader_tokens, hidden) if reader_init is None else reader_init.detach().cpu()
            self.reader_tokens = nn.Parameter(init.float().clone())  # (P, hidden)

    @classmethod
    def for_backbone(cls, backbone: "Backbone", config: ComprExITConfig | None = None) -> "ComprExIT":
        """A freshly initialised compressor sized for `backbone`, on its device, in float32."""
        config = config or ComprExITConfig()
        model = cls(config, backbone.identity, backbone.embedding_rms(), _reader_init(backbone, config))
        return model.to(backbone.device)

    # ------------------------------------------------------------------ forward
    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor, *, diagnostics: bool = False,
                chunk_index: torch.Tensor | None = None) -> Slots:
        """hidden_states: (batch, tokens, L+1, hidden), mask: (batch, tokens) bool -> Slots.

        chunk_index: (batch,) long, which chunk of its document each row is (None: every row is
            a first chunk); read only with `chunk_positions`.
        With `diagnostics`, the returned Slots also carry the layer weights, sender capacities
        and transport plans computed on the way; the slots are the same bits either way.
        """
        # hidden state 0 is what the decoder reads as input embeddings (Gemma: already scaled by sqrt(H))
        token_embeddings = hidden_states[:, :, 0] if self.config.embedding_skip else None
        if self.state_indices != list(range(hidden_states.shape[2])):
            hidden_states = hidden_states[:, :, self.state_indices]
        if not _autocast_on(hidden_states.device):
            hidden_states = hidden_states.to(self.projector.net[0].weight.dtype)
        anchors, layer_weights = self.depth(hidden_states, mask)
        width = self.width(anchors, mask, passengers=token_embeddings)
        slots = self.projector(width.slots)  # (batch, slots, hidden)
        if self.projector_branch is not None:  # exactly zero until trained: the slots keep their bits
            slots = slots + self.projector_branch(width.slots)
        if width.carried is not None:
            slots = slots + width.carried
        slots = self.slot_scale(slots)
        if self.chunk_position is not None:
            slots = slots + self._chunk_signal(chunk_index, slots)
        slots = slots * width.slot_mask.unsqueeze(-1)
        if not diagnostics:
            return Slots(slots=slots, mask=width.slot_mask)
        found = Diagnostics(list(self.state_indices), layer_weights, width.capacity, width.plan)
        return Slots(slots=slots, mask=width.slot_mask, diagnostics=found)

    def _chunk_signal(self, chunk_index: torch.Tensor | None, slots: torch.Tensor) -> torch.Tensor:
        """(batch, 1, hidden): the learned vector of each row's chunk index, the last one for later chunks."""
        if chunk_index is None:
            chunk_index = torch.zeros(slots.shape[0], dtype=torch.long)
        index = chunk_index.to(slots.device).clamp(max=self.config.chunk_positions - 1)
        return self.chunk_position(index)[:, None, :].to(slots.dtype)

    def compress(self, encoded: "EncodedContexts", *, diagnostics: bool = False,
                 chunk_index: torch.Tensor | None = None) -> Slots:
        return self(encoded.hidden_states, encoded.mask, diagnostics=diagnostics, chunk_index=chunk_index)

    def num_slots(self, tokens: int) -> int:
        """Non-empty slots for a context of `tokens` tokens: ceil(T / r) when r divides W."""
        full, rest = divmod(tokens, self.config.window)
        return full * self.config.slots_per_window + math.ceil(rest / self.config.ratio)

    # ------------------------------------------------------------------ parameters
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # ------------------------------------------------------------------ save / load
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write `comprexit.safetensors` and `comprexit_config.json` (written to temp names, then renamed)."""
        meta = {
            "method": "comprexit",
            "config": self.config.to_dict(),
            "backbone": self.identity.to_dict(),
            "embedding_rms": self.embedding_rms,
            "parameters": self.parameter_count(),
        }
        return save_folder(directory, self, meta)

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        backbone: "Backbone | BackboneIdentity | None" = None,
        device: str | torch.device | None = None,
        added: dict | None = None,
    ) -> "ComprExIT":
        """Load a saved compressor; with `backbone`, refuse one trained on a different backbone.

        added: additive config fields (`ComprExITConfig.additive_fields`, e.g. {"reader_tokens": 32},
            {"projector_branch": 2048})
            to turn on over the trained weights: every saved tensor loads unchanged, and the
            parameters they create start as `for_backbone` starts them (reader tokens need a `Backbone`).
        """
        meta, saved = read_folder_config(directory, "comprexit", backbone)
        trained = ComprExITConfig.from_dict(meta["config"])
        config = trained.with_additions(added) if added else trained
        if device is None and backbone is not None and not isinstance(backbone, BackboneIdentity):
            device = backbone.device
        reader_init = None
        if config.reader_tokens != trained.reader_tokens:
            if backbone is None or isinstance(backbone, BackboneIdentity):
                raise ConfigError("adding reader tokens to trained weights needs the backbone (its embeddings start them)")
            reader_init = _reader_init(backbone, config)
        model = cls(config, saved, meta.get("embedding_rms", 1.0), reader_init)
        fresh = set()
        if added:  # the parameters the additions create: not in the folder, kept as they start
            with torch.device("meta"):  # the trained config's tensor names, drawing no random numbers
                fresh = set(model.state_dict()) - set(cls(trained, saved).state_dict())
        load_state_into(model, directory, fresh=fresh)
        return model.to(device) if device is not None else model


def _reader_init(backbone: "Backbone", config: ComprExITConfig) -> torch.Tensor | None:
    """(reader_tokens, hidden): the reader tokens' start, as prompt tuning starts its tokens; None without them."""
    return text_vectors(backbone, INIT_TEXT, config.reader_tokens) if config.reader_tokens else None


def _autocast_on(device: torch.device) -> bool:
    return torch.is_autocast_enabled(device.type)
