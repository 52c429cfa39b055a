"""The paper-layout table: rows sorted into Tables 1, 2 and 4 from what the results files say."""

import json

import pytest

from comprexit.cli import main
from comprexit.evaluation.layout import describe, paper_layout
from comprexit.methods.comprexit import ABLATIONS, ablation_of

from tiny import tiny_backbone


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_every_ablation_is_recognised_from_its_config_alone(name):
    identity = tiny_backbone("llama").identity
    assert ablation_of(ABLATIONS[name](identity), identity.num_layers) == name
    assert ablation_of({"allocation": "transport", "layers": None}, identity.num_layers) is None


def _results(label, method, config=None, params=None, f1=10.0):
    scores = {"em": f1 / 2, "f1": f1, "count": 100}
    return {
        "label": label,
        "method": {"method": method, "config": config or {}, **({"trainable_parameters": params} if params else {})},
        "backbone": {"num_layers": 18},
        "datasets": {d: dict(scores) for d in ("squad_eval", "nq_eval", "drop_ood", "relext_ood")},
        "environment": {"device": "test", "commit": "abc", "date": "today"},
    }


def test_rows_land_in_the_papers_tables():
    runs = [
        _results("zero-shot", "zero-shot"),
        _results("ComprExIT", "comprexit", {"ratio": 4, "allocation": "transport"}, 2_000_000, 30.0),
        _results("ComprExIT 8x", "comprexit", {"ratio": 8, "allocation": "transport"}, 2_000_000),
        _results("ICAE", "icae", {"ratio": 4}, 1_500_000),
        _results("w/o allocation", "comprexit", {"ratio": 4, "allocation": "attention"}, 1_900_000),
    ]
    training = [{"phase": "ntp", "steps": 10, "train_seconds": 60.0}, {"phase": "sft", "steps": 5, "train_seconds": 30.0}]
    rows = [describe(r, training if r["label"] == "ComprExIT" else None) for r in runs]
    table = paper_layout(rows, "t")
    one, two, four = (table.split("## ")[i] for i in (1, 2, 3))
    assert "zero-shot" in one and "| ICAE |" in one and "ComprExIT 8x" not in one and "allocation" not in one
    assert "ComprExIT 8x" in two and "| 8x |" in two and "ICAE" not in two  # ICAE ran at 4x only
    assert "w/o allocation (attention per window)" in four and "| ComprExIT | 4x |" in four
    assert "| 1.5 min (ntp+sft) |" in one  # 90 s of training
    assert "| ICAE | 4x | 1.50M | ? |" in one  # trained, but its training runs are unknown
    assert "15.00 / 30.00" in one  # in-domain average


def test_costs_join_the_papers_tables_where_a_row_measured_them():
    compressed = _results("ComprExIT", "comprexit", {"ratio": 4, "allocation": "transport"}, 2_000_000, 30.0)
    compressed["cost"] = {"documents": 10, "compress_ms": 12.5, "positions": 128.0, "stored_values": 81_920,
                          "cache_values": 1_179_648}
    table = paper_layout([describe(_results("zero-shot", "zero-shot")), describe(compressed)], "t")
    assert "| ms / doc | positions / doc | KiB kept / doc | KiB cache / doc |" in table
    assert "| 12.5 | 128 | 160.0 | 2304.0 |" in table and "| - | - | - | - |" in table  # the zero-shot file has none
    assert "ms / doc" not in paper_layout([describe(_results("zero-shot", "zero-shot"))], "t")


def test_table_command_refuses_a_training_label_that_is_no_row(tmp_path, capsys):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(_results("ICAE", "icae", {"ratio": 4}, 10)))
    code = main(["table", str(path), "--layout", "paper", "--training", f"Nope={tmp_path}"])
    assert code == 2 and "no row's label" in capsys.readouterr().err


def test_relabel_renames_a_row_and_refuses_an_unknown_one(tmp_path, capsys):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(_results("icae", "icae", {"ratio": 4}, 10)))
    assert main(["table", str(path), "--relabel", "icae=ICAE (LoRA)"]) == 0
    assert "| ICAE (LoRA) |" in capsys.readouterr().out
    assert main(["table", str(path), "--relabel", "nope=x"]) == 2


def test_relabel_by_file_picks_one_of_the_rows_sharing_a_label(tmp_path, capsys):
    paths = []
    for ratio in (4, 8):
        path = tmp_path / f"r{ratio}.json"
        path.write_text(json.dumps(_results("ComprExIT", "comprexit", {"ratio": ratio, "allocation": "transport"}, 10)))
        paths.append(str(path))
    assert main(["table", *paths, "--layout", "paper", "--relabel", f"{paths[0]}=ComprExIT (shipped)"]) == 0
    two = capsys.readouterr().out.split("## ")[2]
    assert "| ComprExIT (shipped) | 4x |" in two and "| ComprExIT | 8x |" in two


def test_recorded_training_wins_over_training_named_by_label():
    recorded = [{"phase": "sft", "steps": 5, "train_seconds": 120.0}]
    named = [{"phase": "sft", "steps": 5, "train_seconds": 60.0}]
    run = _results("ComprExIT", "comprexit", {"ratio": 8, "allocation": "transport"}, 10)
    assert describe(dict(run, training=recorded), named).training == recorded
    assert describe(run, named).training == named


def test_paper_layout_writes_its_plot_beside_the_table(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    paths = []
    for label, method, f1 in [("zero-shot", "zero-shot", 20.0), ("ComprExIT", "comprexit", 25.0)]:
        paths.append(tmp_path / f"{method}.json")
        paths[-1].write_text(json.dumps(_results(label, method, {"ratio": 4} if method == "comprexit" else None,
                                                 2_000_000 if method == "comprexit" else None, f1)))
    assert main(["table", *map(str, paths), "--layout", "paper", "-o", str(tmp_path / "t.md")]) == 0
    png = tmp_path / "t.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
