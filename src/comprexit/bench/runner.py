"""`comprexit bench`: run the compression and serving measurements and write results + a plot."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..decoding import Decoder, EagerDecoder, GraphDecoder, StaticDecoder
from ..errors import ConfigError
from ..evaluation.report import environment
from ..figures import pyplot, save_figure
from ..reader import Reader
from .compression import compression_cost
from .serving import MODES, interactive_ask, serving_costs, serving_prompts
from .steps import STEPS, WARMUP, generate_step_seconds, step_profile
from .trace import trace_markdown, trace_question_batches

CACHE_ROUNDING = 256
NO_STOPS = ()  # every timed batch decodes exactly its stated number of new tokens


def _eager(backbone, max_cache_len: int, settings: "BenchSettings") -> Decoder:
    return EagerDecoder(backbone, stops=NO_STOPS)


def _compiled(decoder_class):
    def build(backbone, max_cache_len: int, settings: "BenchSettings") -> Decoder:
        return decoder_class.compiled(backbone, max_cache_len, settings.decode_compile_mode, settings.decode_backend,
                                      stops=NO_STOPS)

    return build


# serving decode paths: name -> decoder for a backbone and one static cache length
DECODERS = {"eager": _eager, "static": _compiled(StaticDecoder), "graph": _compiled(GraphDecoder)}
DECODE_PATHS = tuple(DECODERS)


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
    # serving decode paths: "eager" (dynamic cache), "static" (static caches, decode step compiled by
    # generate), "graph" (static caches, our own loop: compiled question prefill and decode steps)
    decode: list[str] = field(default_factory=lambda: ["eager"])
    decode_compile_mode: str = "reduce-overhead"
    decode_backend: str = "inductor"
    step_profile: bool = True
    trace: bool = False  # torch.profiler around one warm (c) batch per decode path, first length


def default_decode_paths(device: torch.device) -> list[str]:
    """Every path on a GPU; eager only on a CPU, where compiling costs minutes and rarely pays."""
    return list(DECODE_PATHS) if device.type == "cuda" else ["eager"]


def serving_cache_length(reader: Reader, settings: BenchSettings, slots: bool = False) -> int:
    """One static cache length for every serving row, so each batch size compiles once: the longest
    (a) row, `[BOS] + context + prompt + new tokens` (or the step profile's positions), rounded up;
    with `slots`, the longest (c) row, `[BOS] + slots + prompt + new tokens`."""
    prompt = max(len(p) for p in serving_prompts(reader, settings.batch))
    tail = max(prompt + max(settings.new_tokens), STEPS + WARMUP)
    longest = max(settings.serve_lengths)
    read = (reader.compressor.config.reader_tokens + reader.compressor.num_slots(longest)) if slots else longest
    need = len(reader.backbone.bos_ids) + read + tail
    return -(-need // CACHE_ROUNDING) * CACHE_ROUNDING


def serving_decoders(reader: Reader, settings: BenchSettings, slots: bool = False) -> dict[str, Decoder]:
    """Decode path name -> its decoder, none stopping early. With `slots`, the decoders (c) reads its
    slots through: caches sized for `[BOS] + slots`, not for the whole context (a) and (b) need,
    because a compiled step attends over the whole static cache, masked positions included."""
    unknown = sorted(set(settings.decode) - set(DECODE_PATHS))
    if unknown or not settings.decode:
        raise ConfigError(f"decode paths must be among {DECODE_PATHS}, got {settings.decode}")
    length = serving_cache_length(reader, settings, slots)
    return {name: DECODERS[name](reader.backbone, length, settings) for name in settings.decode}


def _compile_counters() -> dict[str, int]:
    """Graphs dynamo compiled and graphs inductor ran without CUDA graphs, so far in this process: a
    recompiling or graph-skipping static path shows here before it shows in the timings."""
    from torch._dynamo.utils import counters

    return {"compiled_graphs": int(counters["stats"]["unique_graphs"]),
            "cudagraph_skips": int(counters["inductor"]["cudagraph_skips"])}


def run_bench(reader: Reader, settings: BenchSettings, progress=print, trace_files: Path | None = None) -> dict:
    """All measurements; with `settings.trace`, Chrome traces go beside `trace_files` (the results file)."""
    results: dict = {
        "settings": asdict(settings),
        "backbone": {**reader.backbone.identity.to_dict(), "dtype": str(reader.backbone.dtype).replace("torch.", ""),
                     "attention": reader.backbone.model.config._attn_implementation},
        "compressor": {"name": reader.compressor_name, "config": reader.compressor.config.to_dict(),
                       "parameters": reader.compressor.parameter_count()},
        "environment": environment(reader.backbone.device),
        "compression": [],
        "serving": [],
        "step_profile": [],
    }
    decoders, slot_decoders = serving_decoders(reader, settings), serving_decoders(reader, settings, slots=True)
    results["decode"] = {name: d.describe() for name, d in decoders.items()}
    for name, decoder in slot_decoders.items():
        if "max_cache_len" in decoder.describe():
            results["decode"][name]["slots_max_cache_len"] = decoder.describe()["max_cache_len"]
    for tokens, count in settings.compress_sizes:
        progress(f"compression {tokens} x {count}")
        results["compression"].append(compression_cost(reader.backbone, reader.compressor, tokens, count, settings.repeats,
                                                        settings.compile_mode))
    before = _compile_counters()
    for length in settings.serve_lengths:
        for new_tokens in settings.new_tokens:
            progress(f"serving {length} tokens, batch {settings.batch}, {new_tokens} new tokens, "
                     f"decode {'+'.join(decoders)}")
            results["serving"].append(
                serving_costs(reader, length, settings.batch, new_tokens, max(1, settings.repeats // 2), decoders,
                              slot_decoders)
            )
        if settings.step_profile:
            progress(f"one decode step over {length} tokens, batch {settings.batch}")
            results["step_profile"].append(step_profile(reader.backbone, length, settings.batch, decoders))
        if settings.trace and "trace" not in results:
            progress(f"tracing one (c) batch per decode path over {length} tokens")
            results["trace"] = trace_question_batches(reader, length, settings.batch, settings.new_tokens[0],
                                                      slot_decoders, trace_files)
    for row in results["step_profile"]:
        row["generate_step_seconds"] = {
            name: generate_step_seconds(results["serving"], row["context_tokens"], name) for name in decoders
        }
    for name, decoder in decoders.items():
        if decoder.describe()["compiled"]:
            results["decode"][name]["compile_warmup_seconds"] = compile_warmup_seconds(results["serving"], name)
            results["decode"][name].update({k: v - before[k] for k, v in _compile_counters().items()})
    if settings.ask_document_tokens:
        progress(f"interactive ask over a {settings.ask_document_tokens}-token document")
        text = _document(reader, settings.ask_document_tokens)
        from .serving import QUESTIONS

        results["interactive_ask"] = interactive_ask(reader, text, QUESTIONS[: settings.ask_questions])
    return results


def compile_warmup_seconds(rows: list[dict], path: str) -> float:
    """What first calls cost beyond the steady state, summed over a path's rows (compilation and
    CUDA-graph recording); the medians leave them out."""
    total = 0.0
    for row in rows:
        costs = row["paths"][path]
        for mode, first in costs["first_call_seconds"].items():
            total += max(0.0, first - costs[f"{mode}_batch_seconds"])
    return round(total, 2)


def serving_paths(row: dict) -> dict[str, dict]:
    """A serving row's numbers per decode path (files written before decode paths: eager, at the top level)."""
    return row.get("paths") or {"eager": row}


def decode_paths_of(rows: list[dict]) -> list[str]:
    """The decode paths the serving rows were timed with, in first-seen order."""
    return list(dict.fromkeys(name for row in rows for name in serving_paths(row)))


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
    lines += ["", "## Serving many questions over one document (per question, batch of questions)", ""]
    lines += serving_markdown(results)
    if results.get("trace"):
        lines += trace_markdown(results["trace"])
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


def serving_markdown(results: dict) -> list[str]:
    """The serving tables: per decode path (a), (b), (c) and their ratios; one-time costs; the step profile."""
    rows = results["serving"]
    paths = decode_paths_of(rows)
    lines = [
        "Each batch decodes exactly the stated number of new tokens (no stop tokens). (b) and (c) reuse a cache "
        "computed once per document and batch every question (pads between the cached prefix and the prompts). "
        "Decode paths: eager = transformers' dynamic cache, eager forward; static = static caches, decode step "
        "compiled by generate; graph = static caches decoded by our own loop (decoding/graph.py: question prefill "
        "compiled per length bucket, decode steps compiled with the argmax inside, no wait on the device per step). "
        "First calls, which compile, are kept out of the medians.",
        "",
        "| context tokens | new tokens | " + " | ".join(
            f"(a) {p} | (b) {p} | (c) {p} | (c) vs (a) {p} | (c) vs (b) {p}" for p in paths) + " |",
        "|---:|---:|" + "---:|" * (5 * len(paths)),
    ]
    for row in rows:
        cells = []
        for path in paths:
            costs = serving_paths(row).get(path)
            if costs is None:
                cells += ["-"] * 5
                continue
            cells += [f"{1000 * costs[f'{mode}_seconds_per_question']:.1f} ms" for mode in MODES]
            cells += [f"{costs['speedup_c_over_a']:.2f}x", f"{costs['speedup_c_over_b']:.2f}x"]
        lines.append(f"| {row['context_tokens']} | {row['new_tokens']} | " + " | ".join(cells) + " |")
    agreement = [(row, path) for row in rows for path in paths
                 if path != "eager" and "c_answers_as_eager" in serving_paths(row).get(path, {})]
    if agreement:
        lines += ["", "(c) answers identical to the eager path's, token for token (a compiled path that decodes wrongly "
                  "shows here; in bf16 a row may part where two logits are close): " + "; ".join(
                      f"{row['context_tokens']} tokens, {row['new_tokens']} new, {path} "
                      f"{row['paths'][path]['c_answers_as_eager']}/{row['batch']}" for row, path in agreement) + "."]
    lines += ["", "One-time costs per document: (b) prefill of the context's cache; (c) compression, then the prefill "
              "of the slots' cache (static: a batch-1 static snapshot, copied per question batch).", "",
              "| context tokens | (c) compress | " + " | ".join(f"(b) prefill {p} | (c) slot prefill {p}" for p in paths) + " |",
              "|---:|---:|" + "---:|" * (2 * len(paths))]
    seen = set()
    for row in rows:
        if row["context_tokens"] in seen:
            continue
        seen.add(row["context_tokens"])
        cells = [f"{1000 * row['c_compress_seconds']:.1f} ms"]
        for path in paths:
            costs = serving_paths(row).get(path, {})
            cells += [f"{1000 * costs[k]:.1f} ms" if k in costs else "-" for k in ("b_prefill_seconds", "c_slot_prefill_seconds")]
        lines.append(f"| {row['context_tokens']} | " + " | ".join(cells) + " |")
    for name, decode in results.get("decode", {}).items():
        if decode.get("compiled"):
            compiled = (f"question prefill (padded to a multiple of {decode.get('bucket')} positions) and decode steps "
                        "compiled by our own loop" if decode.get("loop") == "own" else "decode steps compiled by generate")
            sizes = f"{decode['max_cache_len']} positions for every row"
            if decode.get("slots_max_cache_len"):  # files from before (c) had caches of its own
                sizes += f" of (a) and (b), {decode['slots_max_cache_len']} for (c)"
            lines += ["", f"Decode path `{name}`: static caches of {sizes}; "
                      f"{compiled} (`torch.compile`, mode `{decode['compile_mode']}`, backend "
                      f"`{decode['compile_backend']}`); compile warm-up {decode.get('compile_warmup_seconds', 0):.1f} s "
                      f"in all (first calls beyond the steady state); {decode.get('compiled_graphs', '?')} graphs compiled, "
                      f"{decode.get('cudagraph_skips', '?')} CUDA-graph skips."]
    profile = results.get("step_profile") or []
    if profile:
        lines += ["", "## One decode step (median)", "",
                  "Inputs + forward of one step, one new token per row, over a cache of the whole document (graph: "
                  "its whole compiled step, argmax included), against the time per new token in (b) (slope between "
                  "the fewest and most new tokens; generate adds logits processing and stopping checks).", "",
                  "| context tokens | batch | " + " | ".join(f"step {p} | per new token {p}" for p in paths) + " |",
                  "|---:|---:|" + "---:|" * (2 * len(paths))]
        for row in profile:
            cells = []
            for path in paths:
                step, per_token = row["step_seconds"].get(path), row.get("generate_step_seconds", {}).get(path)
                cells += [f"{1000 * v:.2f} ms" if v is not None else "-" for v in (step, per_token)]
            lines.append(f"| {row['context_tokens']} | {row['batch']} | " + " | ".join(cells) + " |")
    return lines


def plot_bench(results: dict, path: Path) -> Path | None:
    plt = pyplot()
    if plt is None:
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
    rows = results["serving"]
    paths = decode_paths_of(rows)
    width = 0.8 / (len(MODES) * len(paths))
    xs = range(len(rows))
    labels = {"a_full_context": "(a) full context", "b_prefix_cache": "(b) prefix cache", "c_slots": "(c) ComprExIT"}
    bar = 0
    for path_index, decode in enumerate(paths):
        for mode_index, mode in enumerate(MODES):
            values = [1000 * serving_paths(r).get(decode, {}).get(f"{mode}_seconds_per_question", 0.0) for r in rows]
            offset = (bar - (len(MODES) * len(paths) - 1) / 2) * width
            ax.bar([x + offset for x in xs], values, width, label=f"{labels[mode]}, {decode}",
                   color=f"C{mode_index}", hatch="//" if path_index else None, alpha=1.0 if path_index == 0 else 0.7)
            bar += 1
    ax.set_xticks(list(xs))
    ax.set_xticklabels([f"{r['context_tokens']} ctx\n{r['new_tokens']} new" for r in rows], fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("milliseconds per question")
    ax.set_title(f"serving, batch {results['settings']['batch']}")
    ax.legend(fontsize=7)
    return save_figure(fig, path, f"{results['backbone']['name']} on {results['environment']['device']}")


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
