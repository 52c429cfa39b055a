"""Configuration of the ComprExIT compressor: every hyperparameter of METHOD.md, validated."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator

from .errors import ConfigError
from .modules.allocation import ALLOCATION_NAMES as ALLOCATIONS

SLOT_SCALES = ("none", "embedding")


class ConfigFields:
    """Shared behaviour of the method config dataclasses: validation, dict round trip, unknown keys refused.

    A subclass is a dataclass that sets `label` and yields one message per bad field from `_problems`.
    """

    label: ClassVar[str] = "config"
    # Fields that only add parameters of their own, which start fresh, and change none of the others:
    # they may be added to trained weights (`comprexit train --init W --compressor-config ...`).
    additive_fields: ClassVar[tuple[str, ...]] = ()

    def _problems(self) -> Iterator[str]:
        return iter(())

    def _validate(self) -> None:
        problems = list(self._problems())
        if problems:
            raise ConfigError(f"invalid {self.label}: " + "; ".join(problems))

    def __post_init__(self) -> None:
        self._validate()

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        """Build from a dict, refusing unknown keys (a typo must not silently fall back to a default)."""
        if not isinstance(values, dict):
            raise ConfigError(f"a {cls.label} must be a JSON object, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown {cls.label} field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**values)

    def with_additions(self, added: dict[str, Any]) -> "ConfigFields":
        """This (trained) config with additive fields set; any other field, or an additive one the
        weights already have on at another value (its parameters would change shape), is refused."""
        refused = sorted(set(added) - set(self.additive_fields))
        if refused:
            allowed = ", ".join(self.additive_fields) or "none"
            raise ConfigError(f"trained weights keep their {self.label}: of its fields only those that add parameters "
                              f"of their own may be added ({allowed}), not {refused}")
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        changed = sorted(k for k, v in added.items() if getattr(self, k) not in (defaults[k], v))
        if changed:
            raise ConfigError("the trained weights already have "
                              + ", ".join(f"{k}={getattr(self, k)!r}" for k in changed) + "; cannot change to "
                              + ", ".join(f"{k}={added[k]!r}" for k in changed))
        return dataclasses.replace(self, **added)


@dataclass
class ComprExITConfig(ConfigFields):
    """Hyperparameters of depth-wise transmission, width-wise transmission and the projector.

    Defaults are the paper's published settings plus the per-layer RMS normalisation that
    Gemma-3's huge residual stream needs (METHOD.md, "What we measured").
    """

    ratio: int = field(default=4, metadata={"help": "compression ratio r: tokens per slot"})
    window: int = field(default=128, metadata={"help": "anchors per optimal-transport window W"})
    gate_dim: int = field(default=256, metadata={"help": "width d of the depth attention's queries/keys"})
    metric_dim: int = field(default=256, metadata={"help": "width of the matching metric phi"})
    depth_temperature: float = field(default=0.7, metadata={"help": "tau of the softmax over layers"})
    capacity_temperature: float = field(default=1.0, metadata={"help": "tau_s of the sender capacity"})
    capacity_floor: float = field(
        default=0.05, metadata={"help": "share of uniform mass mixed into the learned sender capacity"}
    )
    sinkhorn_epsilon: float = field(default=0.1, metadata={"help": "entropic regularisation eps"})
    sinkhorn_iterations: int = field(default=30, metadata={"help": "log-domain Sinkhorn iterations"})
    projector_init_gain: float = field(default=0.4, metadata={"help": "Xavier-uniform gain of the projector"})
    normalize_layers: bool = field(
        default=True,
        metadata={"help": "parameter-free RMS normalisation of every layer's hidden state before mixing"},
    )
    slot_scale: str = field(
        default="none",
        metadata={
            "help": "'none' (paper) or 'embedding': RMS-normalise each slot and scale it by a learned gain "
            "initialised to the RMS of the decoder's input embeddings"
        },
    )
    embedding_skip: bool = field(
        default=False,
        metadata={
            "help": "add to each slot the plan-weighted mean of its tokens' input embeddings, and start the "
            "projector's output layer at zero, so that an untrained compressor emits pooled token embeddings, "
            "which the frozen decoder already reads"
        },
    )
    layers: tuple[int, ...] | None = field(
        default=None,
        metadata={"help": "hidden-state indices to read (0 = embeddings); None reads all L+1 (the method)"},
    )
    allocation: str = field(
        default="transport",
        metadata={"help": "'transport' (optimal transport, the method) or 'attention' (ablation w/o allocation)"},
    )
    chunk_positions: int = field(
        default=0,
        metadata={
            "help": "learned chunk-position signal for long documents: one trainable vector per chunk index "
            "0..N-1 (later chunks take the last), added to that chunk's slots; zero-initialised, so that turning "
            "it on changes nothing before training; 0 (default) is off"
        },
    )
    reader_tokens: int = field(
        default=0,
        metadata={
            "help": "P trained vectors in the decoder's input-embedding space, read once per document between [BOS] "
            "and the slots ([BOS] + reader tokens + slots + prompt), to teach the frozen decoder how to read slots "
            "and answer, as prompt tuning does; started as prompt tuning starts its tokens; 0 (default) is off"
        },
    )
    projector_branch: int = field(
        default=0,
        metadata={
            "help": "width W of a residual branch Linear(H, W) -> GELU -> Linear(W, H) added to the projector's "
            "output (before any slot scaling), its output layer zero-initialised, so that turning it on changes "
            "nothing before training; adds 2HW + H + W parameters: W=2048 on Gemma-3-270M (H=640) adds 2.62M "
            "to the 2.14M compressor, 1.78% of the 268M backbone together; 0 (default) is off"
        },
    )

    label: ClassVar[str] = "ComprExIT config"
    additive_fields: ClassVar[tuple[str, ...]] = ("chunk_positions", "reader_tokens", "projector_branch")

    def __post_init__(self) -> None:
        if isinstance(self.layers, list):
            self.layers = tuple(self.layers)
        self._validate()

    def _problems(self):
        ints = {"ratio": 1, "window": 1, "gate_dim": 1, "metric_dim": 1, "sinkhorn_iterations": 1}
        for name, low in ints.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                yield f"{name} must be an integer >= {low}, got {value!r}"
        positives = ("depth_temperature", "capacity_temperature", "sinkhorn_epsilon", "projector_init_gain")
        for name in positives:
            value = getattr(self, name)
            if not is_number(value) or not value > 0 or value != value or value == float("inf"):
                yield f"{name} must be a finite number > 0, got {value!r}"
        if not is_number(self.capacity_floor) or not 0.0 <= self.capacity_floor <= 1.0:
            yield f"capacity_floor must be in [0, 1], got {self.capacity_floor!r}"
        if isinstance(self.ratio, int) and isinstance(self.window, int) and self.ratio > self.window:
            yield f"ratio ({self.ratio}) cannot exceed window ({self.window})"
        if not isinstance(self.normalize_layers, bool):
            yield f"normalize_layers must be true or false, got {self.normalize_layers!r}"
        if not isinstance(self.embedding_skip, bool):
            yield f"embedding_skip must be true or false, got {self.embedding_skip!r}"
        if self.slot_scale not in SLOT_SCALES:
            yield f"slot_scale must be one of {SLOT_SCALES}, got {self.slot_scale!r}"
        for name in ("chunk_positions", "reader_tokens", "projector_branch"):
            if not is_int_at_least(getattr(self, name), 0):
                yield f"{name} must be an integer >= 0, got {getattr(self, name)!r}"
        if self.allocation not in ALLOCATIONS:
            yield f"allocation must be one of {ALLOCATIONS}, got {self.allocation!r}"
        if self.layers is not None:
            if not isinstance(self.layers, tuple) or not self.layers:
                yield f"layers must be None or a non-empty list of layer indices, got {self.layers!r}"
            elif any(not isinstance(i, int) or isinstance(i, bool) or i < 0 for i in self.layers):
                yield f"layers must hold non-negative integers, got {list(self.layers)!r}"
            elif len(set(self.layers)) != len(self.layers):
                yield f"layers must not repeat an index, got {list(self.layers)!r}"

    @property
    def slots_per_window(self) -> int:
        """K = ceil(W / r)."""
        return -(-self.window // self.ratio)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_int_at_least(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low
