"""`comprexit table`: merge results files into one comparison table (methods x datasets).

-o is checked before any results file is read: a file in an existing folder (no folder is made).
The table goes to stdout, or with -o the written paths do.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import comma_names


def add_parser(sub) -> None:
    parser = sub.add_parser("table", help="merge results files into a Markdown comparison table")
    parser.add_argument("results", nargs="+", help="results JSON files written by `comprexit eval`")
    parser.add_argument("--output", "-o", default=None,
                        help="write the table here, in an existing folder (default: print it)")
    parser.add_argument("--title", default="QA accuracy (EM / F1)")
    parser.add_argument("--in-domain", default="squad_eval,nq_eval", help="comma-separated dataset names")
    parser.add_argument("--ood", default="drop_ood,relext_ood", help="comma-separated dataset names")
    parser.add_argument("--layout", default="flat", choices=["flat", "paper"],
                        help="flat: one table; paper: the paper's Tables 1, 2 and 4 (4x, ratios, ablations) "
                        "with trainable parameters and training time")
    parser.add_argument("--training", action="append", default=[], metavar="LABEL=RUN[,RUN]",
                        help="(paper layout) the training run folders, first phase first, of the rows labelled LABEL "
                        "whose eval recorded none (weights evaluated outside their run folder)")
    parser.add_argument("--relabel", action="append", default=[], metavar="OLD=NEW",
                        help="show the rows labelled OLD (the file's `label`), or the one row of the results file OLD "
                        "(as given here), as NEW")
    parser.add_argument("--costs", action="store_true",
                        help="(flat layout) add what each method's compressed form costs per document: time to "
                        "compress, decoder positions, KiB kept and KiB of decoder cache at bf16")
    parser.add_argument("--note", action="append", default=[], help="(paper layout) a line added under the tables")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..evaluation.report import comparison_table, load_results, merge_by_label
    from ..outputs import check_writable

    if args.output:
        check_writable(args.output, command="table")
    runs = [load_results(path) for path in args.results]
    _relabel(runs, args.results, args.relabel)
    runs = merge_by_label(runs)
    rows = _paper_rows(runs, args) if args.layout == "paper" else None
    if rows is not None:
        from ..evaluation.layout import paper_layout

        table = paper_layout(rows, args.title, args.note)
    else:
        table = comparison_table(
            runs, in_domain=comma_names(args.in_domain), out_of_domain=comma_names(args.ood), title=args.title,
            costs=args.costs,
        )
    if args.output:
        Path(args.output).write_text(table)
        print(args.output)
        if rows is not None:
            _paper_plot(rows, args)
    else:
        print(table, end="")
    return 0


def _relabel(runs: list[dict], paths: list[str], specs: list[str]) -> None:
    """A file's own name picks one row where several files share a label (e.g. one method at 4x, 8x, 16x)."""
    from ..errors import InputError
    from ..evaluation.report import run_label

    for spec in specs:
        old, _, new = spec.partition("=")
        matching = [r for r, path in zip(runs, paths, strict=True) if old in (path, run_label(r))]
        if not new or not matching:
            raise InputError(f"--relabel wants OLD=NEW with OLD a row's label or a results file given, got {spec!r}")
        for run in matching:
            run["label"] = new


def _paper_rows(runs: list[dict], args: argparse.Namespace) -> list:
    """Each results file as a row of the paper layout, with the training runs named by --training."""
    from ..errors import InputError
    from ..evaluation.layout import describe
    from ..evaluation.report import run_label
    from ..training.summary import phase_record

    training: dict[str, list[dict]] = {}
    for spec in args.training:
        label, _, folders = spec.rpartition("=")
        if not label or not folders:
            raise InputError(f"--training wants LABEL=RUN[,RUN], got {spec!r}")
        if label not in {run_label(r) for r in runs}:
            raise InputError(f"--training names {label!r}, which is no row's label")
        training[label] = [phase_record(folder) for folder in folders.split(",")]
    return [describe(r, training.get(run_label(r))) for r in runs]


def _paper_plot(rows: list, args: argparse.Namespace) -> None:
    """The tables' rows as bars beside the table (X.md -> X.png), where matplotlib is installed."""
    from ..evaluation.layout import paper_sections, plot_layout

    path = plot_layout(paper_sections(rows), Path(args.output).with_suffix(".png"), args.title)
    if path is not None:
        print(path)
