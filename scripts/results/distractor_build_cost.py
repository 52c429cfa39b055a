"""What building distractor SFT documents costs before a run's first step: seconds and peak memory of
`training.data.distractor_sources` for one QA file at several lengths, per `--distractor-questions` cap.

Usage: python scripts/results/distractor_build_cost.py FILE OUT_PREFIX --caps 5000 10000 [--lengths 2048 4096 8192]

Each cap runs in a process of its own (peak RSS is per process). Writes OUT_PREFIX.json and OUT_PREFIX.md.
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def one(path: str, lengths: list[int], cap: int) -> dict:
    """Build the sources once in this process; the time, the documents and the peak resident memory."""
    from comprexit import Backbone
    from comprexit.training.data import distractor_sources

    backbone = Backbone.load(device="cpu")
    start = time.perf_counter()
    sources = distractor_sources(backbone, [path], lengths, validation_permille=30, seed=0, max_questions=cap)
    return {"cap": cap, "seconds": round(time.perf_counter() - start, 1),
            "documents": {source.name: len(source) for source in sources},
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file")
    parser.add_argument("out_prefix")
    parser.add_argument("--caps", type=int, nargs="+", required=True)
    parser.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096, 8192])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process of one cap
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.file, args.lengths, args.one)))
        return
    rows = []
    for cap in args.caps:
        done = subprocess.run([sys.executable, __file__, args.file, args.out_prefix, "--caps", str(cap), "--lengths",
                               *map(str, args.lengths), "--one", str(cap)], capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"cap {cap} failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    from comprexit.evaluation.report import environment

    out = {"kind": "distractor_build_cost", "file": Path(args.file).name, "lengths": args.lengths,
           "settings": {"validation_permille": 30, "seed": 0, "tokenizer": "bundled Gemma-3-270M"},
           "rows": rows, "environment": environment()}
    Path(args.out_prefix + ".json").write_text(json.dumps(out, indent=2) + "\n")
    env = out["environment"]
    lines = [f"# Building distractor documents: {out['file']} at {', '.join(map(str, args.lengths))} tokens", "",
             f"{env['device']}; commit {env['commit']}; {env['date']}; `distractor_sources` in a fresh process per cap.", "",
             "| --distractor-questions | documents | seconds | peak RSS (GiB) |", "|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['cap']} | {sum(row['documents'].values())} | {row['seconds']} | {row['peak_rss_gib']} |")
    Path(args.out_prefix + ".md").write_text("\n".join(lines) + "\n")
    print(args.out_prefix + ".md")


if __name__ == "__main__":
    main()
