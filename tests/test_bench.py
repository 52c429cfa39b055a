"""`comprexit bench` on a tiny random backbone at toy sizes writes a well-formed results file."""

import gzip
import json

import pytest

from comprexit.cli import main

from tiny import save_tiny_backbone, tiny_backbone


def test_bench_writes_results_markdown_and_plot(tmp_path, capsys):
    backbone = save_tiny_backbone("llama", tmp_path / "m")
    out = tmp_path / "bench" / "tiny.json"
    code = main([
        "bench", "--backbone", str(backbone), "--device", "cpu", "--compress-sizes", "64x2,160x1",
        "--serve-lengths", "64,200", "--new-tokens", "3,5", "--batch", "2", "--repeats", "1", "--ask-tokens", "80",
        "-o", str(out),
    ])
    assert code == 0
    results = json.loads(out.read_text())
    assert [(r["tokens"], r["contexts"]) for r in results["compression"]] == [(64, 2), (160, 1)]
    for row in results["compression"]:
        assert row["encoder_seconds"] > 0 and row["compress_seconds"] > 0
        assert set(row["parts_seconds"]) >= {"depth_mixing", "sinkhorn", "width_other", "projector"}
    assert len(results["serving"]) == 4
    for row in results["serving"]:
        assert row["slots"] == -(-row["context_tokens"] // 4)
        for key in ("a_full_context", "b_prefix_cache", "c_slots"):
            assert row[f"{key}_seconds_per_question"] > 0
        memory = row["memory"]
        assert memory["b_kv_cache_bytes"] > memory["c_slot_cache_bytes"] > 0
        assert memory["c_slots_bytes"] == row["slots"] * 32 * 4  # hidden 32, float32
    assert results["interactive_ask"]["context_tokens"] == 80
    assert results["environment"]["commit"] and results["backbone"]["attention"] == "sdpa"
    assert "## Compression cost" in out.with_suffix(".md").read_text() and out.with_suffix(".png").is_file()


def test_bench_times_and_traces_every_decode_path(tmp_path, capsys):
    """The three decode paths in one run; static (compiled by generate) and graph (our own compiled loop)
    with the quick "eager" dynamo backend; one (c) batch of each traced by torch.profiler (CPU activity)."""
    from comprexit.bench.runner import bench_markdown

    backbone = save_tiny_backbone("gemma3-hybrid", tmp_path / "m")
    out = tmp_path / "bench" / "static.json"
    code = main([
        "bench", "--backbone", str(backbone), "--device", "cpu", "--compress-sizes", "64x1", "--serve-lengths", "40,100",
        "--new-tokens", "3,6", "--batch", "2", "--repeats", "1", "--ask-tokens", "0", "--decode", "eager,static,graph",
        "--decode-backend", "eager", "--decode-compile-mode", "default", "--trace", "-o", str(out),
    ])
    assert code == 0
    results = json.loads(out.read_text())
    static = results["decode"]["static"]
    assert static["compiled"] and static["max_cache_len"] == 256 and static["compile_warmup_seconds"] >= 0
    assert static["compiled_graphs"] >= 1 and static["cudagraph_skips"] >= 0
    graph = results["decode"]["graph"]
    assert graph["compiled"] and graph["loop"] == "own" and graph["bucket"] == 64 and graph["max_cache_len"] == 256
    assert static["slots_max_cache_len"] == graph["slots_max_cache_len"] == 256  # (c): 1 + 25 slots + prompt + 6
    for row in results["serving"]:
        assert set(row["paths"]) == {"eager", "static", "graph"}
        for costs in row["paths"].values():
            for mode in ("a_full_context", "b_prefix_cache", "c_slots"):
                assert costs[f"{mode}_seconds_per_question"] > 0 and costs["first_call_seconds"][mode] > 0
            assert costs["speedup_c_over_a"] > 0 and costs["b_prefill_seconds"] > 0
        assert row["a_full_context_batch_seconds"] == row["paths"]["eager"]["a_full_context_batch_seconds"]
        assert all(costs["c_answers_as_eager"] == 2 for costs in row["paths"].values())  # float32: all alike
    assert [r["context_tokens"] for r in results["step_profile"]] == [40, 100]
    for row in results["step_profile"]:
        assert all(row["step_seconds"][path] > 0 for path in ("eager", "static", "graph"))
        assert row["generate_step_seconds"]["static"] is not None and row["generate_step_seconds"]["graph"] is not None
    markdown = out.with_suffix(".md").read_text()
    assert "(c) vs (a) static" in markdown and "## One decode step" in markdown and "compile warm-up" in markdown
    assert "(c) vs (b) graph" in markdown and "compiled by our own loop" in markdown and "40 tokens, 3 new, graph 2/2" in markdown
    trace = results["trace"]
    assert (trace["context_tokens"], trace["batch"], trace["new_tokens"]) == (40, 2, 3)
    assert set(trace["paths"]) == {"eager", "static", "graph"}
    for name, path in trace["paths"].items():
        assert path["wall_seconds"] > 0 and path["cuda_kernel_seconds"] == 0  # no kernels on a CPU
        assert set(path["regions"]) == {"question batch", "question prefill", "decode steps"}
        for region in path["regions"].values():
            assert region["span_seconds"] > 0 and 0 < len(region["top_self_cpu"]) <= 12
            assert all(op["seconds"] > 0 and op["calls"] > 0 for op in region["top_self_cpu"])
        assert path["chrome_trace"] == f"static.trace-{name}.json.gz"
        assert json.loads(gzip.decompress((out.parent / path["chrome_trace"]).read_bytes()))["traceEvents"]
    assert "## Where one (c) question batch goes" in markdown and "`graph`, decode steps" in markdown
    assert markdown == bench_markdown(results)


def test_bench_markdown_reads_results_written_before_decode_paths():
    from pathlib import Path

    from comprexit.bench.runner import bench_markdown

    old = json.loads((Path(__file__).resolve().parents[1] / "results" / "bench" / "h100.json").read_text())
    assert "paths" not in old["serving"][0]
    markdown = bench_markdown(old)
    assert "| 2048 | 20 | 84.2 ms | 73.9 ms | 74.7 ms | 1.13x | 0.99x |" in markdown


def test_bench_refuses_unknown_decode_paths(tmp_path, capsys):
    backbone = save_tiny_backbone("llama", tmp_path / "m")
    code = main(["bench", "--backbone", str(backbone), "--device", "cpu", "--decode", "eager,fast",
                 "-o", str(tmp_path / "x.json")])
    assert code == 2 and "decode paths" in capsys.readouterr().err


def test_bench_refuses_bad_size_lists(tmp_path, capsys):
    code = main(["bench", "--compress-sizes", "512by32", "-o", str(tmp_path / "x.json")])
    assert code == 2 and "bad size list" in capsys.readouterr().err


def _has_cxx() -> bool:
    import shutil

    return any(shutil.which(name) for name in ("g++", "c++", "clang++"))


@pytest.mark.skipif(not _has_cxx(), reason="torch.compile on the CPU needs a C++ compiler (none on PATH)")
def test_compiled_compressor_gives_the_eager_slots():
    """torch.compile (what `bench --compile-mode` times) must not change the result: relative error < 1e-4."""
    import torch

    from comprexit import BackboneIdentity, ComprExIT, ComprExITConfig
    from comprexit.bench.compression import compiled_copy

    identity = BackboneIdentity("toy", "llama", hidden_size=32, num_layers=3, vocab_size=100)
    torch.manual_seed(0)
    eager = ComprExIT(ComprExITConfig(window=16, embedding_skip=True), identity)
    with torch.no_grad():
        eager.projector.net[2].weight.normal_(0, 0.05)
    hidden = torch.randn(2, 40, 4, 32)
    mask = torch.arange(40)[None] < torch.tensor([[40], [23]])
    compiled = compiled_copy(eager, "default")
    with torch.no_grad():
        expected, got = eager(hidden, mask), compiled(hidden, mask)
    assert torch.equal(got.mask, expected.mask)
    assert (got.slots - expected.slots).norm() / expected.slots.norm() < 1e-4


def test_slot_caches_are_sized_for_the_slots_not_the_context():
    """A compiled step attends over its whole static cache: (c) gets caches for `[BOS] + slots`."""
    from comprexit import ComprExIT, ComprExITConfig
    from comprexit.reader import Reader
    from comprexit.bench.runner import BenchSettings, serving_cache_length, serving_decoders

    tiny = tiny_backbone("gemma3-hybrid")
    reader = Reader(tiny, ComprExIT.for_backbone(tiny, ComprExITConfig(window=16)))
    settings = BenchSettings(serve_lengths=[200, 1000], new_tokens=[20], batch=2, decode=["eager", "graph"],
                             decode_backend="eager")
    assert serving_cache_length(reader, settings) == 1280  # 1 + 1000 + prompt + 20, in steps of 256
    assert serving_cache_length(reader, settings, slots=True) == 512  # 1 + 250 slots + prompt + 20
    decoders = serving_decoders(reader, settings, slots=True)
    assert decoders["eager"].describe()["cache"] == "dynamic" and decoders["graph"].describe()["max_cache_len"] == 512
    assert all(decoder.stops == () for decoder in decoders.values())  # every timed batch runs all its new tokens
