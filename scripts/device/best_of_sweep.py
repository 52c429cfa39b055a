"""Pick the learning rate and global batch of a sweep's best run, for the long run that follows.

Usage: python3 scripts/device/best_of_sweep.py RUNS/sweep

Each run folder holds `train_config.json` and `best/selection.json` (written by `comprexit train`:
the step its validation chose, with F1 on held-out TRAIN questions). The run with the highest
selected F1 wins; the validation CE breaks ties within 0.5 F1, since 300 questions cannot tell
such runs apart. Prints one line per run, then the winner's options on the last line.
"""

import json
import sys
from pathlib import Path


def read_run(folder: Path) -> dict | None:
    selection = folder / "best" / "selection.json"
    if not selection.is_file():
        return None
    config = json.loads((folder / "train_config.json").read_text())
    chosen = json.loads(selection.read_text())
    return {"run": folder.name, "lr": config["lr"], "global_batch": config["global_batch_size"],
            "step": chosen["step"], "f1": chosen["f1"], "ce": chosen["ce"]}


def main(sweep: Path) -> None:
    runs = [run for run in map(read_run, sorted(p for p in sweep.iterdir() if p.is_dir())) if run]
    if not runs:
        sys.exit(f"no finished runs under {sweep}")
    for run in runs:
        print(f"{run['run']}: step {run['step']}, F1 {run['f1']:.2f}, CE {run['ce']:.3f}")
    top = max(run["f1"] for run in runs)
    best = min((run for run in runs if run["f1"] >= top - 0.5), key=lambda run: run["ce"])
    print(f"--lr {best['lr']} --global-batch-size {best['global_batch']}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
