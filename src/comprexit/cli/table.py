"""`comprexit table`: merge results files into one comparison table (methods x datasets)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    parser = sub.add_parser("table", help="merge results files into a Markdown comparison table")
    parser.add_argument("results", nargs="+", help="results JSON files written by `comprexit eval`")
    parser.add_argument("--output", "-o", default=None, help="write the table here (default: print it)")
    parser.add_argument("--title", default="QA accuracy (EM / F1)")
    parser.add_argument("--in-domain", default="squad_eval,nq_eval", help="comma-separated dataset names")
    parser.add_argument("--ood", default="drop_ood,relext_ood", help="comma-separated dataset names")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..evaluation.report import comparison_table, load_results

    runs = [load_results(path) for path in args.results]
    table = comparison_table(
        runs, in_domain=_names(args.in_domain), out_of_domain=_names(args.ood), title=args.title
    )
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(table)
        print(f"wrote {args.output}")
    else:
        print(table, end="")
    return 0


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]
