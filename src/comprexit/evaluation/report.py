"""Results files: JSON with full provenance plus a Markdown table, and comparison tables across runs."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from ..errors import InputError

IN_DOMAIN = ("squad_eval", "nq_eval")
OUT_OF_DOMAIN = ("drop_ood", "relext_ood")


def environment(device: Any = None) -> dict[str, Any]:
    """Where and with what a result was produced."""
    import torch
    import transformers

    from .. import __version__

    if device is not None and str(device).startswith("cuda") and torch.cuda.is_available():
        device_name = torch.cuda.get_device_name(torch.device(device))
    else:
        device_name = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    return {
        "device": device_name,
        "commit": current_commit(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "comprexit": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def current_commit() -> str:
    """`COMPREXIT_COMMIT` if set (runs on a copy without .git), else `git rev-parse HEAD` (+dirty)."""
    if os.environ.get("COMPREXIT_COMMIT"):
        return os.environ["COMPREXIT_COMMIT"]
    try:
        root = Path(__file__).resolve().parents[3]
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        if Path(top).resolve() != root:  # a copy without .git inside some other repository: not our commit
            return "unknown"
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_results(results: dict[str, Any], path: str | Path) -> tuple[Path, Path]:
    """Write `path` (JSON) and the same name with `.md` (a readable table), via temp files."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return write_json_and_markdown(results, results_markdown(results), path)


def write_json_and_markdown(data: dict[str, Any], markdown: str, path: str | Path) -> tuple[Path, Path]:
    """Write `data` to `path` (JSON) and `markdown` beside it (`.md`), each through a temporary file, so that an
    interrupted write never leaves half a file under the final name."""
    path = Path(path)
    table = path.with_suffix(".md")
    for target, text in ((path, json.dumps(data, indent=2) + "\n"), (table, markdown)):
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(target)
    return path, table


def context_key(context: str) -> str:
    """A context's name in prediction rows (16 hex digits of its SHA-256): `comprexit compare` resamples
    the questions of one paragraph together without the results file holding the paragraph."""
    return hashlib.sha256(context.encode("utf-8")).hexdigest()[:16]


def prediction_row(example: Any, prediction: str, em: float, f1: float) -> dict[str, Any]:
    """One question's entry in a results file's `predictions` (`eval --predictions`): what `compare` pairs."""
    return {"qid": example.qid, "context": context_key(example.context), "prediction": prediction,
            "answers": list(example.answers), "em": em, "f1": round(f1, 4)}


def load_results(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise InputError(f"results file not found: {path}") from error
    except OSError as error:  # a folder, no permission
        raise InputError(f"cannot read {path}: {(error.strerror or str(error)).lower()}") from error
    except ValueError as error:  # not JSON, not UTF-8
        raise InputError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(results, dict) or "datasets" not in results or "method" not in results:
        raise InputError(f"{path} is not a comprexit evaluation results file")
    results.setdefault("settings", {}).setdefault("answer_rule", "paper")  # files from before the rule was recorded
    return results


def merge_by_label(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per label: files of one evaluation split by dataset (e.g. one GPU per file) become one run.

    Runs sharing a label must share the method, its settings and the backbone, and cover
    different datasets; the merged average is recomputed over all of them.
    """
    from .metrics import average_over_datasets

    merged: dict[str, dict[str, Any]] = {}
    for run in runs:
        label = run_label(run)
        if label not in merged:
            merged[label] = {**run, "datasets": dict(run["datasets"])}
            continue
        into = merged[label]
        for part in ("method", "settings", "backbone"):
            if into.get(part) != run.get(part):
                raise InputError(f"results labelled {label!r} differ in their {part}: relabel one of them")
        shared = sorted(set(into["datasets"]) & set(run["datasets"]))
        if shared:
            raise InputError(f"results labelled {label!r} both hold {', '.join(shared)}: relabel one of them")
        into["datasets"].update(run["datasets"])
        into["average"] = average_over_datasets(into["datasets"])
        into["cost"] = combined_costs([d.get("cost") for d in into["datasets"].values()])
        into["wall_seconds"] = (into.get("wall_seconds") or 0) + (run.get("wall_seconds") or 0)
    return list(merged.values())


def run_label(results: dict[str, Any]) -> str:
    return results.get("label") or results["method"].get("method", "?")


def results_markdown(results: dict[str, Any]) -> str:
    env = results.get("environment", {})
    settings = results.get("settings", {})
    lines = [
        f"# Evaluation: {run_label(results)}",
        "",
        f"- backbone: {results.get('backbone', {}).get('name', '?')} ({results.get('backbone', {}).get('dtype', '?')})",
        f"- device: {env.get('device', '?')}; commit {env.get('commit', '?')}; {env.get('date', '?')}",
        f"- settings: context budget {settings.get('context_budget')} tokens (tail kept), greedy, "
        f"{settings.get('max_new_tokens')} new tokens, batch {settings.get('batch_size')}",
        f"- prompt after the context: {settings.get('template')!r}; answers cut by the "
        f"{settings.get('answer_rule', 'paper')!r} rule",
        f"- wall time {results.get('wall_seconds')} s; {results.get('questions_per_second')} questions/s",
        *_cost_line(results.get("cost")),
        "",
        "| dataset | questions | EM | F1 | contexts cut | questions/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in results["datasets"].items():
        lines.append(
            f"| {name} | {r['count']} | {r['em']:.2f} | {r['f1']:.2f} | {r.get('contexts_cut', 0)}/{r.get('contexts', '?')} "
            f"| {r.get('questions_per_second') or '-'} |"
        )
    avg = results["average"]
    lines.append(f"| **average** | {avg['count']} | {avg['em']:.2f} | {avg['f1']:.2f} | | |")
    return "\n".join(lines) + "\n"


BYTES_PER_VALUE = 2  # bfloat16: the precision tables state the costs of `costs.py` at


def kib(values: float) -> float:
    """A number of values as KiB at `BYTES_PER_VALUE` bytes each."""
    return values * BYTES_PER_VALUE / 1024


COST_FIELDS = ("compress_ms", "positions", "stored_values", "cache_values")


def combined_costs(summaries: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The per-document means of `costs.CostMeter.summary`s over several datasets, each weighted by its documents."""
    present = [s for s in summaries if s]
    total = sum(s["documents"] for s in present)
    if not total:
        return None
    mean = {key: sum(s[key] * s["documents"] for s in present) / total for key in COST_FIELDS}
    return {"documents": total, "compress_ms": round(mean["compress_ms"], 3), "positions": round(mean["positions"], 1),
            "stored_values": round(mean["stored_values"]), "cache_values": round(mean["cache_values"])}


def _cost_line(cost: dict[str, Any] | None) -> list[str]:
    if not cost:
        return []
    return [f"- per document ({cost['documents']} prepared): compressed in {cost['compress_ms']:.1f} ms, "
            f"{cost['positions']:.0f} decoder positions, {kib(cost['stored_values']):.1f} KiB kept and "
            f"{kib(cost['cache_values']):.1f} KiB of decoder cache at bf16 (`evaluation/costs.py`)"]


COST_HEADER = ["ms / doc", "positions / doc", "KiB kept / doc", "KiB cache / doc"]


def cost_cells(cost: dict[str, Any] | None) -> list[str]:
    if not cost:
        return ["-"] * len(COST_HEADER)
    return [f"{cost['compress_ms']:.1f}", f"{cost['positions']:.0f}", f"{kib(cost['stored_values']):.1f}",
            f"{kib(cost['cache_values']):.1f}"]


def comparison_table(
    runs: Sequence[dict[str, Any]],
    in_domain: Sequence[str] = IN_DOMAIN,
    out_of_domain: Sequence[str] = OUT_OF_DOMAIN,
    title: str = "QA accuracy (EM / F1)",
    costs: bool = False,
) -> str:
    """Methods as rows, datasets as columns (EM / F1), with in-domain and out-of-domain averages;
    with `costs`, what each method's compressed form of a document costs (`costs.py`; "-" for results
    files written before it was measured)."""
    names: list[str] = []
    for run in runs:
        names.extend(n for n in run["datasets"] if n not in names)
    ordered = [n for n in (*in_domain, *out_of_domain) if n in names] + [
        n for n in names if n not in in_domain and n not in out_of_domain
    ]
    groups = [("in-domain avg", [n for n in in_domain if n in names]), ("OOD avg", [n for n in out_of_domain if n in names])]
    groups = [(label, members) for label, members in groups if members]
    header = ["method", "params", *ordered, *(label for label, _ in groups), *(COST_HEADER if costs else [])]
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|---" * 2 + "|---:" * (len(header) - 2) + "|"]
    for run in runs:
        cells = [run_label(run), _params(run)]
        for name in ordered:
            r = run["datasets"].get(name)
            cells.append(f"{r['em']:.2f} / {r['f1']:.2f}" if r else "-")
        for _, members in groups:
            em, f1 = (dataset_mean(run["datasets"], members, metric) for metric in ("em", "f1"))
            cells.append("-" if em is None else f"{em:.2f} / {f1:.2f}")
        if costs:
            cells += cost_cells(run.get("cost"))
        lines.append("| " + " | ".join(cells) + " |")
    if costs:
        lines += ["", "Per document, over every document each run prepared: the time to compress it, the positions "
                  "the decoder reads for it, the numbers kept and the decoder's cache once read, in KiB at bf16 "
                  "(a full-context row keeps the context's own embeddings)."]
    lines += ["", "Sources:"]
    for run in runs:
        env = run.get("environment", {})
        count = {n: r["count"] for n, r in run["datasets"].items()}
        lines.append(
            f"- {run_label(run)}: {env.get('device', '?')}, commit {env.get('commit', '?')}, {env.get('date', '?')}, "
            f"questions {count}"
        )
    return "\n".join(lines) + "\n"


def dataset_mean(scores: dict[str, Any], members: Sequence[str], metric: str) -> float | None:
    """The unweighted mean of `metric` over the datasets `members`, or None unless all were evaluated."""
    present = [scores[m][metric] for m in members if m in scores]
    return sum(present) / len(present) if present and len(present) == len(members) else None


def _params(run: dict[str, Any]) -> str:
    count = run["method"].get("trainable_parameters")
    return f"{count / 1e6:.2f}M" if count else "0"
