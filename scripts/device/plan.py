"""Pick the best recipe of an NTP sweep and size a longer run of it to a time budget.

Prints `comprexit train ntp` options: the sweep run with the lowest validation CE at the
last step that every run reached (runs trained side by side on one GPU may be cut at different
steps), its recipe, and the number of steps that --examples-per-second allows in --minutes.
"""

import argparse
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from comprexit.training.summary import common_validation_step, summarize_run, validation_at  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("sweep")
    parser.add_argument("--minutes", type=float, required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--examples-per-second", type=float, required=True,
                        help="expected speed of the long run (the sweep's own speed is shared with its neighbours)")
    args = parser.parse_args()
    runs = [summarize_run(p) for p in sorted(Path(args.sweep).iterdir()) if (p / "metrics.jsonl").is_file()]
    runs = [r for r in runs if r["validations"]]
    step = common_validation_step(runs)
    if step is None:
        sys.exit(f"plan.py: the runs in {args.sweep} share no validation step; cannot compare them")
    best = min(runs, key=lambda r: validation_at(r, step)["ce"])
    recipe = best["recipe"]
    steps = int(args.minutes * 60 * args.examples_per_second / args.batch_size)
    options = ["--preset", "paper", "--max-steps", str(steps), "--lr", str(recipe["lr"]),
               "--ce-weight", str(recipe["ce_weight"]), "--kl-weight", str(recipe["kl_weight"]),
               "--ae-weight", str(recipe["ae_weight"]), "--warmup-ratio", "0.03"]
    if recipe["compressor"]:
        options += ["--compressor-config", json.dumps(recipe["compressor"])]
    if recipe["extra_ntp"]:
        options += ["--extra-ntp", *recipe["extra_ntp"]]
    print(f"# best sweep run: {best['run']} (val CE {validation_at(best, step)['ce']:.3f} at step {step})", file=sys.stderr)
    print(" ".join(shlex.quote(o) for o in options))


if __name__ == "__main__":
    main()
