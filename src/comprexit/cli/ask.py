"""`comprexit ask`: answer questions over a document, compressed (default) or in full."""

from __future__ import annotations

import argparse
import time

from ..errors import InputError
from .common import add_backbone_options, add_compressor_option, load_reader, read_context_file


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "ask",
        help="answer questions over a document",
        description="Compress a document (or load a compressed one) and answer each question from its slots.",
    )
    parser.add_argument("questions", nargs="+", metavar="QUESTION")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--context-file", metavar="FILE", help="UTF-8 text file holding the document")
    source.add_argument("--compressed", metavar="FILE", help="a document saved by `comprexit compress`")
    parser.add_argument(
        "--full-context", action="store_true", help="read the uncompressed context instead of slots (comparison)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=20)
    add_compressor_option(parser)
    add_backbone_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..document import CompressedDocument

    for question in args.questions:
        if not question.strip():
            raise InputError("a question is empty")
    if args.full_context and not args.context_file:
        raise InputError("--full-context needs --context-file (a compressed document has no text)")
    text = read_context_file(args.context_file) if args.context_file else None
    document = CompressedDocument.load(args.compressed) if args.compressed else None
    reader = load_reader(args)
    if args.full_context:
        ids = reader.full_context_ids(text)
        start = time.perf_counter()
        answers = reader.ask_full_context(ids, args.questions, max_new_tokens=args.max_new_tokens)
        print(f"context: {len(ids)} tokens read in full; answered in {time.perf_counter() - start:.2f} s")
    else:
        if document is None:
            start = time.perf_counter()
            document = reader.compress(text)
            took = f"compressed in {time.perf_counter() - start:.2f} s"
        else:
            took = f"loaded from {args.compressed}"
        print(
            f"context: {document.context_tokens} tokens -> {document.num_slots} slots "
            f"({document.ratio}x, {took}); compressor: {reader.compressor_name}"
        )
        start = time.perf_counter()
        answers = reader.ask(document, args.questions, max_new_tokens=args.max_new_tokens)
        print(f"answered {len(answers)} question(s) in {time.perf_counter() - start:.2f} s")
    for question, answer in zip(args.questions, answers):
        print(f"Q: {question}\nA: {answer}")
    return 0
