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
    assert main(["table", str(out), "-o", str(tmp_path / "t.md")]) == 0
    assert "toy_eval" in (tmp_path / "t.md").read_text()
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
