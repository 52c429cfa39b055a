"""`comprexit summarize`: one results file (JSON + Markdown) over several training runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub) -> None:
    parser = sub.add_parser("summarize", help="summarise training runs into a results table")
    parser.add_argument("runs", nargs="+", help="run folders written by `comprexit train`")
    parser.add_argument("--output", "-o", required=True, help="results JSON (a .md is written beside it)")
    parser.add_argument("--title", default="Training runs")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..evaluation.report import environment
    from ..training.summary import summarize_run, summary_markdown

    runs = [summarize_run(path) for path in args.runs]
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    env = environment("cuda" if _cuda() else None)
    output.write_text(json.dumps({"title": args.title, "environment": env, "runs": runs}, indent=2) + "\n")
    markdown = summary_markdown(runs, args.title) + f"\nDevice {env['device']}, commit {env['commit']}, {env['date']}.\n"
    output.with_suffix(".md").write_text(markdown)
    print(markdown, end="")
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
