#!/usr/bin/env python
"""Peak memory of `comprexit ask` on long documents, compressed and with --full-context: results/memory/.

    python scripts/results/ask_memory.py measure --label after -o results/memory/after.json
    PYTHONPATH=/tmp/before/src COMPREXIT_COMMIT=09e5d04 python scripts/results/ask_memory.py measure \
        --label before --skip full:16994 -o results/memory/before.json
    python scripts/results/ask_memory.py table results/memory/before.json results/memory/after.json \
        -o results/memory/table.md
    python scripts/results/ask_memory.py prefill-time -o results/memory/prefill-time.json

Each measurement is one `python -m comprexit ask --device cpu` process (whatever `comprexit` its
PYTHONPATH finds: the tree to measure), and its peak resident set size is the kernel's count for
that child alone (`os.wait4`), so the numbers include Python, torch and the loaded model, as a
user's would. The documents are generated prose (seeded, made-up names and numbers: no
copyright, and the frozen model cannot know the answers) with the answer to the question in
the middle, cut to exact token counts with the bundled tokenizer: 7,562 and 16,994 tokens, the
lengths of the issue that reported the memory.
The command line used works on every version of `comprexit ask` (no --json), so an old tree
can be measured the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LENGTHS = (7562, 16994)
QUESTION = "Who was the last keeper of the lighthouse?"
NEEDLE = "The last keeper of the lighthouse was Mabel Trent, who left the headland in 1989."
NAMES = "Agnes Mallory,Thomas Reed,Edith Vane,Samuel Orme,Ruth Calder,Jonas Pike,Mabel Trent,Hugh Sorrel".split(",")
PLACES = "Harrowby Point,Keel Bay,Saltmarsh Head,Gullrock,Fenwick Sound,Caddow Isle,Marrow Cove".split(",")
THINGS = "lens,lantern,fog bell,boathouse,oil store,signal mast,keepers' cottage,pier".split(",")
SENTENCES = [
    "In {year} {name} took charge of the {thing} at {place}, where the winter storms lasted {count} days.",
    "The {thing} at {place} was rebuilt in {year} after {count} ships had been lost on the rocks nearby.",
    "{name} kept a log of every vessel that passed {place}; by {year} it held {count} pages of entries.",
    "When the {thing} failed in {year}, {name} rowed {count} miles to {place} to fetch the spare parts.",
    "Visitors to {place} in {year} counted {count} steps from the {thing} to the top of the tower.",
    "A letter of {year} from {name} describes the {thing} of {place} and the {count} lamps it burned each night.",
]


def prose(tokenizer, tokens: int, seed: int) -> str:
    """Seeded made-up prose of exactly `tokens` tokens (the bundled tokenizer's count), with the answer
    to QUESTION (NEEDLE) in its middle paragraph."""
    rng = random.Random(seed)
    paragraphs, ids = [], []
    while len(ids) < tokens:
        paragraph = " ".join(
            rng.choice(SENTENCES).format(year=rng.randint(1790, 1990), name=rng.choice(NAMES), place=rng.choice(PLACES),
                                         thing=rng.choice(THINGS), count=rng.randint(2, 400))
            for _ in range(rng.randint(3, 7))
        )
        paragraphs.append(paragraph)
        ids = tokenizer("\n\n".join(paragraphs), add_special_tokens=False)["input_ids"]
    paragraphs.insert(len(paragraphs) // 2, NEEDLE)  # the cut below takes only the end
    ids = tokenizer("\n\n".join(paragraphs), add_special_tokens=False)["input_ids"]
    text = tokenizer.decode(ids[:tokens])
    while len(tokenizer(text, add_special_tokens=False)["input_ids"]) > tokens:  # decode/encode may merge a token
        text = text[:-1]
    return text


def run_ask(document: Path, full: bool) -> dict:
    """One `comprexit ask` process: its exit code, wall time, peak RSS and answer."""
    argv = [sys.executable, "-m", "comprexit", "ask", "--context-file", str(document), "--device", "cpu", QUESTION]
    if full:
        argv.insert(-1, "--full-context")
    with tempfile.TemporaryFile("w+") as out_file, tempfile.TemporaryFile("w+") as err_file:
        start = time.perf_counter()
        child = subprocess.Popen(argv, stdout=out_file, stderr=err_file, text=True)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak, not the most of all children
        seconds = time.perf_counter() - start
        child.returncode = code = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        out_file.seek(0), err_file.seek(0)
        out, err = out_file.read(), err_file.read()
    answers = [line[3:] for line in out.splitlines() if line.startswith("A: ")]
    return {"exit_code": code, "seconds": round(seconds, 1), "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2),
            "answer": answers[0] if answers else None, "stderr_tail": err.strip().splitlines()[-1:] if code else []}


def measure(args: argparse.Namespace) -> None:
    from transformers import AutoTokenizer

    from comprexit import bundled
    from comprexit.evaluation.report import environment

    tokenizer = AutoTokenizer.from_pretrained(bundled.ensure_dense_copy())
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for tokens in LENGTHS:
            document = Path(folder) / f"prose-{tokens}.txt"
            document.write_text(prose(tokenizer, tokens, seed=tokens))
            for mode in ("compressed", "full"):
                key = f"{mode}:{tokens}"
                if key in args.skip:
                    rows.append({"tokens": tokens, "mode": mode, "skipped": True})
                    continue
                print(f"{args.label}: {key} ...", file=sys.stderr, flush=True)
                rows.append({"tokens": tokens, "mode": mode, **run_ask(document, mode == "full")})
                print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    import comprexit

    results = {"label": args.label, "question": QUESTION, "comprexit_source": str(Path(comprexit.__file__).parent),
               "environment": environment("cpu"), "rows": rows}
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")


def prefill_time(args: argparse.Namespace) -> None:
    """Seconds to read each document into the decoder's cache in one pass and in chunks, in one process,
    the variants taking turns (so that a busy machine slows them alike)."""
    import torch

    from comprexit.decoding import EagerDecoder
    from comprexit.evaluation.report import environment
    from comprexit.reader import Reader

    reader = Reader.load(device="cpu")
    chunks = [None, 512, 2048]
    rows = []
    for tokens in LENGTHS:
        prefix = reader.backbone.embed(torch.tensor(reader.backbone.tokenize(prose(reader.backbone.tokenizer, tokens, tokens))))
        seconds: dict = {chunk: [] for chunk in chunks}
        for _ in range(args.repeats):
            for chunk in chunks:
                start = time.perf_counter()
                EagerDecoder(reader.backbone, prefill_chunk=chunk).prefill(prefix)
                seconds[chunk].append(round(time.perf_counter() - start, 1))
        rows += [{"tokens": tokens, "prefill_chunk": chunk, "seconds": seconds[chunk]} for chunk in chunks]
        print(rows[-3:], file=sys.stderr, flush=True)
    Path(args.output).write_text(json.dumps({"environment": environment("cpu"), "rows": rows}, indent=2) + "\n")


def table(args: argparse.Namespace) -> None:
    runs = [json.loads(Path(path).read_text()) for path in args.results]
    lines = [
        "# Peak memory of `comprexit ask` on long documents (CPU, float32)",
        "",
        "Written by `scripts/results/ask_memory.py table` from " + ", ".join(f"`{Path(p).name}`" for p in args.results)
        + ". One `comprexit ask --device cpu` process per cell, one question; peak resident set size of that process "
        "(Python, torch and the 1.07 GB float32 model included). Documents: seeded made-up prose of exactly 7,562 and "
        "16,994 tokens.",
        "",
    ]
    for run in runs:
        env = run["environment"]
        lines.append(f"- **{run['label']}**: commit {env['commit']}, {env['date']}, {env['device']}, torch "
                     f"{env['torch']}, transformers {env['transformers']}")
    lines += ["", "| tokens | read | " + " | ".join(run["label"] for run in runs) + " |",
              "|---:|---|" + "---:|" * len(runs)]
    for tokens in LENGTHS:
        for mode in ("compressed", "full"):
            cells = []
            for run in runs:
                row = next((r for r in run["rows"] if r["tokens"] == tokens and r["mode"] == mode), None)
                if row is None or row.get("skipped"):
                    cells.append("not run")
                elif row["exit_code"]:
                    cells.append(f"failed (exit {row['exit_code']}) after {row['seconds']} s")
                else:
                    cells.append(f"{row['peak_rss_gib']:.2f} GiB, {row['seconds']} s")
            lines.append(f"| {tokens:,} | {'in full' if mode == 'full' else 'compressed'} | " + " | ".join(cells) + " |")
    lines += ["", f"Answers to \"{QUESTION}\" (the document says, in its middle: \"{NEEDLE}\"; the prose around it "
              "names other people in charge of things):", ""]
    for run in runs:
        for row in run["rows"]:
            if not row.get("skipped"):
                lines.append(f"- {run['label']}, {row['tokens']:,} tokens, {row['mode']}: {row.get('answer')!r}")
    Path(args.output).write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("measure")
    run.add_argument("--label", required=True)
    run.add_argument("--skip", nargs="*", default=[], metavar="MODE:TOKENS", help="e.g. full:16994")
    run.add_argument("-o", "--output", required=True)
    run.set_defaults(run=measure)
    timing = sub.add_parser("prefill-time")
    timing.add_argument("--repeats", type=int, default=2)
    timing.add_argument("-o", "--output", required=True)
    timing.set_defaults(run=prefill_time)
    merge = sub.add_parser("table")
    merge.add_argument("results", nargs="+")
    merge.add_argument("-o", "--output", required=True)
    merge.set_defaults(run=table)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
