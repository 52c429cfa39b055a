"""`comprexit compress`: compress a document once and save its slots for later questions."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .common import add_backbone_options, add_compressor_option, load_reader, read_context_file


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "compress", help="compress a document to a .ctx file", description="Compress a UTF-8 document and save its slots."
    )
    parser.add_argument("file", help="UTF-8 text file")
    parser.add_argument("-o", "--output", required=True, help="where to write the compressed document (.ctx)")
    add_compressor_option(parser)
    add_backbone_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    text = read_context_file(args.file)
    reader = load_reader(args)
    start = time.perf_counter()
    document = reader.compress(text)
    seconds = time.perf_counter() - start
    path = document.save(Path(args.output))
    print(
        f"context: {document.context_tokens} tokens -> {document.num_slots} slots ({document.ratio}x) "
        f"in {seconds:.2f} s; saved {path} ({path.stat().st_size / 1024:.0f} KiB)"
    )
    return 0
