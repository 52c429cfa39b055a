"""`comprexit compress`: compress a document once and save its slots for later questions.

The output is checked before the model loads: it must not be a folder or the input, and its
folder must exist and be writable (compress creates no folders). stdout gets the written path
(or, with `--json`, one JSON object); the status line and the progress bar go to stderr.
"""

from __future__ import annotations

import argparse
import json
import time

from ..outputs import check_writable
from .common import (
    STDIN,
    add_backbone_options,
    add_compressor_option,
    add_output_options,
    load_reader,
    progress_of,
    read_context_file,
    status,
)


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "compress", help="compress a document to a .ctx file", description="Compress a UTF-8 document and save its slots."
    )
    parser.add_argument("file", help="UTF-8 text file ('-': standard input)")
    parser.add_argument("-o", "--output", required=True,
                        help="where to write the compressed document (.ctx), in an existing folder")
    add_output_options(parser, "print one JSON object: the written file, timings, token and slot counts")
    add_compressor_option(parser)
    add_backbone_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    output = check_writable(args.output, None if args.file == STDIN else args.file, "compress")
    text = read_context_file(args.file)
    start = time.perf_counter()
    reader = load_reader(args)
    loaded = time.perf_counter() - start
    start = time.perf_counter()
    document = reader.compress(text, progress=progress_of(args))
    seconds = time.perf_counter() - start
    path = document.save(output)
    size = path.stat().st_size
    status(args, f"context: {document.context_tokens} tokens -> {document.num_slots} slots ({document.ratio}x) "
                 f"in {seconds:.2f} s; saved {path} ({size / 1024:.0f} KiB)")
    if args.json:
        print(json.dumps({
            "output": str(path), "bytes": size,
            "context": {"source": "standard input" if args.file == STDIN else args.file,
                        "tokens": document.context_tokens, "slots": document.num_slots, "ratio": document.ratio},
            "timings": {"load_seconds": round(loaded, 3), "compress_seconds": round(seconds, 3)},
            "backbone": reader.backbone.identity.name, "compressor": reader.compressor_name,
            "device": str(reader.backbone.device),
        }, indent=2))
    else:
        print(path)
    return 0
