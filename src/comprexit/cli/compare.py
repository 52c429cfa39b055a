"""`comprexit compare A.json B.json`: is A better than B on the questions both answered?

A paired bootstrap over contexts (`evaluation/paired.py`) of two results files written by
`comprexit eval --predictions`. Every argument is checked before a file is read: the two files
exist, the numbers are in range, and -o is a file in an existing folder (no folder is made) that is
neither input. The table goes to stdout; with -o the JSON and its .md are written and their paths
printed after it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

MAX_RESAMPLES = 1_000_000


def add_parser(sub) -> None:
    from ..evaluation.paired import DEFAULT_RESAMPLES

    parser = sub.add_parser(
        "compare",
        help="is A better than B? a paired bootstrap over two results files' predictions",
        description="Compare two results files of `comprexit eval --predictions` question by question: F1 and EM "
        "of each, A - B with a 95% interval by a paired bootstrap that resamples contexts, per dataset and "
        "pooled over all questions.",
    )
    parser.add_argument("a", metavar="A.json", help="results file of `comprexit eval --predictions`")
    parser.add_argument("b", metavar="B.json", help="results file of the same questions")
    parser.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES,
                        help=f"bootstrap resamples, at least 100 (default {DEFAULT_RESAMPLES})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the resampling (default 0)")
    parser.add_argument("--output", "-o", default=None,
                        help="comparison JSON, in an existing folder (a .md table is written beside it)")
    parser.set_defaults(run=run)


def check_settings(args: argparse.Namespace) -> Path | None:
    """Every argument, before either file is read; returns --output."""
    from ..errors import InputError
    from ..outputs import check_writable

    for path in (Path(args.a), Path(args.b)):
        if path.is_dir():
            raise InputError(f"{path} is a folder; give a results file of `comprexit eval --predictions`")
        if not path.is_file():
            raise InputError(f"results file not found: {path}")
    if not 100 <= args.resamples <= MAX_RESAMPLES:
        raise InputError(f"--resamples must be in 100..{MAX_RESAMPLES}, got {args.resamples}")
    if args.seed < 0:
        raise InputError(f"--seed must be >= 0, got {args.seed}")
    if args.output is None:
        return None
    output = Path(args.output)
    if output.suffix.lower() == ".md":
        raise InputError(f"--output names the comparison JSON (the .md table is written beside it), got {output}")
    if any(target.resolve() == Path(path).resolve() for target in (output, output.with_suffix(".md"))
           for path in (args.a, args.b)):
        raise InputError(f"{output} would overwrite a results file compared; choose another output")
    return check_writable(output, command="compare")


def run(args: argparse.Namespace) -> int:
    from ..evaluation.paired import compare_files, comparison_markdown, write_comparison

    output = check_settings(args)
    comparison = compare_files(args.a, args.b, args.resamples, args.seed)
    print(comparison_markdown(comparison), end="")
    if output:
        print("\n".join(str(path) for path in write_comparison(comparison, output)))
    return 0
