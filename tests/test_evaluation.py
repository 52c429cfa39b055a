"""The evaluation harness: method registry, the shared runner, results files and comparison tables."""


import pytest
import torch

from comprexit import ComprExIT, ComprExITConfig, ConfigError
from comprexit.cli import main
from comprexit.data.qa import load_mrqa
from comprexit.evaluation.report import comparison_table, load_results, write_results
from comprexit.evaluation.runner import EvalSettings, ProgressLog, _fingerprint, evaluate
from comprexit.methods import available_methods, create_method

from tiny import save_tiny_backbone, tiny_backbone


def test_registry_lists_methods_and_refuses_unknown_ones():
    assert {"zero-shot", "no-context", "comprexit"} <= set(available_methods())
    with pytest.raises(ConfigError, match=r"unknown method 'icae2'; known methods: .*comprexit.*zero-shot"):
        create_method("icae2", None)


def test_runner_is_deterministic_and_resumes(tmp_path, qa_path):
    backbone = tiny_backbone("llama")
    method = create_method("zero-shot", backbone)
    data = {"toy": load_mrqa(qa_path)}
    settings = EvalSettings(batch_size=4)
    first = evaluate(method, data, settings, keep_predictions=True, show_progress=False)
    # an interrupted run left the answers to the first four questions in its progress file
    progress = tmp_path / "run.progress.jsonl"
    log = ProgressLog(progress, _fingerprint(method, data, settings))
    log.record("toy", [(i, row["prediction"]) for i, row in enumerate(first["predictions"]["toy"][:4])])
    resumed = evaluate(method, data, settings, keep_predictions=True, progress_path=progress, show_progress=False)
    assert resumed["datasets"]["toy"]["answered_now"] == 8
    assert resumed["predictions"] == first["predictions"]
    assert not progress.exists()
    # a progress file of other settings is discarded, not mixed in
    ProgressLog(progress, "another-run").record("toy", [(0, "wrong")])
    again = evaluate(method, data, settings, keep_predictions=True, progress_path=progress, show_progress=False)
    assert again["datasets"]["toy"]["answered_now"] == 12 and again["predictions"] == first["predictions"]


def test_eval_scores_with_the_papers_cut_and_records_the_rule(tmp_path, qa_path, monkeypatch):
    """`comprexit eval` keeps the paper's cut (first "." or newline) whatever `ask` uses, and says so."""
    from comprexit.decoding import EagerDecoder

    monkeypatch.setattr(EagerDecoder, "answers", lambda self, prefixes, prompts, n: [" version 3.14.2 today"] * len(prompts))
    method = create_method("zero-shot", tiny_backbone("llama"))
    data = {"toy": load_mrqa(qa_path)}
    results = evaluate(method, data, EvalSettings(batch_size=4), keep_predictions=True, show_progress=False)
    assert results["settings"]["answer_rule"] == "paper"
    assert {row["prediction"] for row in results["predictions"]["toy"]} == {"version 3"}
    other = evaluate(method, data, EvalSettings(batch_size=4, answer_rule="sentence"), keep_predictions=True,
                     show_progress=False)
    assert {row["prediction"] for row in other["predictions"]["toy"]} == {"version 3.14.2 today"}
    json_path, md_path = write_results(results, tmp_path / "r.json")
    assert "answers cut by the 'paper' rule" in md_path.read_text()
    results["settings"].pop("answer_rule")  # a file written before the rule was recorded
    write_results(results, json_path)
    assert load_results(json_path)["settings"]["answer_rule"] == "paper"
    with pytest.raises(ConfigError, match="unknown answer rule 'cut'"):
        EvalSettings(answer_rule="cut")


def test_results_files_and_comparison_table(tmp_path, qa_path):
    backbone = tiny_backbone("llama")
    runs = []
    for name in ("zero-shot", "no-context"):
        results = evaluate(create_method(name, backbone), {"squad_eval": load_mrqa(qa_path), "drop_ood": load_mrqa(qa_path)},
                           EvalSettings(batch_size=6), show_progress=False)
        results["label"] = name
        json_path, md_path = write_results(results, tmp_path / f"{name}.json")
        assert "| squad_eval | 12 |" in md_path.read_text()
        runs.append(load_results(json_path))
    table = comparison_table(runs)
    assert "| method | params | squad_eval | drop_ood | in-domain avg | OOD avg |" in table
    assert table.count("\n| zero-shot |") == 1 and table.count("\n| no-context |") == 1


def test_eval_and_table_commands(capsys, tmp_path, qa_path):
    folder = save_tiny_backbone("llama", tmp_path / "m")
    compressor = tmp_path / "c"
    torch.manual_seed(0)
    ComprExIT.for_backbone(tiny_backbone("llama"), ComprExITConfig(window=16)).save_pretrained(compressor)
    out = tmp_path / "cx.json"  # in an existing folder: eval makes none
    code = main(["eval", "--method", "comprexit", "--weights", str(compressor), "--backbone", str(folder),
                 "--data", str(qa_path), "--limit", "5", "--batch-size", "2", "--device", "cpu", "--no-progress",
                 "--output", str(out)])
    assert code == 0 and load_results(out)["datasets"]["toy_eval"]["count"] == 5
    assert load_results(out)["environment"]["commit"]
    assert main(["table", str(out), "--costs", "-o", str(tmp_path / "t.md")]) == 0
    assert "toy_eval" in (tmp_path / "t.md").read_text() and "KiB cache / doc" in (tmp_path / "t.md").read_text()
    code = main(["eval", "--method", "nonsense", "--data", str(qa_path)])
    assert code == 2 and "known methods" in capsys.readouterr().err


@pytest.mark.slow
def test_both_bounds_on_ten_real_questions(gemma, shared_data):
    """The real Gemma-3-270M reading the context beats reading nothing on SQuAD questions."""
    data = {"squad_eval": load_mrqa(shared_data / "squad_eval.jsonl.gz").limit(10)}
    scores = {}
    for name in ("zero-shot", "no-context"):
        results = evaluate(create_method(name, gemma), data, EvalSettings(batch_size=5), show_progress=False)
        scores[name] = results["datasets"]["squad_eval"]
        assert scores[name]["count"] == 10
    assert scores["zero-shot"]["f1"] > scores["no-context"]["f1"]


def test_the_runner_measures_what_each_document_costs(tmp_path, qa_path):
    """Per document prepared: positions the decoder reads, numbers kept, its cache, and the time to make them."""
    backbone = tiny_backbone("llama")
    data = {"toy": load_mrqa(qa_path)}
    results = evaluate(create_method("zero-shot", backbone), data, EvalSettings(batch_size=4), show_progress=False)
    cost = results["datasets"]["toy"]["cost"]
    lengths = [len(backbone.tokenize(context)) for context in dict.fromkeys(e.context for e in data["toy"])]
    config = backbone.model.config
    per_position = config.num_hidden_layers * 2 * config.num_key_value_heads * (config.hidden_size // config.num_attention_heads)
    assert cost["documents"] == 6 and cost["positions"] == round(sum(lengths) / 6, 1)
    assert cost["stored_values"] == round(sum(lengths) * backbone.hidden_size / 6)  # the context's embeddings
    assert cost["cache_values"] == round(sum(lengths) * per_position / 6) and cost["compress_ms"] > 0
    assert results["cost"] == cost  # one dataset: its own
    nothing = evaluate(create_method("no-context", backbone), data, EvalSettings(batch_size=4), show_progress=False)
    assert nothing["cost"]["positions"] == 0 and nothing["cost"]["cache_values"] == 0
    # in the results file's summary, and as columns of the table (a file from before costs were measured: "-")
    json_path, md_path = write_results({**results, "label": "zero-shot"}, tmp_path / "z.json")
    assert f"{cost['positions']:.0f} decoder positions" in md_path.read_text()
    old = {**nothing, "label": "old"}
    old.pop("cost")
    table = comparison_table([load_results(json_path), old], costs=True)
    assert "| ms / doc | positions / doc | KiB kept / doc | KiB cache / doc |" in table
    kept = cost["stored_values"] * 2 / 1024
    assert f"| {cost['positions']:.0f} | {kept:.1f} |" in table and table.rstrip().count("| - | - | - | - |") == 1
    assert "ms / doc" not in comparison_table([old])


def test_costs_of_files_merged_by_label_weigh_each_file_by_its_documents():
    from comprexit.evaluation.report import merge_by_label

    def part(name, documents, positions):
        cost = {"documents": documents, "compress_ms": 1.0, "positions": positions, "stored_values": positions * 10,
                "cache_values": positions * 100}
        return {"label": "x", "method": {"method": "m"}, "settings": {}, "backbone": {},
                "datasets": {name: {"count": 1, "em": 0.0, "f1": 0.0, "cost": cost}}}

    (merged,) = merge_by_label([part("a", 1, 100), part("b", 3, 20)])
    assert merged["cost"] == {"documents": 4, "compress_ms": 1.0, "positions": 40.0, "stored_values": 400,
                              "cache_values": 4000}


def test_a_key_value_prefix_keeps_every_layers_keys_and_values():
    from comprexit.prefix import KVPrefix, SoftPrefix

    keys = tuple(torch.zeros(2, 5, 8) for _ in range(3))
    assert KVPrefix(keys, keys, next_position=6).stored_values() == 3 * 2 * (2 * 5 * 8)
    assert SoftPrefix(torch.zeros(7, 16)).stored_values() == 7 * 16
