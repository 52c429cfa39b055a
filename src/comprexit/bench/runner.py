"""`comprexit bench`: run the compression and serving measurements and write results + a plot."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..evaluation.report import environment
from ..reader import Reader
from .compression import compression_cost
from .serving import interactive_ask, serving_costs


@dataclass
class BenchSettings:
    compress_sizes: list[tuple[int, int]] = field(default_factory=lambda: [(512, 32), (2048, 8), (8192, 2)])
    serve_lengths: list[int] = field(default_factory=lambda: [512, 2048, 8192])
    batch: int = 8
    new_tokens: list[int] = field(default_factory=lambda: [20, 128])
    repeats: int = 5
    ask_document_tokens: int | None = 2000
    ask_questions: int = 4
    compile_mode: str | None = None  # also time the compressor under torch.compile in this mode


def run_bench(reader: Reader, settings: BenchSettings, progress=print) -> dict:
    results: dict = {
        "settings": asdict(settings),
        "backbone": {**reader.backbone.identity.to_dict(), "dtype": str(reader.backbone.dtype).replace("torch.", ""),
                     "attention": reader.backbone.model.config._attn_implementation},
        "compressor": {"name": reader.compressor_name, "config": reader.compressor.config.to_dict(),
                       "parameters": reader.compressor.parameter_count()},
        "environment": environment(reader.backbone.device),
        "compression": [],
        "serving": [],
    }
    for tokens, count in settings.compress_sizes:
        progress(f"compression {tokens} x {count}")
        results["compression"].append(compression_cost(reader.backbone, reader.compressor, tokens, count, settings.repeats,
                                                        settings.compile_mode))
    for length in settings.serve_lengths:
        for new_tokens in settings.new_tokens:
            progress(f"serving {length} tokens, batch {settings.batch}, {new_tokens} new tokens")
            results["serving"].append(serving_costs(reader, length, settings.batch, new_tokens, max(1, settings.repeats // 2)))
    if settings.ask_document_tokens:
        progress(f"interactive ask over a {settings.ask_document_tokens}-token document")
        text = _document(reader, settings.ask_document_tokens)
        from .serving import QUESTIONS

        results["interactive_ask"] = interactive_ask(reader, text, QUESTIONS[: settings.ask_questions])
    return results


def _document(reader: Reader, tokens: int) -> str:
    """Real prose of about `tokens` tokens: the bundled example document, repeated."""
    base = (Path(__file__).resolve().parents[3] / "examples" / "lighthouse.txt")
    text = base.read_text() if base.is_file() else "The lighthouse stands on a granite headland. " * 20
    ids = []
    while len(ids) < tokens:
        ids += reader.backbone.tokenize(text + "\n")
    return reader.backbone.decode(ids[:tokens])


def bench_markdown(results: dict) -> str:
    env, backbone = results["environment"], results["backbone"]
    lines = [
        "# Speed and memory",
        "",
        f"- device: {env['device']}; commit {env['commit']}; {env['date']}",
        f"- backbone: {backbone['name']} ({backbone['dtype']}, {backbone['attention']} attention); "
        f"compressor: {results['compressor']['name']} (ratio {results['compressor']['config']['ratio']}x, "
        f"{results['compressor']['parameters']:,} parameters)",
        "",
        "## Compression cost (median of repeats)",
        "",
        "| tokens x contexts | encoder pass (floor) | encoder + compressor | overhead | depth | Sinkhorn | width other "
        "| projector | peak memory |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["compression"]:
        parts = row["parts_seconds"]
        peak = row.get("peak_memory_compress_bytes")
        lines.append(
            f"| {row['tokens']} x {row['contexts']} | {1000 * row['encoder_seconds']:.1f} ms "
            f"| {1000 * row['compress_seconds']:.1f} ms | {100 * row['overhead_share']:+.1f}% "
            f"| {1000 * parts['depth_mixing']:.1f} ms | {1000 * parts.get('sinkhorn', 0):.1f} ms "
            f"| {1000 * parts['width_other']:.1f} ms | {1000 * parts['projector']:.1f} ms "
            f"| {'-' if peak is None else f'{peak / 2**30:.2f} GiB'} |"
        )
    compiled = [row for row in results["compression"] if row.get("compile_mode")]
    if compiled:
        lines += ["", f"Compiled compressor (`torch.compile`, mode `{compiled[0]['compile_mode']}`; warm-up excluded):", "",
                  "| tokens x contexts | encoder pass | encoder + compiled compressor | overhead | compile warm-up |",
                  "|---|---:|---:|---:|---:|"]
        for row in compiled:
            if "compile_error" in row:
                lines.append(f"| {row['tokens']} x {row['contexts']} | failed: {row['compile_error']} | | | |")
                continue
            lines.append(
                f"| {row['tokens']} x {row['contexts']} | {1000 * row['encoder_seconds']:.1f} ms "
                f"| {1000 * row['compress_compiled_seconds']:.1f} ms | {100 * row['overhead_share_compiled']:+.1f}% "
                f"| {row['compile_warmup_seconds']:.1f} s |"
            )
    lines += [
        "",
        "## Serving many questions over one document (per question, batch of questions)",
        "",
        "Each batch decodes exactly the stated number of new tokens (EOS suppressed). (b) and (c) reuse a cache "
        "computed once per document and batch every question (pads between the cached prefix and the prompts).",
        "",
        "| context tokens | new tokens | (a) full context | (b) prefix cache | (c) ComprExIT slots | (c) vs (a) | (c) vs (b) "
        "| one-time: (b) prefill, (c) compress + slot prefill |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in results["serving"]:
        lines.append(
            f"| {row['context_tokens']} | {row['new_tokens']} | {1000 * row['a_full_context_seconds_per_question']:.1f} ms "
            f"| {1000 * row['b_prefix_cache_seconds_per_question']:.1f} ms | {1000 * row['c_slots_seconds_per_question']:.1f} ms "
            f"| {row['speedup_c_over_a']:.2f}x | {row['speedup_c_over_b']:.2f}x "
            f"| {1000 * row['b_prefill_seconds']:.1f} ms; {1000 * (row['c_compress_seconds'] + row['c_slot_prefill_seconds']):.1f} ms |"
        )
    lines += [
        "",
        "## Memory per document kept for later questions",
        "",
        "| context tokens | (b) KV cache | by layer type | (c) slots | (c) slot-prefix cache | KV cache / slots |",
        "|---:|---:|---|---:|---:|---:|",
    ]
    seen = set()
    for row in results["serving"]:
        if row["context_tokens"] in seen:
            continue
        seen.add(row["context_tokens"])
        m = row["memory"]
        by_type = ", ".join(f"{k}: {v / 2**20:.2f} MiB" for k, v in m["b_kv_cache_bytes_by_layer_type"].items())
        lines.append(
            f"| {row['context_tokens']} | {m['b_kv_cache_bytes'] / 2**20:.2f} MiB | {by_type} "
            f"| {m['c_slots_bytes'] / 2**10:.1f} KiB | {m['c_slot_cache_bytes'] / 2**20:.2f} MiB | {m['kv_cache_over_slots']:.1f}x |"
        )
    ask = results.get("interactive_ask")
    if ask:
        lines += [
            "",
            "## `comprexit ask` as a user runs it",
            "",
            f"A {ask['context_tokens']}-token document compressed to {ask['slots']} slots in "
            f"{ask['compress_seconds']:.2f} s; first question {ask['first_question_seconds']:.2f} s "
            f"(includes reading the slots once), later questions {ask['later_question_seconds_median']:.2f} s each "
            f"(median).",
        ]
    return "\n".join(lines) + "\n"


def plot_bench(results: dict, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    ax = axes[0]
    labels = [f"{r['tokens']}x{r['contexts']}" for r in results["compression"]]
    floor = [1000 * r["encoder_seconds"] for r in results["compression"]]
    ax.bar(labels, floor, label="encoder pass (floor)", color="#999999")
    bottom = list(floor)
    for part, colour in (("depth_mixing", "#1f77b4"), ("sinkhorn", "#ff7f0e"), ("width_other", "#2ca02c"), ("projector", "#d62728")):
        values = [1000 * r["parts_seconds"].get(part, 0.0) for r in results["compression"]]
        ax.bar(labels, values, bottom=bottom, label=part.replace("_", " "), color=colour)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylabel("milliseconds per batch")
    ax.set_title("compression cost")
    ax.legend(fontsize=7)
    ax = axes[1]
    width = 0.27
    rows = results["serving"]
    xs = range(len(rows))
    for offset, (key, label) in enumerate(
        (("a_full_context", "(a) full context"), ("b_prefix_cache", "(b) prefix cache"), ("c_slots", "(c) ComprExIT"))
    ):
        ax.bar([x + (offset - 1) * width for x in xs], [1000 * r[f"{key}_seconds_per_question"] for r in rows], width, label=label)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([f"{r['context_tokens']} ctx\n{r['new_tokens']} new" for r in rows], fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("milliseconds per question")
    ax.set_title(f"serving, batch {results['settings']['batch']}")
    ax.legend(fontsize=7)
    fig.suptitle(f"{results['backbone']['name']} on {results['environment']['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_bench(results: dict, output: Path) -> list[Path]:
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    markdown = output.with_suffix(".md")
    markdown.write_text(bench_markdown(results))
    written = [output, markdown]
    plot = plot_bench(results, output.with_suffix(".png"))
    if plot:
        written.append(plot)
    return written
