"""`comprexit ask`: answer questions over a document, compressed (default) or in full.

stdout holds the answers only (`Q: ...` / `A: ...` lines, or one JSON object with `--json`);
the status lines ("context: 252 tokens -> 63 slots ...") and progress bars go to stderr.
Everything is checked before the model loads (questions, --max-new-tokens, --answer-rule, the
files), and the questions' lengths in tokens right after it, before any document is read.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from ..errors import InputError
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
        "ask",
        help="answer questions over a document",
        description="Compress a document (or load a compressed one) and answer each question from its slots.",
    )
    parser.add_argument("questions", nargs="+", metavar="QUESTION", help="at most 200 tokens each")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--context-file", metavar="FILE", help="UTF-8 text file holding the document ('-': standard input)")
    source.add_argument("--compressed", metavar="FILE", help="a document saved by `comprexit compress`")
    parser.add_argument(
        "--full-context", action="store_true", help="read the uncompressed context instead of slots (comparison)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=20, help="longest answer in tokens, 1 to 256 (default 20)")
    parser.add_argument("--answer-rule", default="sentence", metavar="RULE",
                        help="how a generated text is cut into the answer: sentence (default: the first sentence; "
                        "versions, decimals, URLs and abbreviations kept whole) or paper (the first '.' or newline, "
                        "as `comprexit eval` scores)")
    add_output_options(parser, "print one JSON object: the answers, timings, token and slot counts")
    add_compressor_option(parser)
    add_backbone_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..decoding import get_answer_rule
    from ..document import CompressedDocument
    from ..reader import check_max_new_tokens

    for question in args.questions:
        if not question.strip():
            raise InputError("a question is empty")
    check_max_new_tokens(args.max_new_tokens)
    get_answer_rule(args.answer_rule)
    if args.full_context and not args.context_file:
        raise InputError("--full-context needs --context-file (a compressed document has no text)")
    text = read_context_file(args.context_file) if args.context_file else None
    document = CompressedDocument.load(args.compressed) if args.compressed else None
    progress = progress_of(args)
    start = time.perf_counter()
    reader = load_reader(args)
    timings = {"load_seconds": time.perf_counter() - start, "compress_seconds": None}
    reader.prompts(args.questions, args.max_new_tokens)  # question lengths, before any work on the document
    report = {"context": {"source": args.context_file or args.compressed}}
    if args.full_context:
        ids = reader.full_context_ids(text)
        start = time.perf_counter()
        answers = reader.ask_full_context(ids, args.questions, max_new_tokens=args.max_new_tokens, progress=progress)
        timings["answer_seconds"] = time.perf_counter() - start
        report["context"].update(read="full", tokens=len(ids), slots=None, ratio=None)
        status(args, f"context: {len(ids)} tokens read in full; answered in {timings['answer_seconds']:.2f} s")
    else:
        if document is None:
            start = time.perf_counter()
            document = reader.compress(text, progress=progress)
            timings["compress_seconds"] = time.perf_counter() - start
            took = f"compressed in {timings['compress_seconds']:.2f} s"
        else:
            took = f"loaded from {args.compressed}"
        report["context"].update(read="compressed", tokens=document.context_tokens, slots=document.num_slots,
                                 ratio=document.ratio)
        status(args, f"context: {document.context_tokens} tokens -> {document.num_slots} slots "
                     f"({document.ratio}x, {took}); compressor: {reader.compressor_name}")
        start = time.perf_counter()
        answers = reader.ask(document, args.questions, max_new_tokens=args.max_new_tokens, progress=progress)
        timings["answer_seconds"] = time.perf_counter() - start
        status(args, f"answered {len(answers)} question(s) in {timings['answer_seconds']:.2f} s")
    if args.json:
        report.update(
            answers=[{"question": q, "answer": a} for q, a in zip(args.questions, answers)],
            timings={name: None if value is None else round(value, 3) for name, value in timings.items()},
            backbone=reader.backbone.identity.name, compressor=reader.compressor_name,
            answer_rule=args.answer_rule, max_new_tokens=args.max_new_tokens, device=str(reader.backbone.device),
        )
        if report["context"]["source"] == STDIN:
            report["context"]["source"] = "standard input"
        print(json.dumps(report, indent=2))
    else:
        for question, answer in zip(args.questions, answers):
            print(f"Q: {question}\nA: {answer}")
    sys.stdout.flush()
    return 0
