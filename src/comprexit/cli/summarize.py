"""`comprexit summarize`: one results file (JSON + Markdown) over several training runs.

The outputs are checked before any run is read: --output (and the .md beside it) and --plot
must be files in existing folders (no folder is made) and differ; a folder that is not a
training run is refused in one line. The table goes to stdout.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub) -> None:
    parser = sub.add_parser("summarize", help="summarise training runs into a results table")
    parser.add_argument("runs", nargs="+", help="run folders written by `comprexit train`")
    parser.add_argument("--output", "-o", required=True,
                        help="results JSON, in an existing folder (a .md is written beside it)")
    parser.add_argument("--title", default="Training runs")
    parser.add_argument("--note", default="", help="a line added under the table (e.g. where runs without an environment record ran)")
    parser.add_argument("--plot", default=None, metavar="PNG",
                        help="also draw every run's training loss against examples seen (do runs of one recipe agree?)")
    parser.add_argument("--throughput", action="store_true",
                        help="add a throughput table: examples/s and tokens/s per run and per GPU against the first run")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..evaluation.report import environment
    from ..training.summary import summarize_run, summary_markdown, throughput_markdown

    output, plot = check_outputs(args.output, args.plot)
    runs = [summarize_run(path) for path in args.runs]
    _name_apart(runs, args.runs)
    env = environment("cuda" if _cuda() else None)
    output.write_text(
        json.dumps({"title": args.title, "note": args.note, "summarized_on": env, "runs": runs}, indent=2) + "\n"
    )
    devices = sorted({f"{r['environment']['device']} (commit {r['environment']['commit']})" for r in runs if r["environment"]})
    markdown = summary_markdown(runs, args.title)
    if args.throughput:
        markdown += "\n" + throughput_markdown(runs)
    if devices:
        markdown += "\nTrained on " + "; ".join(devices) + ".\n"
    if args.note:
        markdown += f"\n{args.note}\n"
    markdown += f"\nSummarised with commit {env['commit']} on {env['date']}.\n"
    output.with_suffix(".md").write_text(markdown)
    if plot:
        from ..training.plots import plot_runs
        from ..training.summary import examples_per_step

        plot_runs({r["run"]: Path(path) / "metrics.jsonl" for r, path in zip(runs, args.runs)},
                  {r["run"]: examples_per_step(r["recipe"]) for r in runs}, plot, args.title)
    print(markdown, end="")
    return 0


def check_outputs(output: str, plot: str | None) -> tuple[Path, Path | None]:
    """The results JSON and the plot, refused unless each is a new or old file in an existing folder,
    the JSON's .md sibling is not the JSON itself, and the plot is neither (and matplotlib is there)."""
    from ..errors import InputError
    from ..figures import require_pyplot
    from ..outputs import check_writable

    json_path = check_writable(output, command="summarize")
    if json_path.suffix.lower() == ".md":
        raise InputError(f"--output names the results JSON (the .md table is written beside it), got {output}")
    if plot is None:
        return json_path, None
    plot_path = check_writable(plot, command="summarize")
    if plot_path.resolve() in (json_path.resolve(), json_path.with_suffix(".md").resolve()):
        raise InputError(f"--plot {plot} would overwrite the results; give it another name")
    require_pyplot("summarize --plot")
    return json_path, plot_path


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _name_apart(runs: list[dict], paths: list[str]) -> None:
    """Runs named alike (e.g. `a/sft`, `b/sft`) are named with their parent folder too."""
    names = [r["run"] for r in runs]
    for run, path in zip(runs, paths, strict=True):
        if names.count(run["run"]) > 1:
            resolved = Path(path).resolve()
            run["run"] = f"{resolved.parent.name}/{resolved.name}"
