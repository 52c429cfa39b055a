"""`comprexit bench-sweep` reads the committed bench runs into one table, and refuses what it cannot read."""

import json
from pathlib import Path

import pytest

from comprexit.bench.sweep import serving_sweep, sweep_markdown
from comprexit.cli import main
from comprexit.errors import InputError

BENCH = Path(__file__).resolve().parents[1] / "results" / "bench"


def test_sweep_rows_carry_each_files_numbers():
    source = json.loads((BENCH / "h200-2048.json").read_text())
    sweep = serving_sweep([BENCH / "h200-2048.json", BENCH / "h200-8192.json"], decode=["graph"])
    assert [(r["context_tokens"], r["new_tokens"]) for r in sweep["rows"]] == [(2048, 20), (2048, 128), (8192, 20), (8192, 128)]
    first = sweep["rows"][0]
    graph = source["serving"][0]["paths"]["graph"]
    assert first["c_slots_seconds_per_question"] == graph["c_slots_seconds_per_question"]
    assert first["speedup_c_over_a"] == graph["speedup_c_over_a"]
    assert {s["commit"] for s in sweep["sources"]} == {source["environment"]["commit"]}
    table = sweep_markdown(sweep, "t")
    # 8192 tokens, 20 new: (c) is more than 3x faster than (a), so the ratio is bold; 2048 tokens is not
    assert f"**{sweep['rows'][2]['speedup_c_over_a']:.2f}x**" in table
    assert f"| {first['speedup_c_over_a']:.2f}x |" in table


def test_sweep_reads_files_from_before_decode_paths_as_eager():
    sweep = serving_sweep([BENCH / "h100.json"])
    assert {r["decode"] for r in sweep["rows"]} == {"eager"}
    assert all(r["a_full_context_seconds_per_question"] > 0 for r in sweep["rows"])


def test_sweep_cli_writes_json_markdown_and_plot(tmp_path, capsys):
    out = tmp_path / "sweep.json"
    code = main(["bench-sweep", "--decode", "graph", "-o", str(out),
                 str(BENCH / "h200-512.json"), str(BENCH / "h100-graph-2048-batch32.json")])
    assert code == 0
    written = json.loads(out.read_text())
    assert {r["batch"] for r in written["rows"]} == {8, 32}
    assert written["combined_on"]["commit"] and written["targets"]["c_over_a"] == 3.0
    assert "| graph | NVIDIA H100 80GB HBM3 | 32 | 2048 | 20 |" in out.with_suffix(".md").read_text()
    assert out.with_suffix(".png").is_file()


@pytest.mark.parametrize("content, message", [
    (None, "no such bench results file"),
    ("{not json", "not JSON"),
    ('{"rows": []}', "not a `comprexit bench` results file"),
])
def test_sweep_refuses_files_it_cannot_read(tmp_path, capsys, content, message):
    path = tmp_path / "x.json"
    if content is not None:
        path.write_text(content)
    assert main(["bench-sweep", "-o", str(tmp_path / "s.json"), str(path)]) == 2
    assert message in capsys.readouterr().err


def test_sweep_names_a_decode_path_no_file_has():
    with pytest.raises(InputError, match="no serving rows on decode path"):
        serving_sweep([BENCH / "cpu-2cores.json"], decode=["graph"])
