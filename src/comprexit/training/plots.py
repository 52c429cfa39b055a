"""Learning curves of a run, from its metrics.jsonl, as one PNG."""

from __future__ import annotations

import json
from pathlib import Path

from ..figures import pyplot, save_figure


def read_metrics(path: Path) -> list[dict]:
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def plot_run(metrics_path: Path, output: Path, title: str = "") -> Path | None:
    """Training loss, validation loss and the share of the context gap closed, against steps."""
    plt = pyplot()
    if plt is None:
        return None
    rows = read_metrics(metrics_path)
    train = [r for r in rows if r.get("kind") == "train"]
    val = [r for r in rows if r.get("kind") == "validation"]
    if not train and not val:
        return None
    fig, axes = plt.subplots(1, 3 if any("f1" in r for r in val) else 2, figsize=(14, 4))
    ax = axes[0]
    for key in ("ce", "kl", "ae", "loss"):
        points = [(r["step"], r[key]) for r in train if key in r]
        if points:
            ax.plot(*zip(*points), label=f"train {key}", alpha=0.8)
    points = [(r["step"], r["ce"]) for r in val if "ce" in r]
    if points:
        ax.plot(*zip(*points), "o-", label="validation ce")
    for key in _long_keys(val, "ce@"):  # long NTP validation, one line per length
        ax.plot(*zip(*[(r["step"], r[key]) for r in val if key in r]), "s:", label=f"validation {key}")
    bounds = next((r for r in rows if r.get("kind") == "bounds"), None)
    if bounds:
        ax.axhline(bounds["ce_full_context"], color="green", ls="--", lw=1, label="full context (frozen)")
        ax.axhline(bounds["ce_no_context"], color="red", ls="--", lw=1, label="no context (frozen)")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy per token")
    ax.legend(fontsize=7)
    ax = axes[1]
    points = [(r["step"], r["gap_closed"]) for r in val if "gap_closed" in r]
    if points:
        ax.plot(*zip(*points), "o-")
    ax.set_xlabel("step")
    ax.set_ylabel("share of context gap closed (validation)")
    ax.set_ylim(min([0.0] + [p[1] for p in points]), max([1.0] + [1.05 * p[1] for p in points]))  # past 100%: SFT can pass the full-context model
    if len(axes) > 2:
        ax = axes[2]
        ax.plot(*zip(*[(r["step"], r["f1"]) for r in val if "f1" in r]), "o-", label="validation F1")
        for key in _long_keys(val, "f1@"):  # distractor SFT validation, one line per length
            ax.plot(*zip(*[(r["step"], r[key]) for r in val if key in r]), "s:", label=f"validation {key}")
        if bounds and "f1_full_context" in bounds:
            ax.axhline(bounds["f1_full_context"], color="green", ls="--", lw=1, label="zero-shot full context")
        ax.set_xlabel("step")
        ax.set_ylabel("F1 (held-out train questions)")
        ax.legend(fontsize=7)
    return save_figure(fig, output, title)


def _long_keys(rows: list[dict], prefix: str) -> list[str]:
    """The per-length validation keys (`ce@2048`, ...) found in the rows, shortest length first."""
    keys = {k for r in rows for k in r if k.startswith(prefix) and k[len(prefix):].isdigit()}
    return sorted(keys, key=lambda k: int(k[len(prefix):]))


def plot_runs(runs: dict[str, Path], examples_per_step: dict[str, int], output: Path, title: str = "") -> Path | None:
    """Training loss of several runs against training examples seen: do runs of one recipe agree?

    runs: name -> metrics.jsonl; examples_per_step: name -> the run's global batch.
    """
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, path in runs.items():
        train = [r for r in read_metrics(path) if r.get("kind") == "train"]
        if train:
            ax.plot([r["step"] * examples_per_step[name] for r in train], [r["loss"] for r in train], ".-", label=name)
    ax.set_xlabel("training examples seen")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=8)
    return save_figure(fig, output, title)
