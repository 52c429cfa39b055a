"""`comprexit` command line: one module per sub-command, each with `add_parser` and `run`.

Bad input of any kind ends with one line on stderr and exit code 2, before any work: argparse's
own errors (an unknown option, a value of the wrong type) through `OneLineParser`, the options
every command shares through `common.check_arguments`, the rest in each command's `run`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

from ..errors import ComprexitError
from . import ask, bench, bench_sweep, compare, compress, data, eval, explain, info, summarize, table, train
from .common import check_arguments

COMMANDS = [ask, compress, explain, info, eval, table, compare, train, summarize, bench, bench_sweep, data]


class OneLineParser(argparse.ArgumentParser):
    """argparse, whose usage errors are one line (the problem and where help is) instead of the usage
    block and the problem; sub-command parsers are made of the same class."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = OneLineParser(
        prog="comprexit", description="Soft context compression for frozen LLMs (ComprExIT)."
    )
    parser.add_argument("--version", action="version", version=f"comprexit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --version, a usage error: its code, returned like any other
        return stop.code if isinstance(stop.code, int) else 2
    _quiet_libraries(getattr(args, "quiet", False))
    try:
        check_arguments(args)
        return int(args.run(args) or 0)
    except ComprexitError as error:
        print(f"comprexit {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"comprexit {args.command}: interrupted", file=sys.stderr)
        return 130


def _quiet_libraries(quiet: bool) -> None:
    """Keep library chatter (generation notes, deprecation notes) out of a user's view; the bars of a
    first download or conversion stay (on stderr, on a terminal, without --quiet)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        if quiet or not sys.stderr.isatty():
            hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.formatwarning = lambda message, category, *args, **kwargs: f"comprexit: warning: {message}\n"
