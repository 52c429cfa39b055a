"""Make a training run's selected weights the package default: bf16 tensors, the config, and where they came from.

Usage:
  python scripts/results/ship_weights.py RUN_BEST DEST --run RESULTS_RUN --selected-on TEXT

RUN_BEST is a `best/` folder written by `comprexit train` (float32 safetensors, comprexit_config.json,
selection.json); DEST is e.g. src/comprexit/weights/gemma-3-270m-4x. bf16 halves the package's size;
the weights were trained in float32 and the bundled model runs them in its own dtype. selection.json
gains the results folder of the run and the questions the choice was made on, so the shipped weights
always name their evidence.
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

WEIGHTS = "comprexit.safetensors"
CONFIG = "comprexit_config.json"
SELECTION = "selection.json"


def ship(best: Path, dest: Path, run: str, selected_on: str) -> dict:
    tensors = {name: t.to(torch.bfloat16) if t.is_floating_point() else t for name, t in load_file(best / WEIGHTS).items()}
    dest.mkdir(parents=True, exist_ok=True)
    save_file({name: t.contiguous() for name, t in tensors.items()}, dest / WEIGHTS)
    shutil.copyfile(best / CONFIG, dest / CONFIG)
    selection = json.loads((best / SELECTION).read_text())
    selection.update(run=run, selected_on=selected_on, stored_as="bfloat16 (trained in float32)")
    (dest / SELECTION).write_text(json.dumps(selection, indent=2) + "\n")
    return selection


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("best", type=Path, help="the run's best/ folder")
    parser.add_argument("dest", type=Path, help="the package's weights folder")
    parser.add_argument("--run", required=True, help="the run's results folder (its evidence)")
    parser.add_argument("--selected-on", required=True, help="the held-out questions the choice was made on")
    args = parser.parse_args()
    missing = [name for name in (WEIGHTS, CONFIG, SELECTION) if not (args.best / name).is_file()]
    if missing:
        parser.error(f"{args.best} is not a run's best/ folder (missing {', '.join(missing)})")
    if args.dest.exists() and not args.dest.is_dir():
        parser.error(f"{args.dest} exists and is not a folder")
    selection = ship(args.best, args.dest, args.run, args.selected_on)
    print(f"shipped step {selection['step']} (held-out F1 {selection['f1']:.2f}) to {args.dest}", file=sys.stderr)


if __name__ == "__main__":
    main()
