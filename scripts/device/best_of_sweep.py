"""Pick the best run of a sweep, for the long run that follows: its learning rate and global batch, or
(--lever) the design lever it added to the compressor.

Usage: python3 scripts/device/best_of_sweep.py [--lever] RUNS/sweep

Each run folder holds `train_config.json` and `best/selection.json` (written by `comprexit train`:
the step its validation chose, with F1 on held-out TRAIN questions). The run with the highest
selected F1 wins; the validation CE breaks ties within 0.5 F1, since 300 questions cannot tell
such runs apart. Prints one line per run, then the winner's options on the last line: with --lever,
`--compressor-config` with the winner's levers (LEVERS fields of its compressor config: `reader_tokens`,
trained vectors read before the slots; `projector_branch`, the width of a residual branch beside the
projector; a run may have both), or an empty line when the run without a lever wins.
"""

import json
import sys
from pathlib import Path

# The additive levers: fields whose parameters start fresh on top of --init weights.
LEVERS = ("reader_tokens", "projector_branch")


def read_run(folder: Path) -> dict | None:
    selection = folder / "best" / "selection.json"
    if not selection.is_file():
        return None
    config = json.loads((folder / "train_config.json").read_text())
    chosen = json.loads(selection.read_text())
    levers = {k: v for k, v in (config.get("compressor") or {}).items() if k in LEVERS and v}
    return {"run": folder.name, "lr": config["lr"], "global_batch": config["global_batch_size"], "levers": levers,
            "step": chosen["step"], "f1": chosen["f1"], "ce": chosen["ce"]}


def options(run: dict, lever: bool) -> str:
    """The winner's options for `comprexit train` (JSON without spaces: the device script splits on them)."""
    if not lever:
        return f"--lr {run['lr']} --global-batch-size {run['global_batch']}"
    return f"--compressor-config {json.dumps(run['levers'], separators=(',', ':'))}" if run["levers"] else ""


def main(sweep: Path, lever: bool = False) -> None:
    if not sweep.is_dir():
        sys.exit(f"no such folder: {sweep}")
    runs = [run for run in map(read_run, sorted(p for p in sweep.iterdir() if p.is_dir())) if run]
    if not runs:
        sys.exit(f"no finished runs under {sweep}")
    for run in runs:
        print(f"{run['run']}: step {run['step']}, F1 {run['f1']:.2f}, CE {run['ce']:.3f}")
    top = max(run["f1"] for run in runs)
    best = min((run for run in runs if run["f1"] >= top - 0.5), key=lambda run: run["ce"])
    print(options(best, lever))


if __name__ == "__main__":
    arguments = sys.argv[1:]
    lever = "--lever" in arguments
    folders = [a for a in arguments if a != "--lever"]
    if len(folders) != 1:
        sys.exit(__doc__.strip().splitlines()[3])
    main(Path(folders[0]), lever)
