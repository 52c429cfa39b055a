"""One table over training runs: recipe, steps, speed, and the final validation figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from ..errors import InputError
from .plots import read_metrics

RECIPE_FIELDS = ("phase", "lr", "batch_size", "epochs", "max_steps", "ce_weight", "kl_weight", "ae_weight", "extra_ntp",
                 "compressor", "init")


def summarize_run(run_dir: str | Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.jsonl").is_file() or not (run_dir / "train_config.json").is_file():
        raise InputError(f"{run_dir} is not a training run folder (no metrics.jsonl / train_config.json)")
    config = json.loads((run_dir / "train_config.json").read_text())
    rows = read_metrics(run_dir / "metrics.jsonl")
    bounds = next((r for r in rows if r["kind"] == "bounds"), {})
    validation = [r for r in rows if r["kind"] == "validation"]
    train = [r for r in rows if r["kind"] == "train"]
    profile = next((r for r in rows if r["kind"] == "profile"), None)
    summaries = [r for r in rows if r["kind"] == "summary"]
    selection = run_dir / "best" / "selection.json"
    speeds = [r["examples_per_second"] for r in train if r.get("examples_per_second")]
    return {
        "run": run_dir.name,
        "recipe": {k: config.get(k) for k in RECIPE_FIELDS},
        "steps": train[-1]["step"] if train else 0,
        "total_steps": bounds.get("total_steps"),
        "train_examples": bounds.get("train_examples"),
        "bounds": {k: bounds.get(k) for k in ("ce_full_context", "ce_no_context", "f1_full_context") if k in bounds},
        "final_validation": validation[-1] if validation else None,
        "best_validation": json.loads(selection.read_text()) if selection.is_file() else None,
        "examples_per_second_median": sorted(speeds)[len(speeds) // 2] if speeds else None,
        "train_seconds": round(sum(s.get("train_seconds_this_call") or 0 for s in summaries), 1),
        "profile": profile,
        "status": summaries[-1]["status"] if summaries else "running",
    }


def summary_markdown(runs: Sequence[dict[str, Any]], title: str) -> str:
    lines = [
        f"# {title}",
        "",
        "| run | recipe | steps | val CE | gap closed | val F1 | examples/s | train s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        recipe = r["recipe"]
        knobs = [f"lr {recipe['lr']:g}", f"batch {recipe['batch_size']}", f"ce {recipe['ce_weight']:g}"]
        if recipe.get("kl_weight"):
            knobs.append(f"kl {recipe['kl_weight']:g}")
        if recipe.get("ae_weight"):
            knobs.append(f"ae {recipe['ae_weight']:g}")
        if recipe.get("compressor"):
            knobs.append(json.dumps(recipe["compressor"], separators=(",", ":")))
        if recipe.get("extra_ntp"):
            knobs.append("+QA contexts")
        best = r["best_validation"] or r["final_validation"] or {}
        f1 = best.get("f1")
        lines.append(
            f"| {r['run']} | {', '.join(knobs)} | {r['steps']} | {best.get('ce', float('nan')):.3f} "
            f"| {100 * best.get('gap_closed', float('nan')):.1f}% | {'-' if f1 is None else f'{f1:.2f}'} "
            f"| {r['examples_per_second_median'] or 0:.0f} | {r['train_seconds']:.0f} |"
        )
    bounds = runs[0]["bounds"] if runs else {}
    if bounds:
        lines += ["", "Frozen-model bounds on the same validation slice: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in bounds.items())]
    lines += ["", "Validation figures are those of the selected (best) checkpoint of each run."]
    return "\n".join(lines) + "\n"
