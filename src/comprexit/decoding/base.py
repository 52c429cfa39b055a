"""The `Decoder` protocol: greedy answers of the frozen model, from a fresh batch or from a prefilled prefix.

A decoder is a strategy for running the same greedy decoding: `EagerDecoder` (transformers'
generate over a dynamic cache, the fastest on a CPU), `StaticDecoder` (generate over
preallocated static caches, its decode step compiled on a GPU) and `GraphDecoder` (static
caches and a compiled loop of our own). All give the same tokens (tests/test_static_decoding.py).
Each implements four things: `prefill` a prefix once; decode a fresh left-padded batch
(`_generate`); decode prompts read after a prefilled prefix (`_generate_after`); one decode
step for timing (`stepper`). The rest is shared here: batching, stop tokens, text.

Prompts after a prefilled prefix are batched with their padding between the cached prefix and
the prompts. Positions stay contiguous, but a sliding-window layer (Gemma-3: 512 positions) also
counts those pad slots once a sequence outgrows its window, so its window holds a few real
tokens fewer. With `exact=True` (the default) prompts are then batched by length, so that no
padding is needed and the answers equal those of the left-padded path; `exact=False` batches
them all, as a throughput-minded server would.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from ..assembly import LEFT, DecoderInputs, Tokens, Vectors, assemble
from ..errors import ConfigError
from .answers import cut_at_stop, default_stops
from .cache import PrefixCache
from .prefill import PREFILL_CHUNK, Advance

if TYPE_CHECKING:
    from ..backbone import Backbone
    from ..prefix import Prefix


class Decoder(ABC):
    """Greedy decoding of a frozen backbone.

    stops: the token ids that end a row (default: the model's end-of-sequence ids); empty to
        decode exactly `max_new_tokens` per row (what the serving benchmark times).
    prefill_chunk: positions of a prefix read per forward pass (prefill.py: memory linear in the
        prefix's length); None reads a prefix in one pass.
    """

    def __init__(self, backbone: "Backbone", stops: Sequence[int] | None = None,
                 prefill_chunk: int | None = PREFILL_CHUNK):
        if prefill_chunk is not None and prefill_chunk < 1:
            raise ConfigError(f"prefill_chunk must be >= 1 or None, got {prefill_chunk}")
        self.backbone = backbone
        self.stops = default_stops(backbone) if stops is None else tuple(int(s) for s in stops)
        self.prefill_chunk = prefill_chunk

    # ------------------------------------------------------------------ what a strategy implements
    @abstractmethod
    def _prefill(self, inputs: DecoderInputs, advance: Advance | None) -> object:
        """The cache over one row, `[BOS] + prefix` (batch 1, no padding), as this decoder reads it,
        read `prefill_chunk` positions at a time (`advance` is told of each chunk)."""

    @abstractmethod
    def _generate(self, inputs: DecoderInputs, max_new_tokens: int) -> torch.Tensor:
        """(rows, <= max_new_tokens) greedy tokens after left-padded `inputs`, decoded from no cache."""

    @abstractmethod
    def _generate_after(self, cache: PrefixCache, inputs: DecoderInputs, max_new_tokens: int) -> torch.Tensor:
        """(rows, <= max_new_tokens) greedy tokens after left-padded `inputs` read after `cache`, which
        is left as it was."""

    @abstractmethod
    def stepper(self, cache: PrefixCache, rows: int, steps: int) -> Callable[[], None]:
        """A callable running one decode step of `rows` rows after the prefix (pad tokens read,
        every slot real), with room for `steps` calls: how `comprexit bench` times a step."""

    def describe(self) -> dict:
        """What identifies this decoder in a results file (a strategy adds its own fields)."""
        return {"prefill_chunk": self.prefill_chunk}

    # ------------------------------------------------------------------ shared
    @torch.no_grad()
    def prefill(self, prefix: torch.Tensor, advance: Advance | None = None) -> PrefixCache:
        """Read `[BOS] + prefix` once; prefix: (positions, hidden) input-embedding vectors.

        advance: told how many positions each pass read (a progress bar's `update`).
        """
        backbone = self.backbone
        inputs = assemble(backbone, Tokens([backbone.bos_ids]), Vectors(prefix[None], [len(prefix)]))
        return PrefixCache(self._prefill(inputs, advance), inputs.attention_mask, inputs.width, self)

    @torch.no_grad()
    def generate(self, inputs: DecoderInputs, max_new_tokens: int) -> list[list[int]]:
        """Greedy tokens after each left-padded row, each cut before its first stop token."""
        return self._cut(self._generate(inputs, max_new_tokens))

    @torch.no_grad()
    def answers(self, prefixes: Sequence["Prefix"], prompts: Sequence[Sequence[int]], max_new_tokens: int = 20) -> list[str]:
        """Raw greedy text (no answer rule applied) of each prompt read after its prefix.

        prefixes: one per prompt, all of one kind, which lays the batch out (prefix.py).
        """
        kind = type(prefixes[0])
        if any(type(prefix) is not kind for prefix in prefixes):
            raise TypeError(f"a batch mixes prefix kinds: {sorted({type(p).__name__ for p in prefixes})}")
        return kind.answers(self, prefixes, prompts, max_new_tokens)

    @torch.no_grad()
    def cached_answers(
        self, cache: PrefixCache, prompts: Sequence[Sequence[int]], max_new_tokens: int = 20, exact: bool = True
    ) -> list[str]:
        """Raw greedy text of each prompt read after the prefilled `cache`, which is left untouched."""
        if cache.decoder is not self:
            raise ConfigError("this prefix cache was prefilled by another decoder; prefill it with this one")
        window = getattr(self.backbone.config, "sliding_window", None)
        longest = cache.length + max(len(p) for p in prompts) + max_new_tokens
        if exact and window and longest > window and len({len(p) for p in prompts}) > 1:
            answers: dict[int, str] = {}
            for length in sorted({len(p) for p in prompts}):
                rows = [i for i, p in enumerate(prompts) if len(p) == length]
                answers.update(zip(rows, self.cached_answers(cache, [prompts[i] for i in rows], max_new_tokens)))
            return [answers[i] for i in range(len(prompts))]
        inputs = assemble(self.backbone, Tokens(prompts), side=LEFT, start=cache.start)
        return self.texts(self._cut(self._generate_after(cache, inputs, max_new_tokens)))

    def texts(self, tokens: Sequence[Sequence[int]]) -> list[str]:
        return [self.backbone.decode(row) for row in tokens]

    def _cut(self, tokens: torch.Tensor) -> list[list[int]]:
        return [cut_at_stop(row, self.stops) for row in tokens.tolist()]
