"""Trained compressors shipped inside the package, one folder per backbone and ratio."""

from __future__ import annotations

from pathlib import Path

from ..backbone import BackboneIdentity

WEIGHTS_DIR = Path(__file__).resolve().parent

# backbone name -> folder of its default (4x) compressor
SHIPPED = {"gemma-3-270m": "gemma-3-270m-4x"}


def shipped_compressor_dir(identity: BackboneIdentity) -> Path | None:
    """The shipped default compressor for this backbone, or None if there is none (yet)."""
    folder = SHIPPED.get(identity.name)
    if folder is None:
        return None
    path = WEIGHTS_DIR / folder
    return path if (path / "comprexit_config.json").is_file() else None
