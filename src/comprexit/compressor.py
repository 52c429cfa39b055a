"""ComprExIT: the trainable module that turns a context's hidden states into decoder slots."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from . import __version__
from .backbone import BackboneIdentity
from .config import ComprExITConfig
from .errors import CheckpointError, ConfigError
from .modules import DepthTransmission, Projector, SlotScale, WidthTransmission, make_allocation

if TYPE_CHECKING:
    from .backbone import Backbone, EncodedContexts

CONFIG_FILE = "comprexit_config.json"
WEIGHTS_FILE = "comprexit.safetensors"


@dataclass
class Slots:
    """Compressor output.

    slots: (batch, slots, hidden) float32 vectors in the decoder's input-embedding space.
    mask: (batch, slots) bool, False on empty slots (fields that hold only padding).
    """

    slots: torch.Tensor
    mask: torch.Tensor


class ComprExIT(nn.Module):
    """Depth-wise transmission -> width-wise transmission -> projector.

    Build one for a backbone with `ComprExIT.for_backbone(backbone, config)`; it reads the
    backbone's hidden states (`Backbone.encode`) and never touches its weights.
    """

    def __init__(
        self,
        config: ComprExITConfig,
        identity: BackboneIdentity,
        embedding_rms: float = 1.0,
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

    @classmethod
    def for_backbone(cls, backbone: "Backbone", config: ComprExITConfig | None = None) -> "ComprExIT":
        """A freshly initialised compressor sized for `backbone`, on its device, in float32."""
        config = config or ComprExITConfig()
        return cls(config, backbone.identity, backbone.embedding_rms()).to(backbone.device)

    # ------------------------------------------------------------------ forward
    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor) -> Slots:
        """hidden_states: (batch, tokens, L+1, hidden), mask: (batch, tokens) bool -> Slots."""
        # hidden state 0 is what the decoder reads as input embeddings (Gemma: already scaled by sqrt(H))
        token_embeddings = hidden_states[:, :, 0] if self.config.embedding_skip else None
        if self.state_indices != list(range(hidden_states.shape[2])):
            hidden_states = hidden_states[:, :, self.state_indices]
        if not _autocast_on(hidden_states.device):
            hidden_states = hidden_states.to(self.projector.net[0].weight.dtype)
        anchors, _ = self.depth(hidden_states, mask)
        slots, slot_mask, _, pooled_embeddings = self.width(anchors, mask, passengers=token_embeddings)
        slots = self.projector(slots)
        if pooled_embeddings is not None:
            slots = slots + pooled_embeddings
        slots = self.slot_scale(slots) * slot_mask.unsqueeze(-1)
        return Slots(slots=slots, mask=slot_mask)

    def compress(self, encoded: "EncodedContexts") -> Slots:
        return self(encoded.hidden_states, encoded.mask)

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
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "library": "comprexit",
            "version": __version__,
            "method": "comprexit",
            "config": self.config.to_dict(),
            "backbone": self.identity.to_dict(),
            "embedding_rms": self.embedding_rms,
            "parameters": self.parameter_count(),
        }
        weights = {k: v.detach().float().contiguous().cpu() for k, v in self.state_dict().items()}
        tmp_weights, tmp_config = directory / (WEIGHTS_FILE + ".tmp"), directory / (CONFIG_FILE + ".tmp")
        save_file(weights, tmp_weights, metadata={"format": "pt", "comprexit_version": __version__})
        tmp_config.write_text(json.dumps(meta, indent=2) + "\n")
        tmp_weights.replace(directory / WEIGHTS_FILE)
        tmp_config.replace(directory / CONFIG_FILE)
        return directory

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        backbone: "Backbone | BackboneIdentity | None" = None,
        device: str | torch.device | None = None,
    ) -> "ComprExIT":
        """Load a saved compressor; with `backbone`, refuse one trained on a different backbone."""
        directory = Path(directory)
        meta = read_checkpoint_config(directory)
        config = ComprExITConfig.from_dict(meta["config"])
        saved = BackboneIdentity.from_dict(meta["backbone"])
        if backbone is not None:
            current = backbone if isinstance(backbone, BackboneIdentity) else backbone.identity
            problems = saved.mismatch(current)
            if problems:
                raise CheckpointError(
                    f"compressor in {directory} was trained for backbone {saved.describe()}, "
                    f"not for {current.describe()} ({'; '.join(problems)})"
                )
            if device is None and not isinstance(backbone, BackboneIdentity):
                device = backbone.device
        model = cls(config, saved, meta.get("embedding_rms", 1.0))
        state = read_weights(directory / WEIGHTS_FILE)
        missing, unexpected = set(model.state_dict()) - set(state), set(state) - set(model.state_dict())
        if missing or unexpected:
            raise CheckpointError(
                f"weights in {directory} do not fit the config: missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]}"
            )
        for name, tensor in model.state_dict().items():
            if state[name].shape != tensor.shape:
                raise CheckpointError(
                    f"weight {name} in {directory} has shape {tuple(state[name].shape)}, expected {tuple(tensor.shape)}"
                )
            if not torch.isfinite(state[name]).all():
                raise CheckpointError(f"weight {name} in {directory} holds NaN or infinite values")
        model.load_state_dict(state)
        return model.to(device) if device is not None else model


def read_checkpoint_config(directory: Path) -> dict:
    path = Path(directory) / CONFIG_FILE
    if not Path(directory).is_dir():
        raise CheckpointError(f"compressor folder not found: {directory}")
    if not path.is_file():
        raise CheckpointError(f"no {CONFIG_FILE} in {directory}: not a comprexit compressor folder")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(meta, dict) or "config" not in meta or "backbone" not in meta:
        raise CheckpointError(f"{path} lacks the 'config' or 'backbone' entry")
    return meta


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"weights file {path} is corrupt or unreadable: {error}") from error


def _autocast_on(device: torch.device) -> bool:
    return torch.is_autocast_enabled(device.type)
