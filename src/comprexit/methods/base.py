"""One interface for every way of letting the decoder see a context, and a registry of them.

A method turns a batch of (already truncated) contexts into what the frozen decoder reads
before the prompt. Zero-shot with or without context, ComprExIT and the trained baselines
all go through the same prompt, decoding and scoring, so their numbers are comparable.

Adding a method: a module in this package with a `Method` subclass decorated by
`@register_method("name")`, a row in the shared test matrix, a row in the README.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Sequence

import torch

from ..backbone import Backbone
from ..errors import ConfigError


@dataclass
class DecoderPrefix:
    """What the decoder reads between `[BOS]` and the prompt, one entry per context.

    embeds: per context a (positions, hidden) tensor in input-embedding space, or None for
        nothing (the no-context bound). Soft prompts, slots and kept tokens all fit here.
    """

    embeds: list[torch.Tensor | None]

    def __len__(self) -> int:
        return len(self.embeds)

    def positions(self) -> list[int]:
        return [0 if e is None else int(e.shape[0]) for e in self.embeds]


class Method(ABC):
    """Base class: subclasses implement `prepare`; trained ones also expose `trainable_parameters`."""

    name: ClassVar[str] = ""

    def __init__(self, backbone: Backbone):
        self.backbone = backbone

    @abstractmethod
    def prepare(self, contexts: Sequence[Sequence[int]]) -> DecoderPrefix:
        """Turn token-id contexts into decoder prefixes."""

    def settings(self) -> dict[str, Any]:
        """What identifies this method's run in a results file."""
        return {"method": self.name}

    def trainable_parameters(self) -> int:
        return 0


_REGISTRY: dict[str, Callable[..., Method]] = {}


def register_method(name: str):
    """Class decorator adding a method to the registry under `name`."""

    def decorate(cls):
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} is registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def available_methods() -> list[str]:
    _import_builtin_methods()
    return sorted(_REGISTRY)


def create_method(name: str, backbone: Backbone, **options: Any) -> Method:
    """Instantiate a registered method; unknown names list the known ones."""
    _import_builtin_methods()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown method {name!r}; known methods: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](backbone, **options)


def _import_builtin_methods() -> None:
    from . import comprexit, llmlingua, zero_shot  # noqa: F401  (registration happens on import)
