"""One interface for every way of letting the decoder see a context, and a registry of them.

A method turns a batch of (already truncated) contexts into what the frozen decoder reads
before the prompt. Zero-shot with or without context, ComprExIT and the trained baselines
all go through the same prompt, decoding and scoring, so their numbers are comparable.

Adding a method: a module in this package with a `Method` subclass decorated by
`@register_method("name")` (a trainable one also registers its `ContextEncoder`, see
`trainable.py`), an import in `_import_builtin_methods`, a row in the shared test matrix
(tests/test_methods.py), a row in the README.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Sequence

from ..backbone import Backbone
from ..errors import ConfigError
from ..prefix import Prefix


@dataclass
class DecoderPrefix:
    """What the decoder reads before the prompt: one `Prefix` per context, all of one kind.

    rows: `SoftPrefix`es (input-embedding vectors read between `[BOS]` and the prompt: soft
        prompts, slots and kept tokens; an empty one for nothing, the no-context bound) or
        `KVPrefix`es (keys and values the decoder attends to before `[BOS] + prompt`, 500x).
    """

    rows: list[Prefix]

    def __len__(self) -> int:
        return len(self.rows)

    def positions(self) -> list[int]:
        return [len(row) for row in self.rows]


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


def registrar(registry: dict, attribute: str, name: str):
    """A class decorator storing the class in `registry` under `name` and setting `cls.<attribute> = name`."""

    def decorate(cls):
        if name in registry:
            raise ValueError(f"{attribute} {name!r} is registered twice")
        setattr(cls, attribute, name)
        registry[name] = cls
        return cls

    return decorate


def register_method(name: str):
    """Class decorator adding a method to the registry under `name`."""
    return registrar(_REGISTRY, "name", name)


def available_methods() -> list[str]:
    _import_builtin_methods()
    return sorted(_REGISTRY)


def check_method_options(name: str, options: Sequence[str]) -> type[Method]:
    """The class of a registered method that takes every option named; unknown names list the known ones.
    Needs no backbone, so a command can refuse a wrong method or option before one loads."""
    _import_builtin_methods()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown method {name!r}; known methods: {', '.join(sorted(_REGISTRY))}")
    cls = _REGISTRY[name]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "backbone"}
    refused = sorted(set(options) - accepted)
    if refused:
        raise ConfigError(
            f"method {name!r} takes no {', '.join(refused)} option"
            + (f" (it takes: {', '.join(sorted(accepted))})" if accepted else "")
        )
    return cls


def create_method(name: str, backbone: Backbone, **options: Any) -> Method:
    """Instantiate a registered method; unknown names list the known ones."""
    return check_method_options(name, list(options))(backbone, **options)


def _import_builtin_methods() -> None:
    # registration happens on import
    from . import (  # noqa: F401
        beacon,
        comprexit,
        compressor_500x,
        icae,
        llmlingua,
        mean_pool,
        prompt_tuning,
        truncation,
        zero_shot,
    )
