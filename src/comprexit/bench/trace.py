"""Where one question batch's time goes: `torch.profiler` around one warm (c) batch per decode path.

One decode step of Gemma-3-270M at batch 8 takes 2-2.6 ms compiled on an H100
(results/bench/h100-graph-2048.md), several times what reading its weights takes, so the time
goes to overhead: kernel launches, Python, host-device waits. A trace
of one batch names it. Each batch is split into regions marked with `record_function`: the
question prefill and the decode steps (the graph path marks them itself; for generate's paths
two of its private methods, `_prefill` and `_optimize_model_for_decode`, are wrapped on the model
instance while tracing, and their regions are missing where a transformers version lacks them).
Per region: its span on the host, the device time of the kernels launched in it, and the top
operators by self CPU time and by kernel time. The Chrome trace of each batch is written next
to the results, gzipped (ui.perfetto.dev opens it as it is).
"""

from __future__ import annotations

import gzip
import shutil
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function

from ..decoding import Decoder
from ..reader import Reader
from .compression import random_contexts
from .serving import serving_prompts
from .timing import synchronize

BATCH, PREFILL, DECODE = "question batch", "question prefill", "decode steps"
REGIONS = (BATCH, PREFILL, DECODE)
TOP = 12


def trace_question_batches(
    reader: Reader, context_tokens: int, batch: int, new_tokens: int,
    decoders: dict[str, Decoder], trace_files: Path | None = None,
) -> dict:
    """Profile one warm (c) batch per decode path; with `trace_files` (the results file), write each
    path's Chrome trace beside it as `<name>.trace-<path>.json.gz`."""
    backbone = reader.backbone
    context = random_contexts(backbone, context_tokens, 1, seed=context_tokens)[0]
    slots = reader.compress_ids(context).prefix().to(backbone.device)
    prompts = serving_prompts(reader, batch)
    result: dict = {"context_tokens": context_tokens, "batch": batch, "new_tokens": new_tokens, "paths": {}}
    for name, decoder in decoders.items():
        cache = decoder.prefill(slots)

        def run(decoder=decoder, cache=cache):
            decoder.cached_answers(cache, prompts, max_new_tokens=new_tokens, exact=False)

        path = None if trace_files is None else trace_files.with_name(f"{trace_files.stem}.trace-{name}.json.gz")
        result["paths"][name] = trace_batch(run, backbone.model, backbone.device, path)
    return result


def trace_batch(run, model, device: torch.device, chrome_trace: Path | None = None) -> dict:
    """Profile `run()` (after two warm calls): wall time, kernel time, and the regions' summaries."""
    for _ in range(2):
        run()
    synchronize(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof, marked_generate(model):
        start = time.perf_counter()
        with record_function(BATCH):
            run()
            synchronize(device)
        wall = time.perf_counter() - start
    events = [e for e in prof.events() if e.device_type == DeviceType.CPU and not e.is_async]
    regions = {}
    for name in REGIONS:
        spans = [e for e in events if e.name == name]
        if spans:
            regions[name] = summarize(spans, events)
    summary = {"wall_seconds": wall, "cuda_kernel_seconds": regions[BATCH]["cuda_kernel_seconds"], "regions": regions}
    if chrome_trace is not None:
        write_chrome_trace(prof, chrome_trace)
        summary["chrome_trace"] = chrome_trace.name
    return summary


def write_chrome_trace(prof, path: Path) -> None:
    """The profile as a gzipped Chrome trace (an eager batch's trace is tens of MB of JSON)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = path.with_suffix("")  # name.json.gz -> name.json
    prof.export_chrome_trace(str(plain))
    with open(plain, "rb") as source, gzip.open(path, "wb") as target:
        shutil.copyfileobj(source, target)
    plain.unlink()


def summarize(spans: list, events: list) -> dict:
    """A region (all its `record_function` spans together): host span, kernel time, top operators.

    An operator belongs to the region when its host interval lies inside a span on the same
    thread; kernels count for the operator that launched them (CUDA graph replays: the launch).
    """
    cpu: dict[str, list] = defaultdict(lambda: [0.0, 0])
    kernels: dict[str, list] = defaultdict(lambda: [0.0, 0])
    for span in spans:
        start, end = span.time_range.start, span.time_range.end
        for event in events:
            if event is span or event.thread != span.thread:
                continue
            if event.time_range.start < start or event.time_range.end > end:
                continue
            cpu[event.name][0] += event.self_cpu_time_total
            cpu[event.name][1] += 1
            for kernel in event.kernels:
                kernels[kernel.name][0] += kernel.duration
                kernels[kernel.name][1] += 1
    return {
        "calls": len(spans),
        "span_seconds": sum(s.time_range.elapsed_us() for s in spans) / 1e6,
        "cuda_kernel_seconds": sum(total for total, _ in kernels.values()) / 1e6,
        "top_self_cpu": _top(cpu),
        "top_cuda_kernels": _top(kernels),
    }


def _top(totals: dict[str, list]) -> list[dict]:
    ranked = sorted(totals.items(), key=lambda item: -item[1][0])[:TOP]
    return [{"name": name, "seconds": micro / 1e6, "calls": calls} for name, (micro, calls) in ranked if micro > 0]


@contextmanager
def marked_generate(model):
    """Mark generate's question prefill and its decode loop as profiler regions while inside.

    Wraps two private methods of transformers' GenerationMixin on this model instance only
    (instance attributes that shadow them, deleted on exit); the graph path marks its own.
    """
    wrapped = []
    if hasattr(model, "_prefill"):
        original_prefill = model._prefill

        def marked_prefill(*args, **kwargs):
            with record_function(PREFILL):
                return original_prefill(*args, **kwargs)

        model._prefill = marked_prefill
        wrapped.append("_prefill")
    if hasattr(model, "_optimize_model_for_decode"):
        original_decode = model._optimize_model_for_decode

        @contextmanager
        def marked_decode(*args, **kwargs):
            with record_function(DECODE), original_decode(*args, **kwargs):
                yield

        model._optimize_model_for_decode = marked_decode
        wrapped.append("_optimize_model_for_decode")
    try:
        yield
    finally:
        for name in wrapped:
            delattr(model, name)


def trace_markdown(trace: dict) -> list[str]:
    """The report's section: per decode path, a table of regions, then the top operators of each."""
    lines = ["", f"## Where one (c) question batch goes (torch.profiler; {trace['context_tokens']} context tokens, "
             f"batch {trace['batch']}, {trace['new_tokens']} new tokens)", "",
             "One warm batch per decode path, traced once (the profiler adds its own overhead to the host times). "
             "Span: host time inside the region; kernels: device time of the kernels launched in it (0 on a CPU).", "",
             "| decode path | wall | kernels | prefill span | prefill kernels | decode span | decode kernels | trace |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, path in trace["paths"].items():
        regions = path["regions"]
        cells = []
        for region in (PREFILL, DECODE):
            got = regions.get(region)
            cells += [f"{1000 * got['span_seconds']:.2f} ms", f"{1000 * got['cuda_kernel_seconds']:.2f} ms"] if got else ["-", "-"]
        lines.append(f"| {name} | {1000 * path['wall_seconds']:.2f} ms | {1000 * path['cuda_kernel_seconds']:.2f} ms | "
                     + " | ".join(cells) + f" | {path.get('chrome_trace', '-')} |")
    for name, path in trace["paths"].items():
        for region, got in path["regions"].items():
            if region == BATCH:
                continue
            lines += ["", f"`{name}`, {region}: top operators by self CPU time | by kernel time", "",
                      "| operator | self CPU | calls | kernel | time | calls |", "|---|---:|---:|---|---:|---:|"]
            cpu, cuda = got["top_self_cpu"], got["top_cuda_kernels"]
            for i in range(max(len(cpu), len(cuda))):
                left = (f"{_short(cpu[i]['name'])} | {1000 * cpu[i]['seconds']:.2f} ms | {cpu[i]['calls']}"
                        if i < len(cpu) else " | | ")
                right = (f"{_short(cuda[i]['name'])} | {1000 * cuda[i]['seconds']:.2f} ms | {cuda[i]['calls']}"
                         if i < len(cuda) else " | | ")
                lines.append(f"| {left} | {right} |")
    return lines


def _short(name: str, width: int = 60) -> str:
    name = name.replace("|", "/")
    return name if len(name) <= width else name[: width - 1] + "…"
