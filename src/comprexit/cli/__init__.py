"""`comprexit` command line: one module per sub-command, each with `add_parser` and `run`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

from ..errors import ComprexitError
from . import ask, bench, bench_sweep, compress, data, eval, explain, info, summarize, table, train

COMMANDS = [ask, compress, explain, info, eval, table, train, summarize, bench, bench_sweep, data]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="comprexit", description="Soft context compression for frozen LLMs (ComprExIT)."
    )
    parser.add_argument("--version", action="version", version=f"comprexit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_libraries()
    try:
        return int(args.run(args) or 0)
    except ComprexitError as error:
        print(f"comprexit {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"comprexit {args.command}: interrupted", file=sys.stderr)
        return 130


def _quiet_libraries() -> None:
    """Keep library chatter (load progress bars, generation notes) out of a user's answers."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.formatwarning = lambda message, category, *args, **kwargs: f"comprexit: warning: {message}\n"
