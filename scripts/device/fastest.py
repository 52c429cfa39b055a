"""Pick the fastest way to run one recipe on a GPU, for the long run that follows.

Usage: python3 scripts/device/fastest.py RUNS/speed

Each run folder of RUNS/speed trained the same steps of the same recipe (init, data, global batch,
learning rate) and differs only in how: the micro-batch (`batch_size`, the rest made up by gradient
accumulation) and `compile`. Neither changes the gradient of a step beyond float rounding (losses are
token sums over the whole global batch; the compiled layers equal the eager ones within float32 rounding,
tests/test_compile.py), so the fastest is free to take. The rule, fixed before the runs: the run with the
highest steady examples/s (`summarize_run`'s median after the warm-up window and the profiled steps)
that finished, if it is at least MARGIN times the baseline (the first run named BASELINE); otherwise the
baseline. Prints one line per run, then the winner's options for `comprexit train` on the last line
(empty: the baseline's, the preset's own).
"""

import json
import sys
from pathlib import Path

from comprexit.training.summary import summarize_run

BASELINE = "eager_b64"
MARGIN = 1.05  # a smaller lead is within the run-to-run spread of one GPU (193 vs 195 examples/s, fifth lease)


def read_run(folder: Path) -> dict | None:
    summary = summarize_run(folder)
    speed = summary.get("throughput")
    if summary["status"] != "finished" or not speed:
        return None
    config = json.loads((folder / "train_config.json").read_text())
    return {"run": folder.name, "batch_size": config["batch_size"], "compile": bool(config.get("compile")),
            "examples_per_second": speed["examples_per_second"]}


def options(run: dict) -> str:
    return f"--batch-size {run['batch_size']}" + (" --compile" if run["compile"] else "")


def main(sweep: Path) -> None:
    folders = sorted(p for p in sweep.iterdir() if (p / "metrics.jsonl").is_file())
    runs = []
    for folder in folders:
        run = read_run(folder)
        print(f"{folder.name}: " + (f"{run['examples_per_second']:.1f} examples/s" if run else "did not finish"))
        if run:
            runs.append(run)
    base = next((r for r in runs if r["run"] == BASELINE), None)
    if base is None:
        sys.exit(f"{sweep}: the baseline run {BASELINE} did not finish; no choice")
    best = max(runs, key=lambda r: r["examples_per_second"])
    if best is base or best["examples_per_second"] < MARGIN * base["examples_per_second"]:
        print(f"chosen: {BASELINE} (no run is {MARGIN}x faster)")
        print("")
        return
    print(f"chosen: {best['run']}, {best['examples_per_second'] / base['examples_per_second']:.2f}x the baseline")
    print(options(best))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[2])
    main(Path(sys.argv[1]))
