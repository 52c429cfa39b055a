"""Options and helpers shared by several sub-commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError

MAX_TEXT_BYTES = 64 * 1024 * 1024


def comma_names(text: str) -> list[str]:
    """`a, b,c` -> ["a", "b", "c"]: the comma-separated lists options take."""
    return [name.strip() for name in text.split(",") if name.strip()]


def add_backbone_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("backbone")
    group.add_argument(
        "--backbone",
        default=None,
        help="Hugging Face model id, local folder or .gguf file (default: the bundled Gemma-3-270M)",
    )
    group.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    group.add_argument(
        "--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
        help="backbone dtype (auto: bfloat16 on GPU, float32 on CPU)",
    )


def add_compressor_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--compressor",
        default=None,
        metavar="DIR",
        help="compressor folder (comprexit_config.json + comprexit.safetensors); default: the shipped one",
    )


def read_context_file(path: str | Path) -> str:
    """A document file (UTF-8, plain or gzip), refused before any model is loaded if it holds no text."""
    from ..data.files import read_text

    text = read_text(path, max_bytes=MAX_TEXT_BYTES)
    if not text.strip():
        raise InputError(f"the context is empty: {path} holds nothing but whitespace")
    return text


def load_reader(args: argparse.Namespace):
    from ..reader import Reader

    return Reader.load(args.compressor, args.backbone, device=args.device, dtype=args.dtype)
