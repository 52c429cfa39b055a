"""One table and one plot of per-question serving cost across several `comprexit bench` runs.

Each bench run is best made at one serving length (a run sizes every static cache for its
longest row), on one device, at one batch size; the sweep puts those runs side by side so that
the ratios against the targets are read from the committed files, not copied by hand.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from ..errors import InputError
from ..figures import pyplot, save_figure
from .runner import serving_paths
from .serving import MODES

TARGETS = {"c_over_a": 3.0, "c_over_b": 1.0}  # issue 7: (c) 3x faster than (a), no slower than (b)
MODE_LABELS = {"a_full_context": "(a) full context", "b_prefix_cache": "(b) prefix cache", "c_slots": "(c) slots"}


def load_bench(path: str | Path) -> dict:
    """A results file written by `comprexit bench`, or a clear error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such bench results file")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not JSON ({error})") from error
    if not isinstance(results, dict) or not isinstance(results.get("serving"), list) or "environment" not in results:
        raise InputError(f"{path}: not a `comprexit bench` results file (no 'serving' rows)")
    return results


def serving_sweep(paths: list[str | Path], decode: list[str] | None = None) -> dict:
    """Every serving row of the given bench files, one record per decode path (all, or those in `decode`)."""
    if not paths:
        raise InputError("give at least one bench results file")
    rows, sources = [], []
    for path in paths:
        results = load_bench(path)
        env = results["environment"]
        sources.append({"file": str(path), "device": env["device"], "commit": env["commit"], "date": env["date"],
                        "batch": results["settings"]["batch"], "dtype": results["backbone"]["dtype"]})
        for row in results["serving"]:
            for name, costs in serving_paths(row).items():
                if decode and name not in decode:
                    continue
                rows.append({
                    "device": env["device"], "context_tokens": row["context_tokens"], "batch": row["batch"],
                    "new_tokens": row["new_tokens"], "decode": name,
                    **{f"{mode}_seconds_per_question": costs[f"{mode}_seconds_per_question"] for mode in MODES},
                    "speedup_c_over_a": costs["speedup_c_over_a"], "speedup_c_over_b": costs["speedup_c_over_b"],
                    "source": str(path),
                })
    if not rows:
        wanted = f" on decode path(s) {', '.join(decode)}" if decode else ""
        raise InputError(f"no serving rows{wanted} in {', '.join(map(str, paths))}")
    rows.sort(key=lambda r: r["decode"])  # stable: within a decode path, the files in the order given
    return {"rows": rows, "sources": sources, "targets": TARGETS}


def sweep_markdown(sweep: dict, title: str) -> str:
    lines = [f"# {title}", "",
             "Per question, each batch decoding exactly the stated number of new tokens; (c) vs (a) and (c) vs (b) "
             f"are speed-ups measured in the same run (targets: {TARGETS['c_over_a']:g}x and {TARGETS['c_over_b']:g}x; "
             "a ratio at or above its target is in bold).", "",
             "| decode | device | batch | context tokens | new tokens | (a) full context | (b) prefix cache | (c) slots "
             "| (c) vs (a) | (c) vs (b) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in sweep["rows"]:
        times = " | ".join(f"{1000 * row[f'{mode}_seconds_per_question']:.1f} ms" for mode in MODES)
        ratios = " | ".join(_ratio(row[f"speedup_{key}"], target) for key, target in TARGETS.items())
        lines.append(f"| {row['decode']} | {row['device']} | {row['batch']} | {row['context_tokens']} "
                     f"| {row['new_tokens']} | {times} | {ratios} |")
    lines += ["", "Sources:"]
    lines += [f"- {s['file']}: {s['device']}, {s['dtype']}, batch {s['batch']}, commit {s['commit']}, {s['date']}"
              for s in sweep["sources"]]
    return "\n".join(lines) + "\n"


def _ratio(value: float, target: float) -> str:
    text = f"{value:.2f}x"
    return f"**{text}**" if value >= target else text


def plot_sweep(sweep: dict, path: Path, title: str) -> Path | None:
    """Per-question time against context length (one panel per new-token count), and the ratios."""
    plt = pyplot()
    if plt is None:
        return None
    from matplotlib.ticker import FuncFormatter, NullFormatter

    rows = sweep["rows"]
    contexts = sorted({r["context_tokens"] for r in rows})

    def plain_axes(panel) -> None:  # 512, 2048, 8192 rather than powers of two; 3, 10, 30 ms rather than 10^x
        panel.set_xscale("log", base=2)
        panel.set_xticks(contexts, [str(c) for c in contexts])
        panel.xaxis.set_minor_formatter(NullFormatter())
        panel.set_xlabel("context tokens")
        if panel.get_yscale() == "log":
            panel.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            panel.yaxis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:g}"))

    new_tokens = sorted({r["new_tokens"] for r in rows})
    series = sorted({(r["decode"], r["device"], r["batch"]) for r in rows})
    fig, axes = plt.subplots(1, len(new_tokens) + 1, figsize=(5.2 * (len(new_tokens) + 1), 4.3))
    markers = "osD^v<>"
    for panel, count in zip(axes, new_tokens):
        for index, key in enumerate(series):
            points = sorted((r for r in rows if (r["decode"], r["device"], r["batch"]) == key
                             and r["new_tokens"] == count), key=lambda r: r["context_tokens"])
            if not points:
                continue
            for colour, mode in enumerate(MODES):
                panel.plot([p["context_tokens"] for p in points],
                           [1000 * p[f"{mode}_seconds_per_question"] for p in points],
                           marker=markers[index % len(markers)], color=f"C{colour}",
                           linestyle="-" if index == 0 else "--",
                           label=f"{MODE_LABELS[mode]}; {_series_label(key)}")
        panel.set_yscale("log")
        plain_axes(panel)
        panel.set_ylabel("milliseconds per question")
        panel.set_title(f"{count} new tokens")
        panel.legend(fontsize=6)
    ratio_panel = axes[-1]
    for index, key in enumerate(series):
        for count in new_tokens:
            points = sorted((r for r in rows if (r["decode"], r["device"], r["batch"]) == key
                             and r["new_tokens"] == count), key=lambda r: r["context_tokens"])
            if points:
                ratio_panel.plot([p["context_tokens"] for p in points], [p["speedup_c_over_a"] for p in points],
                                 marker=markers[index % len(markers)], linestyle="-" if count == new_tokens[0] else ":",
                                 label=f"(c) vs (a); {_series_label(key)}; {count} new")
    ratio_panel.axhline(TARGETS["c_over_a"], color="grey", linestyle="--", linewidth=1, label="3x target")
    ratio_panel.axhline(1.0, color="black", linewidth=0.8)
    plain_axes(ratio_panel)
    ratio_panel.set_ylabel("speed-up of (c) over (a)")
    ratio_panel.set_title("(c) vs (a)")
    ratio_panel.legend(fontsize=6)
    return save_figure(fig, path, title)


def _series_label(key: tuple[str, str, int]) -> str:
    decode, device, batch = key
    return f"{decode}, {device.replace('NVIDIA ', '').replace(' 80GB HBM3', '')}, batch {batch}"


def write_sweep(sweep: dict, output: Path, title: str) -> list[Path]:
    from ..evaluation.report import current_commit

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    combined = {"commit": current_commit(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    output.write_text(json.dumps({"title": title, "combined_on": combined, **sweep}, indent=2) + "\n")
    markdown = output.with_suffix(".md")
    markdown.write_text(sweep_markdown(sweep, title) + f"\nCombined with commit {combined['commit']} on {combined['date']}.\n")
    written = [output, markdown]
    plot = plot_sweep(sweep, output.with_suffix(".png"), title)
    if plot:
        written.append(plot)
    return written
