"""Options and helpers shared by several sub-commands.

What every command shares: answers and results on stdout, everything else (status lines,
progress bars, warnings, errors) on stderr, so that `comprexit ask ... > answers.txt` or
`--json | jq` take the answers alone; `--quiet` leaves stderr to errors; arguments are all
checked before a model loads (`check_arguments`, called for every command by `main`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InputError

MAX_TEXT_BYTES = 64 * 1024 * 1024
STDIN = "-"  # a document file named "-" is read from standard input


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


def add_output_options(parser: argparse.ArgumentParser, json_help: str) -> None:
    parser.add_argument("--json", action="store_true", help=json_help)
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="no status lines or progress bars on stderr (errors are still printed)")


def check_arguments(args: argparse.Namespace) -> None:
    """What can be checked of any command's arguments before it starts: the device exists (`--device
    tpu`, `--device CPU` are refused) and the compressor folder, if given, holds a readable ComprExIT
    config (its backbone is checked when it loads)."""
    if getattr(args, "device", None) is not None:
        from ..backbone import resolve_device

        resolve_device(args.device)
    if getattr(args, "compressor", None) is not None:
        from ..saving import read_folder_config

        read_folder_config(args.compressor, "comprexit")


def read_context_file(path: str | Path) -> str:
    """A document (UTF-8, plain or gzip; "-": standard input), refused before any model is loaded if
    it holds no text."""
    if str(path) == STDIN:
        text, where = read_stdin(), "standard input"
    else:
        from ..data.files import read_text

        text, where = read_text(path, max_bytes=MAX_TEXT_BYTES), str(path)
    if not text.strip():
        raise InputError(f"the context is empty: {where} holds nothing but whitespace")
    return text


def read_stdin() -> str:
    """Standard input's whole text (UTF-8, at most MAX_TEXT_BYTES)."""
    if sys.stdin is None:
        raise InputError("there is no standard input to read the document from")
    if sys.stdin.isatty():
        print("comprexit: reading the document from standard input (end it with Ctrl-D)", file=sys.stderr)
    stream = getattr(sys.stdin, "buffer", None)
    raw = stream.read(MAX_TEXT_BYTES + 1) if stream is not None else sys.stdin.read(MAX_TEXT_BYTES + 1).encode()
    if len(raw) > MAX_TEXT_BYTES:
        raise InputError(f"standard input holds more than {MAX_TEXT_BYTES // 2**20} MiB")
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        raise InputError(f"standard input: not UTF-8 text (bad byte at offset {error.start})") from error


def status(args: argparse.Namespace, line: str) -> None:
    """A status line for people: on stderr, never among the answers, and not with --quiet."""
    if not getattr(args, "quiet", False):
        print(line, file=sys.stderr, flush=True)


def progress_of(args: argparse.Namespace):
    """Progress bars on stderr, when it is a terminal and --quiet is off (progress.py)."""
    from ..progress import stderr_progress

    return stderr_progress(getattr(args, "quiet", False))


def load_reader(args: argparse.Namespace):
    from ..reader import Reader

    options = {"answer_rule": args.answer_rule} if getattr(args, "answer_rule", None) else {}
    return Reader.load(args.compressor, args.backbone, device=args.device, dtype=args.dtype, **options)
