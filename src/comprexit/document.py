"""A compressed document: slots you compute once and ask many questions over, savable to a file."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors import safe_open

from . import __version__
from .backbone import BackboneIdentity
from .errors import CheckpointError, InputError
from .outputs import check_writable, write_safetensors

FORMAT = "comprexit-document-1"


@dataclass(repr=False)
class CompressedDocument:
    """Slots of one document and where they came from.

    slots: (slots, hidden) vectors in the backbone's input-embedding space.
    mask: (slots,) bool; False on empty slots (they are never read).
    reader_tokens: (P, hidden) the compressor's reader tokens, read once before the slots, or None
        (a compressor without them, and every document saved before they existed). Kept with
        the slots they were trained with, so the document answers alike under any reader.
    """

    slots: torch.Tensor
    mask: torch.Tensor
    backbone: BackboneIdentity
    context_tokens: int
    ratio: int
    compressor: str = ""
    chunk_tokens: int = 0
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    reader_tokens: torch.Tensor | None = None
    # (key, cache): the decoder's key/value cache over [BOS] + slots, kept in memory (never saved)
    # so that every later question only prefills itself; set by `Reader.slot_cache`, keyed by the
    # decoder that prefilled it (and the device and dtype), since only that decoder can read it
    decoder_cache: object = field(default=None, repr=False, compare=False)

    @property
    def num_slots(self) -> int:
        return int(self.mask.sum())

    def __repr__(self) -> str:
        """What a person wants to see of it (never its tensors): `CompressedDocument(252 tokens -> 63 slots,
        4x, backbone gemma-3-270m, compressor shipped)`."""
        compressor = f", compressor {self.compressor}" if self.compressor else ""
        return (f"CompressedDocument({self.context_tokens:,} tokens -> {self.num_slots:,} slots, {self.ratio}x, "
                f"backbone {self.backbone.name}{compressor})")

    @property
    def prefix_positions(self) -> int:
        """Vectors the decoder reads before the question: the reader tokens and the non-empty slots."""
        return self.num_slots + (0 if self.reader_tokens is None else len(self.reader_tokens))

    def prefix(self) -> torch.Tensor:
        """The (reader tokens + non-empty slots, hidden) vectors the decoder reads."""
        slots = self.slots[self.mask]
        return slots if self.reader_tokens is None else torch.cat([self.reader_tokens.to(slots), slots])

    def metadata(self) -> dict:
        return {
            "format": FORMAT,
            "comprexit_version": __version__,
            "backbone": self.backbone.to_dict(),
            "context_tokens": self.context_tokens,
            "ratio": self.ratio,
            "slots": self.num_slots,
            "compressor": self.compressor,
            "chunk_tokens": self.chunk_tokens,
            "created": self.created,
            "reader_tokens": 0 if self.reader_tokens is None else len(self.reader_tokens),
        }

    def save(self, path: str | Path) -> Path:
        """Write one safetensors file (slots + mask, metadata in its header) into an existing folder
        (none is created), as outputs.py writes every file: a temporary name, the umask's mode, a rename."""
        path = check_writable(path, command="save")
        tensors = {"slots": self.slots.detach().float().contiguous().cpu(), "mask": self.mask.cpu().to(torch.uint8)}
        if self.reader_tokens is not None:
            tensors["reader_tokens"] = self.reader_tokens.detach().float().contiguous().cpu()
        return write_safetensors(tensors, path, metadata={"comprexit": json.dumps(self.metadata())})

    @classmethod
    def load(cls, path: str | Path) -> "CompressedDocument":
        path = Path(path)
        if not path.is_file():
            raise InputError(f"compressed document not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = json.loads((handle.metadata() or {})["comprexit"])
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        except (SafetensorError, OSError, KeyError, json.JSONDecodeError, ValueError) as error:
            raise CheckpointError(f"{path} is not a comprexit compressed document ({error})") from error
        if meta.get("format") != FORMAT or "slots" not in tensors or "mask" not in tensors:
            raise CheckpointError(f"{path} is not a comprexit compressed document (format {meta.get('format')!r})")
        slots, mask, reader = tensors["slots"], tensors["mask"].bool(), tensors.get("reader_tokens")
        if slots.ndim != 2 or mask.shape != slots.shape[:1] or not torch.isfinite(slots).all():
            raise CheckpointError(f"{path} holds malformed or non-finite slots")
        if reader is not None and (reader.shape[1:] != slots.shape[1:] or not torch.isfinite(reader).all()):
            raise CheckpointError(f"{path} holds malformed or non-finite reader tokens")
        return cls(
            slots=slots,
            mask=mask,
            backbone=BackboneIdentity.from_dict(meta["backbone"]),
            context_tokens=int(meta["context_tokens"]),
            ratio=int(meta["ratio"]),
            compressor=str(meta.get("compressor", "")),
            chunk_tokens=int(meta.get("chunk_tokens", 0)),
            created=str(meta.get("created", "")),
            reader_tokens=reader,
        )
