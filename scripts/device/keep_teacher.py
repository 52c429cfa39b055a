"""Decide whether the long SFT run distils the prompt-tuned teacher, from the ablation's two runs.

Usage: python3 scripts/device/keep_teacher.py RUNS/ablation/teacher_kl RUNS/ablation/squad_v11_100pct

Both runs start from the same weights and take the same steps; they differ only in the KL term to the
teacher. The rule, fixed before the runs: keep the teacher when its run's selected F1 on held-out TRAIN
questions is at least KEEP_MARGIN higher AND its validation answer CE is lower (300 questions cannot
tell a smaller F1 difference from noise, and a teacher costs a forward pass over the full context per
example). Prints both runs, then the options for `comprexit train` on the last line (empty: CE only).
"""

import json
import sys
from pathlib import Path

KEEP_MARGIN = 1.0


def selection(run: Path) -> dict:
    chosen = run / "best" / "selection.json"
    if not chosen.is_file():
        sys.exit(f"{run} has no best/selection.json: the run did not validate")
    return json.loads(chosen.read_text())


def main(with_teacher: Path, without: Path) -> None:
    taught, plain = selection(with_teacher), selection(without)
    config = json.loads((with_teacher / "train_config.json").read_text())
    for name, run in ((with_teacher.name, taught), (without.name, plain)):
        print(f"{name}: step {run['step']}, F1 {run['f1']:.2f}, CE {run['ce']:.3f}")
    keep = taught["f1"] >= plain["f1"] + KEEP_MARGIN and taught["ce"] < plain["ce"]
    print(f"teacher {'kept' if keep else 'left out'} (rule: F1 +{KEEP_MARGIN} and a lower CE)")
    print(f"--kl-weight {config['kl_weight']} --teacher {config['teacher']}" if keep else "")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[2])
    main(Path(sys.argv[1]), Path(sys.argv[2]))
