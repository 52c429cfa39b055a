"""F1 against training examples seen, for one or more SFT runs: held-out train questions (the run's
own validation, used for selection) and, where snapshots were evaluated, the eval files (reported only).

Usage:
  python scripts/results/sft_curve.py RUN_DIR [RUN_DIR ...] -o OUT_PREFIX

Each RUN_DIR holds `long_sft/metrics.jsonl` and `long_sft/train_config.json` (from `comprexit train`),
optionally `curve/step-*.json` (`comprexit eval` of the snapshots) and `final/eval/*.json` (the selected
weights; ComprExIT's only). Writes OUT_PREFIX.json, OUT_PREFIX.md and OUT_PREFIX.png. Each eval point
keeps the questions it was scored on per file (snapshots may have been scored on fewer than the final
weights).
"""

import argparse
import json
from pathlib import Path

IN_DOMAIN = ("squad_eval", "nq_eval")
OUT_OF_DOMAIN = ("drop_ood", "relext_ood")


def mean_f1(datasets: dict, names: tuple[str, ...]) -> float | None:
    scores = [datasets[name]["f1"] for name in names if name in datasets]
    return round(sum(scores) / len(scores), 2) if len(scores) == len(names) else None


def eval_points(run: Path, batch: int, selected_step: int) -> list[dict]:
    """Eval-file F1 of every evaluated snapshot, and of the selected weights."""
    points = []
    for path in sorted((run / "curve").glob("step-*.json")):
        step = int(path.stem.split("-")[1])
        points.append({"step": step, "datasets": json.loads(path.read_text())["datasets"]})
    final = {}
    for path in sorted((run / "final" / "eval").glob("*.json")):
        final.update(json.loads(path.read_text())["datasets"])
    if final and selected_step not in {p["step"] for p in points}:
        points.append({"step": selected_step, "datasets": final})
    return [{"step": p["step"], "examples": p["step"] * batch, "in_domain_f1": mean_f1(p["datasets"], IN_DOMAIN),
             "ood_f1": mean_f1(p["datasets"], OUT_OF_DOMAIN),
             "questions": {name: d.get("count") for name, d in sorted(p["datasets"].items())}}
            for p in sorted(points, key=lambda p: p["step"])]


def read_run(run: Path) -> dict:
    config = json.loads((run / "long_sft" / "train_config.json").read_text())
    batch = config["global_batch_size"]
    records = [json.loads(line) for line in (run / "long_sft" / "metrics.jsonl").read_text().splitlines()]
    validation = [{"step": r["step"], "examples": r["step"] * batch, "f1": round(r["f1"], 2), "ce": round(r["ce"], 4)}
                  for r in records if r.get("kind") == "validation"]
    selected = json.loads((run / "long_sft" / "best" / "selection.json").read_text())["step"]
    return {"run": run.name, "lr": config["lr"], "global_batch": batch, "selected_step": selected,
            "validation": validation, "eval": eval_points(run, batch, selected)}


def markdown(runs: list[dict]) -> str:
    lines = ["# SFT: F1 against examples seen", "",
             "Held-out train questions (the run's validation; selection) and the eval files (the first questions of "
             "each file, as many as the last column says; reporting only).", "",
             "| run | step | examples | held-out train F1 | val CE | eval in-domain F1 | eval OOD F1 | eval questions per file |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for run in runs:
        evals = {p["step"]: p for p in run["eval"]}
        steps = sorted({v["step"] for v in run["validation"]} | set(evals))
        validation = {v["step"]: v for v in run["validation"]}
        for step in steps:
            v, e = validation.get(step, {}), evals.get(step, {})
            mark = " (selected)" if step == run["selected_step"] else ""
            counts = ", ".join(f"{name} {n}" for name, n in e.get("questions", {}).items()) or "-"
            lines.append(f"| {run['run']} (lr {run['lr']}) | {step}{mark} | {step * run['global_batch']:,} | "
                         f"{v.get('f1', '-')} | {v.get('ce', '-')} | {e.get('in_domain_f1') or '-'} | {e.get('ood_f1') or '-'} "
                         f"| {counts} |")
    return "\n".join(lines) + "\n"


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axis = plt.subplots(figsize=(7, 4.2))
    for index, run in enumerate(runs):
        color = f"C{index}"
        v = run["validation"]
        axis.plot([p["examples"] for p in v], [p["f1"] for p in v], "o-", color=color,
                  label=f"lr {run['lr']}: held-out train questions")
        e = [p for p in run["eval"] if p["in_domain_f1"] is not None]
        if e:
            axis.plot([p["examples"] for p in e], [p["in_domain_f1"] for p in e], "s--", color=color,
                      label=f"lr {run['lr']}: eval files, in-domain")
            axis.plot([p["examples"] for p in e], [p["ood_f1"] for p in e], "^:", color=color,
                      label=f"lr {run['lr']}: eval files, OOD")
    axis.set_xlabel("SFT examples seen")
    axis.set_ylabel("F1")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("-o", "--output", required=True, type=Path, help="output prefix")
    args = parser.parse_args()
    missing = [str(r) for r in args.runs if not (r / "long_sft" / "metrics.jsonl").is_file()]
    if missing:
        parser.error(f"not an SFT run folder (no long_sft/metrics.jsonl): {', '.join(missing)}")
    runs = [read_run(run) for run in args.runs]
    args.output.with_suffix(".json").write_text(json.dumps(runs, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(markdown(runs))
    plot(runs, args.output.with_suffix(".png"))
    print(f"wrote {args.output}.json, .md and .png")


if __name__ == "__main__":
    main()
