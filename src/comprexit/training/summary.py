"""One table over training runs: recipe, steps, speed, and the final validation figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from ..errors import InputError
from .plots import read_metrics

RECIPE_FIELDS = ("method", "ablation", "phase", "lr", "batch_size", "grad_accum", "global_batch_size", "data_weights", "epochs", "max_steps", "ce_weight", "kl_weight", "ae_weight", "extra_ntp",
                 "compressor", "init")


def summarize_run(run_dir: str | Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"no such run folder: {run_dir}" if not run_dir.exists() else f"{run_dir} is a file, not a run folder")
    if not (run_dir / "metrics.jsonl").is_file() or not (run_dir / "train_config.json").is_file():
        raise InputError(f"{run_dir} is not a training run folder (no metrics.jsonl / train_config.json)")
    try:
        config = json.loads((run_dir / "train_config.json").read_text())
        rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if isinstance(r, dict) and "kind" in r]
    except (OSError, ValueError) as error:  # unreadable, not UTF-8, not JSON
        raise InputError(f"{run_dir}: cannot read its run files ({error})") from error
    if not isinstance(config, dict):
        raise InputError(f"{run_dir / 'train_config.json'} is not a training config (a JSON object)")
    bounds = next((r for r in rows if r["kind"] == "bounds"), {})
    validation = [r for r in rows if r["kind"] == "validation"]
    train = [r for r in rows if r["kind"] == "train"]
    profile = next((r for r in rows if r["kind"] == "profile"), None)
    env = next((r for r in rows if r["kind"] == "environment"), None)
    summaries = [r for r in rows if r["kind"] == "summary"]
    selection = run_dir / "best" / "selection.json"
    speeds = [r["examples_per_second"] for r in train if r.get("examples_per_second")]
    # data-parallel processes, each taking batch_size (recorded by the trainer beside the device)
    recipe = {**{k: config.get(k) for k in RECIPE_FIELDS}, "processes": int((env or {}).get("processes") or 1)}
    return {
        "run": run_dir.name,
        "recipe": recipe,
        "trainable_parameters": bounds.get("trainable_parameters"),
        "steps": train[-1]["step"] if train else 0,
        "total_steps": bounds.get("total_steps"),
        "train_examples": bounds.get("train_examples"),
        "bounds": {k: bounds.get(k) for k in ("ce_full_context", "ce_no_context", "f1_full_context") if k in bounds},
        "final_validation": validation[-1] if validation else None,
        "validations": [{**{k: r[k] for k in ("step", "ce", "gap_closed") if k in r},
                         "examples": r["step"] * examples_per_step(recipe)} for r in validation],
        "best_validation": json.loads(selection.read_text()) if selection.is_file() else None,
        "examples_per_second_median": sorted(speeds)[len(speeds) // 2] if speeds else None,
        "throughput": steady_throughput(train, profile),
        "train_seconds": round(sum(s.get("train_seconds_this_call") or 0 for s in summaries), 1),
        "profile": profile,
        "status": summaries[-1]["status"] if summaries else "running",
        "environment": {k: v for k, v in env.items() if k not in ("kind", "step")} if env else None,
    }


def steady_throughput(train: Sequence[dict[str, Any]], profile: dict[str, Any] | None) -> dict[str, float] | None:
    """Median examples/s and tokens/s of the logged windows after the first one (warm-up) and after
    any profiled steps (the profiler synchronises the device, which slows them)."""
    after = (profile or {}).get("step") or 0  # the last profiled step
    steady = [r for r in train[1:] if r["step"] > after and r.get("examples_per_second")]
    if not steady:
        return None
    middle = lambda values: sorted(values)[len(values) // 2]  # noqa: E731
    return {"examples_per_second": middle([r["examples_per_second"] for r in steady]),
            "tokens_per_second": middle([r["tokens_per_second"] for r in steady if r.get("tokens_per_second")] or [0]),
            "windows": len(steady)}


def throughput_markdown(runs: Sequence[dict[str, Any]]) -> str:
    """Steady throughput per run, per GPU, against the first run, with where a profiled step's time goes."""
    base = runs[0].get("throughput")
    single = next((r for r in runs if (r["recipe"].get("processes") or 1) == 1 and r is not runs[0]), None)
    lines = ["## Throughput", "",
             "| run | processes | examples/s | tokens/s | examples/s per GPU | per GPU vs first run | scaling efficiency "
             "| time shares of a profiled step |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in runs:
        speed, processes = r.get("throughput"), r["recipe"].get("processes") or 1
        if not speed:
            continue
        per_gpu = speed["examples_per_second"] / processes
        versus = f"{per_gpu / base['examples_per_second']:.2f}x" if base else "-"
        one = (single or runs[0]).get("throughput")
        efficiency = f"{per_gpu / one['examples_per_second']:.0%}" if one and processes > 1 else "-"
        shares = r.get("profile") or {}
        parts = ", ".join(f"{k[6:]} {v:.0%}" for k, v in shares.items() if k.startswith("share_"))
        lines.append(f"| {r['run']} | {processes} | {speed['examples_per_second']:.0f} | {speed['tokens_per_second']:.0f} "
                     f"| {per_gpu:.0f} | {versus} | {efficiency} | {parts or '-'} |")
    lines += ["", "Steady: the median of the logged windows after the first (warm-up) and after any profiled "
              "steps. Scaling efficiency: examples/s per GPU against the one-process run of the same recipe "
              "(the first one-process run after the first row)."]
    return "\n".join(lines) + "\n"


def examples_per_step(recipe: dict[str, Any]) -> int:
    """Examples per optimizer step: the global batch, or the batch of each process, accumulated, over every process."""
    if recipe.get("global_batch_size"):
        return int(recipe["global_batch_size"])
    return int(recipe.get("batch_size") or 1) * int(recipe.get("grad_accum") or 1) * int(recipe.get("processes") or 1)


def common_validation_step(runs: Sequence[dict[str, Any]], by: str = "step") -> int | None:
    """The last point at which every run was validated: runs cut at different steps compare there.

    by: "step", or "examples" (training examples seen) for runs of different batch sizes.
    """
    points = [{v[by] for v in r.get("validations") or [] if by in v} for r in runs]
    shared = set.intersection(*points) if points else set()
    return max(shared) if shared else None


def validation_at(run: dict[str, Any], point: int, by: str = "step") -> dict[str, Any]:
    return next(v for v in run["validations"] if v.get(by) == point)


def summary_markdown(runs: Sequence[dict[str, Any]], title: str) -> str:
    # runs of one batch size compare at a step; a batch-size sweep compares at equal examples seen
    by = "step" if len({examples_per_step(r["recipe"]) for r in runs}) <= 1 else "examples"
    common = common_validation_step(runs, by)
    where = f"step {common}" if by == "step" else f"{common:,} examples" if common is not None else "- examples"
    lines = [
        f"# {title}",
        "",
        "| run | recipe | steps | checkpoint | val CE | CE full / no context | gap closed "
        f"| gap closed at {where} | val F1 (full ctx) | examples/s | train s |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        recipe = r["recipe"]
        if recipe.get("global_batch_size"):
            batch = f"batch {recipe['global_batch_size']} ({recipe['batch_size']} per pass, {recipe.get('processes') or 1} processes)"
        else:
            batch = f"batch {recipe['batch_size']}" + (f"x{recipe['grad_accum']}" if (recipe.get("grad_accum") or 1) > 1 else "")
            if (recipe.get("processes") or 1) > 1:
                batch += f" on each of {recipe['processes']} processes"
        knobs = [f"lr {recipe['lr']:g}", batch, f"ce {recipe['ce_weight']:g}"]
        named = " ".join(filter(None, [recipe.get("method"), recipe.get("ablation")]))
        if named and named != "comprexit":  # runs from before the method field say nothing: ComprExIT
            knobs.insert(0, named)
        if recipe.get("kl_weight"):
            knobs.append(f"kl {recipe['kl_weight']:g}")
        if recipe.get("ae_weight"):
            knobs.append(f"ae {recipe['ae_weight']:g}")
        if recipe.get("compressor"):
            knobs.append(json.dumps(recipe["compressor"], separators=(",", ":")))
        if recipe.get("extra_ntp"):
            knobs.append("+QA contexts")
        chosen, which = (r["best_validation"], f"best (step {r['best_validation'].get('step')})") if r["best_validation"] \
            else (r["final_validation"] or {}, "last")
        bounds = r["bounds"]
        f1 = chosen.get("f1")
        f1_cell = "-" if f1 is None else f"{f1:.2f} ({bounds.get('f1_full_context', float('nan')):.2f})"
        lines.append(
            f"| {r['run']} | {', '.join(knobs)} | {r['steps']} | {which} | {chosen.get('ce', float('nan')):.3f} "
            f"| {bounds.get('ce_full_context', float('nan')):.3f} / {bounds.get('ce_no_context', float('nan')):.3f} "
            f"| {100 * chosen.get('gap_closed', float('nan')):.1f}% "
            f"| {_percent(validation_at(r, common, by).get('gap_closed')) if common is not None else '-'} | {f1_cell} "
            f"| {r['examples_per_second_median'] or 0:.0f} | {r['train_seconds']:.0f} |"
        )
    lines += [
        "",
        "Gap closed = (CE without context - CE from slots) / (CE without context - CE with the full context), "
        "on the run's validation slice of the train files; F1 on held-out train questions (SFT). "
        "Runs cut at different steps compare in the column at the last step all of them reached "
        "(at equal training examples seen when their batch sizes differ).",
    ]
    return "\n".join(lines) + "\n"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def training_lineage(weights_dir: str | Path | None) -> list[dict[str, Any]]:
    """The training phases behind a weights folder, first phase first: what it cost to train.

    A `comprexit train` output keeps its weights in `<run>/best` or `<run>/final`, and a run
    started with `--init <other run>/final` continues that run; each run found this way gives
    its phase, steps, training seconds and device. Folders from elsewhere (the packaged
    weights) give an empty list.
    """
    phases: list[dict[str, Any]] = []
    folder = Path(weights_dir) if weights_dir else None
    while folder is not None and len(phases) < 8:  # the bound only guards against a cycle of --init
        run_dir = folder.parent
        if not (run_dir / "metrics.jsonl").is_file() or not (run_dir / "train_config.json").is_file():
            break
        phases.insert(0, phase_record(run_dir))
        folder = Path(phases[0]["init"]) if phases[0]["init"] else None
    return phases


def phase_record(run_dir: str | Path) -> dict[str, Any]:
    """One training run as a line of a method's training cost: phase, steps, seconds, device."""
    run = summarize_run(run_dir)
    return {"phase": run["recipe"]["phase"], "run": str(run_dir), "init": run["recipe"].get("init"), "steps": run["steps"],
            "train_seconds": run["train_seconds"], "examples_per_second": run["examples_per_second_median"],
            "device": (run["environment"] or {}).get("device")}
