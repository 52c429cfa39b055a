"""`comprexit bench`: compression cost and per-question serving cost, written to results files."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from .common import add_backbone_options, add_compressor_option, comma_names


def add_parser(sub) -> None:
    parser = sub.add_parser("bench", help="measure compression cost and serving speed and memory")
    parser.add_argument("--output", "-o", required=True, help="results JSON (.md and .png are written beside it)")
    parser.add_argument("--compress-sizes", default="512x32,2048x8,8192x2", help="TOKENSxCONTEXTS,...")
    parser.add_argument("--serve-lengths", default="512,2048,8192", help="context tokens, comma-separated")
    parser.add_argument("--batch", type=int, default=8, help="questions per batch")
    parser.add_argument("--new-tokens", default="20,128", help="generated tokens per question, comma-separated")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ask-tokens", type=int, default=2000, help="document size of the interactive-ask timing (0: skip)")
    parser.add_argument("--compile-mode", default=None, choices=["default", "reduce-overhead", "max-autotune"],
                        help="also time the compressor under torch.compile in this mode")
    parser.add_argument("--attn-implementation", default="sdpa", choices=["sdpa", "eager"])
    parser.add_argument("--decode", default=None,
                        help="serving decode paths, comma-separated: eager (dynamic cache), static (static caches, "
                             "decode step compiled by generate), graph (static caches, our own compiled prefill and "
                             "decode steps); default eager,static,graph on a GPU, eager on a CPU")
    parser.add_argument("--decode-compile-mode", default="reduce-overhead",
                        choices=["default", "reduce-overhead", "max-autotune"],
                        help="torch.compile mode of the static and graph paths")
    parser.add_argument("--decode-backend", default="inductor",
                        help="torch.compile backend of the static and graph paths ('eager' checks them quickly on a CPU)")
    parser.add_argument("--no-step-profile", action="store_true", help="skip timing single decode steps")
    parser.add_argument("--trace", action="store_true",
                        help="run torch.profiler around one warm (c) batch per decode path at the first serving length; "
                             "a summary goes into the results, Chrome traces beside them")
    add_compressor_option(parser)
    add_backbone_options(parser)
    parser.set_defaults(run=run)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def run(args: argparse.Namespace) -> int:
    from ..backbone import Backbone
    from ..bench.runner import BenchSettings, default_decode_paths, run_bench, write_bench
    from ..errors import InputError
    from ..reader import Reader, UntrainedCompressorWarning

    try:
        sizes = [tuple(int(v) for v in item.lower().split("x")) for item in args.compress_sizes.split(",")]
        settings = BenchSettings(
            compress_sizes=[(t, c) for t, c in sizes], serve_lengths=_ints(args.serve_lengths), batch=args.batch,
            new_tokens=_ints(args.new_tokens), repeats=args.repeats, ask_document_tokens=args.ask_tokens or None,
            compile_mode=args.compile_mode, decode_compile_mode=args.decode_compile_mode,
            decode_backend=args.decode_backend, step_profile=not args.no_step_profile, trace=args.trace,
        )
    except ValueError as error:
        raise InputError(f"bad size list: {error}") from error
    backbone = Backbone.load(args.backbone, device=args.device, dtype=args.dtype, attn_implementation=args.attn_implementation)
    settings.decode = comma_names(args.decode) if args.decode else default_decode_paths(backbone.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedCompressorWarning)  # speed does not depend on the weights
        reader = Reader.load(args.compressor, backbone)
    results = run_bench(reader, settings, progress=lambda line: print(line, flush=True), trace_files=Path(args.output))
    for path in write_bench(results, args.output):
        print(f"wrote {path}")
    return 0
