"""Pick the best recipe of an NTP sweep and size a longer run of it to a time budget.

Prints `comprexit train ntp` options: the sweep run with the lowest validation CE, its
recipe, and the number of steps its measured examples/s allows in --minutes of training.
"""

import argparse
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from comprexit.training.summary import summarize_run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("sweep")
    parser.add_argument("--minutes", type=float, required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    runs = [summarize_run(p) for p in sorted(Path(args.sweep).iterdir()) if (p / "metrics.jsonl").is_file()]
    runs = [r for r in runs if r["final_validation"]]
    best = min(runs, key=lambda r: r["final_validation"]["ce"])
    recipe = best["recipe"]
    steps = int(args.minutes * 60 * best["examples_per_second_median"] / args.batch_size)
    options = ["--preset", "paper", "--max-steps", str(steps), "--lr", str(recipe["lr"]),
               "--ce-weight", str(recipe["ce_weight"]), "--kl-weight", str(recipe["kl_weight"]),
               "--ae-weight", str(recipe["ae_weight"]), "--warmup-ratio", "0.03"]
    if recipe["compressor"]:
        options += ["--compressor-config", json.dumps(recipe["compressor"])]
    if recipe["extra_ntp"]:
        options += ["--extra-ntp", *recipe["extra_ntp"]]
    print(f"# best sweep run: {best['run']} (val CE {best['final_validation']['ce']:.3f})", file=sys.stderr)
    print(" ".join(shlex.quote(o) for o in options))


if __name__ == "__main__":
    main()
