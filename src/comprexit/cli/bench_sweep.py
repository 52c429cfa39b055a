"""`comprexit bench-sweep`: put the serving rows of several `comprexit bench` runs in one table and plot."""

from __future__ import annotations

import argparse

from .common import comma_names


def add_parser(sub) -> None:
    parser = sub.add_parser("bench-sweep", help="merge the serving rows of several bench results into one table and plot")
    parser.add_argument("results", nargs="+", help="results JSON files written by `comprexit bench`")
    parser.add_argument("--output", "-o", required=True, help="sweep JSON (.md and .png are written beside it)")
    parser.add_argument("--decode", default=None, help="keep only these decode paths, comma-separated (default: all)")
    parser.add_argument("--title", default="Serving many questions over one document: (a) full context, "
                        "(b) prefix cache, (c) compressed slots")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..bench.sweep import serving_sweep, write_sweep

    sweep = serving_sweep(args.results, comma_names(args.decode) if args.decode else None)
    for path in write_sweep(sweep, args.output, args.title):
        print(f"wrote {path}")
    return 0
