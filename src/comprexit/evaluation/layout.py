"""The comparison in the layout of the paper's tables: methods at 4x, compression ratios, ablations.

Each row is one `comprexit eval` results file. What a row is (method, ratio, ablation) is read
from the file itself; trainable parameters too. The training time comes from the training
runs the eval recorded (`training`, see `training_lineage`) or from runs named on the command
line for weights evaluated outside their run folder (the packaged compressor).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..figures import pyplot, save_figure
from .report import COST_HEADER, IN_DOMAIN, OUT_OF_DOMAIN, cost_cells, dataset_mean, run_label

ABLATION_TITLES = {
    "wo-allocation": "w/o allocation (attention per window)",
    "middle-layer": "middle layer only",
    "last-layer": "last layer only",
    "embedding-only": "embedding layer only",
}


@dataclass
class Row:
    results: dict[str, Any]
    method: str
    ratio: int | None
    ablation: str | None
    training: list[dict[str, Any]]

    @property
    def label(self) -> str:
        return run_label(self.results)

    @property
    def trained(self) -> bool:
        return self.results["method"].get("trainable_parameters") is not None


def describe(results: dict[str, Any], training: list[dict[str, Any]] | None = None) -> Row:
    from ..methods.comprexit import ablation_of

    method = results["method"]
    config = method.get("config") or {}
    name = method.get("method", "?")
    ratio = config.get("ratio", method.get("ratio"))
    ablation = ablation_of(config, results["backbone"]["num_layers"]) if name == "comprexit" else None
    return Row(results, name, ratio, ablation, results.get("training") or training or [])


def paper_sections(rows: Sequence[Row]) -> list[tuple[str, list[Row]]]:
    """The paper's tables over `rows`: Table 1 (every method at 4x), Table 2 (the methods run at
    other ratios, every ratio), Table 4 (full ComprExIT at 4x beside its ablations); empty ones left out."""
    at_4x = [r for r in rows if r.ratio in (None, 4) and r.ablation is None]
    ratio_methods = {r.method for r in rows if r.ratio not in (None, 4)}
    by_ratio = sorted((r for r in rows if r.method in ratio_methods and r.ablation is None),
                      key=lambda r: (r.method, r.ratio or 0))
    full = [r for r in at_4x if r.method == "comprexit"]
    ablations = [r for r in rows if r.ablation is not None]
    ablations.sort(key=lambda r: list(ABLATION_TITLES).index(r.ablation) if r.ablation in ABLATION_TITLES else 99)
    sections = [("Table 1: every method at 4x", at_4x), ("Table 2: compression ratios", by_ratio),
                ("Table 4: ablations of ComprExIT (4x)", full + ablations if ablations else [])]
    return [(heading, members) for heading, members in sections if members]


def paper_layout(rows: Sequence[Row], title: str, notes: Sequence[str] = ()) -> str:
    """Three sections as in the paper: Table 1 (every method at 4x), Table 2 (ratios), Table 4 (ablations)."""
    lines = [f"# {title}", ""]
    for heading, members in paper_sections(rows):
        lines += _section(heading, members)
    lines += ["Columns: EM / F1 per dataset (first questions of each file, see Sources); averages are "
              "unweighted over the datasets. Trainable parameters as counted by the method. Training time: "
              "seconds of optimisation per phase (NTP + SFT), without loading and validation. Where measured, "
              "per document: the time to compress it, the positions the decoder reads for it, the numbers kept and "
              "the decoder's cache once read, in KiB at bf16 (`evaluation/costs.py`)."]
    lines += [f"{note}" for note in notes]
    lines += ["", "Sources:"]
    for row in rows:
        env = row.results.get("environment", {})
        counts = {n: r["count"] for n, r in row.results["datasets"].items()}
        phases = "; ".join(f"{p['phase']} {p['steps']} steps {p['train_seconds']:.0f} s on {p.get('device') or '?'}"
                           for p in row.training)
        lines.append(f"- {row.label}: eval on {env.get('device', '?')}, commit {env.get('commit', '?')}, "
                     f"{env.get('date', '?')}, questions {counts}" + (f"; training: {phases}" if phases else ""))
    return "\n".join(lines) + "\n"


def _section(heading: str, rows: Sequence[Row]) -> list[str]:
    datasets = [*IN_DOMAIN, *OUT_OF_DOMAIN]
    costs = any(row.results.get("cost") for row in rows)  # files written before costs were measured have none
    header = ["method", "ratio", "trainable params", "training time", *datasets, "in-domain avg", "OOD avg",
              *(COST_HEADER if costs else [])]
    lines = [f"## {heading}", "", "| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for row in rows:
        scores = row.results["datasets"]
        cells = [_name(row), f"{row.ratio}x" if row.ratio else "-", _parameters(row), _training_time(row)]
        cells += [f"{scores[d]['em']:.2f} / {scores[d]['f1']:.2f}" if d in scores else "-" for d in datasets]
        cells += [_average(scores, IN_DOMAIN), _average(scores, OUT_OF_DOMAIN)]
        cells += cost_cells(row.results.get("cost")) if costs else []
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _name(row: Row) -> str:
    if row.ablation:
        return f"{row.label}: {ABLATION_TITLES.get(row.ablation, row.ablation)}"
    return row.label


def _parameters(row: Row) -> str:
    count = row.results["method"].get("trainable_parameters")
    if count is None:
        return "0"
    return f"{count / 1e6:.2f}M" if count >= 1e5 else f"{count:,}"


def _training_time(row: Row) -> str:
    if not row.trained:
        return "-"
    if not row.training:
        return "?"
    minutes = sum(p["train_seconds"] for p in row.training) / 60
    phases = "+".join(p["phase"] for p in row.training)
    return f"{minutes:.1f} min ({phases})"


def _average(scores: dict[str, Any], members: Sequence[str]) -> str:
    em, f1 = dataset_mean(scores, members, "em"), dataset_mean(scores, members, "f1")
    return "-" if em is None else f"{em:.2f} / {f1:.2f}"


def plot_layout(sections: Sequence[tuple[str, Sequence[Row]]], output: str | Path, title: str = "") -> Path | None:
    """One panel per table: in-domain and OOD average F1 of every row as paired bars, the
    full-context bound (Table 1's zero-shot row) as a line in each.

    Returns the PNG path, or None without matplotlib (an optional extra) or rows to draw.
    """
    plt = pyplot()
    if plt is None:
        return None
    panels = [(heading, _averages(members)) for heading, members in sections]
    panels = [(heading, drawn) for heading, drawn in panels if drawn]
    if not panels:
        return None
    bound = next((d for _, drawn in panels for d in drawn if d[0].method == "zero-shot"), None)
    heights = [len(drawn) for _, drawn in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 0.45 * sum(heights) + 1.2 * len(panels) + 0.5),
                             sharex=True, squeeze=False, gridspec_kw={"height_ratios": heights})
    for ax, (heading, drawn) in zip(axes[:, 0], panels, strict=True):
        positions = range(len(drawn))
        ax.barh([p - 0.2 for p in positions], [d[1] for d in drawn], height=0.4, color="C0", label="in-domain avg F1")
        ax.barh([p + 0.2 for p in positions], [d[2] for d in drawn], height=0.4, color="C1", label="OOD avg F1")
        if bound is not None:
            ax.axvline(bound[1], color="C0", linestyle="--", linewidth=1, label="full-context bound, in-domain")
            ax.axvline(bound[2], color="C1", linestyle="--", linewidth=1, label="full-context bound, OOD")
        ax.set_yticks(list(positions), [_name(d[0]) + (f" ({d[0].ratio}x)" if d[0].ratio not in (None, 4) else "")
                                        for d in drawn], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(heading, fontsize=9, loc="left")
    axes[0, 0].legend(fontsize=7, loc="lower right")
    axes[-1, 0].set_xlabel("F1")
    return save_figure(fig, output, title, dpi=120, title_size=9)


def _averages(rows: Sequence[Row]) -> list[tuple[Row, float, float]]:
    """(row, in-domain average F1, OOD average F1) of the rows that have both."""
    drawn = [(r, dataset_mean(r.results["datasets"], IN_DOMAIN, "f1"), dataset_mean(r.results["datasets"], OUT_OF_DOMAIN, "f1"))
             for r in rows]
    return [d for d in drawn if d[1] is not None and d[2] is not None]
