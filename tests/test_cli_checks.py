"""train, eval, summarize and table: every bad argument refused in one line (exit 2) before a model loads,
and nothing written; eval's results on stdout, its status on stderr."""

import json
import os

import pytest

from comprexit.cli import main

from test_cli import assert_clean_error, compressor_folder as weights  # noqa: F401 (a fixture)
from tiny import save_tiny_backbone


@pytest.fixture
def no_model(monkeypatch):
    from comprexit.backbone import Backbone

    monkeypatch.setattr(Backbone, "load", lambda *a, **k: pytest.fail("a backbone was loaded"))
    monkeypatch.setattr("comprexit.training.trainer.Trainer", lambda *a, **k: pytest.fail("training started"))


@pytest.fixture
def files(tmp_path, corpus, qa_file, qa_path, weights):
    """The placeholders of the command lines below, in a folder of their own (tmp_path stays empty)."""
    here = tmp_path / "in"
    here.mkdir()
    (here / "folder").mkdir()
    (here / "squad.json").write_text("{}")
    (here / "file.txt").write_text("not a folder")
    bad_run = here / "bad_run"
    bad_run.mkdir()
    (bad_run / "train_config.json").write_text("{not json")
    (bad_run / "metrics.jsonl").write_text("")
    resumed = here / "resumed"
    resumed.mkdir()
    (resumed / "train_config.json").write_text("{not json")
    return {"tmp": tmp_path, "in": here, "corpus": corpus, "qa": qa_file, "eval": qa_path, "weights": weights}


def refused(capsys, tmp_path, argv, pattern):
    before = sorted(tmp_path.rglob("*"))
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert_clean_error(code, err, pattern)
    assert out == "" and sorted(tmp_path.rglob("*")) == before


TRAIN = ["train", "ntp", "--preset", "paper", "--data", "{corpus}", "-o", "{tmp}/run"]


@pytest.mark.parametrize("argv, pattern", [
    (["train", "ntp", "--data", "{in}/missing.jsonl", "-o", "{tmp}/run"], "no such file: {in}/missing.jsonl"),
    (["train", "ntp", "--data", "{corpus}", "{in}/folder", "-o", "{tmp}/run"], "not a file: {in}/folder"),
    (["train", "ntp", "--data", "{in}/squad.json", "-o", "{tmp}/run"], "a corpus is JSON lines (.jsonl[.gz]) or plain text"),
    (["train", "ntp", "--data", "hf:", "-o", "{tmp}/run"], "bad Hugging Face dataset spec 'hf:'"),
    (["train", "ntp", "--data", "hf:wikitext:", "-o", "{tmp}/run"], "bad Hugging Face dataset spec 'hf:wikitext:'"),
    (["train", "sft", "--data", "hf:my data", "-o", "{tmp}/run"], "bad Hugging Face dataset spec"),
    (TRAIN + ["--extra-ntp", "{in}/missing.jsonl"], "no such file: {in}/missing.jsonl"),
    (["train", "sft", "--data", "{qa}", "{in}/missing.json", "-o", "{tmp}/run"], "no such file: {in}/missing.json"),
    (TRAIN + ["--init", "{in}/no-weights"], "init: compressor folder not found: {in}/no-weights"),
    (TRAIN + ["--init", "{in}/folder"], "init: no comprexit_config.json in {in}/folder"),
    (TRAIN + ["--method", "icae", "--init", "{weights}"], "init: weights in {weights} are for method 'comprexit', not 'icae'"),
    (TRAIN + ["--kl-weight", "1", "--teacher", "{in}/no-teacher"], "teacher: compressor folder not found: {in}/no-teacher"),
    (["train", "ntp", "--data", "{corpus}", "-o", "{tmp}/missing/run"],
     "folder {tmp}/missing does not exist (train makes the run folder, not its parents)"),
    (["train", "ntp", "--data", "{corpus}", "-o", "{in}/file.txt"], "{in}/file.txt is a file; give a folder"),
    (TRAIN + ["--resume"], "--resume: no checkpoint in {tmp}/run/checkpoints"),
    (["train", "ntp", "--data", "{corpus}", "-o", "{in}/resumed", "--resume"], "is not a readable training config"),
])
def test_train_refuses_bad_files_before_the_backbone_loads(capsys, no_model, files, argv, pattern):
    refused(capsys, files["tmp"], [a.format(**files) for a in argv], pattern.format(**files))


def test_train_refuses_an_unreadable_data_file(capsys, no_model, files):
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    locked = files["in"] / "locked.jsonl"
    locked.write_text("{}")
    locked.chmod(0)
    refused(capsys, files["tmp"], ["train", "sft", "--data", locked, "-o", files["tmp"] / "run"],
            f"cannot read {locked}: permission denied")


EVAL = ["eval", "--data", "{eval}"]


@pytest.mark.parametrize("argv, pattern", [
    (["eval"], "--data needs at least one QA file"),
    (["eval", "--data", "{in}/missing.jsonl"], "no such file: {in}/missing.jsonl"),
    (["eval", "--data", "{eval}", "{in}/folder"], "not a file: {in}/folder"),
    (["eval", "--data", "hf::validation"], "bad Hugging Face dataset spec 'hf::validation'"),
    (EVAL + ["--limit", "0"], "--limit must be >= 1, got 0"),
    (EVAL + ["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (EVAL + ["--context-budget", "-1"], "--context-budget must be >= 1, got -1"),
    (EVAL + ["--max-new-tokens", "0"], "--max-new-tokens must be >= 1, got 0"),
    (EVAL + ["--held-out", "1000"], "--held-out must be a per-mille value in 1..999, got 1000"),
    (EVAL + ["--method", "nonsense"], "unknown method 'nonsense'; known methods:"),
    (EVAL + ["--method", "zero-shot", "--ratio", "4"], "method 'zero-shot' takes no ratio option"),
    (EVAL + ["--weights", "{in}/no-weights"], "compressor folder not found: {in}/no-weights"),
    (EVAL + ["--method", "icae", "--weights", "{weights}"], "are for method 'comprexit', not 'icae'"),
    (EVAL + ["-o", "{in}"], "{in} is a folder; give a file name"),
    (EVAL + ["-o", "{tmp}/missing/r.json"], "folder {tmp}/missing does not exist (eval creates no folders)"),
    (EVAL + ["-o", "{tmp}/r.md"], "--output names the results JSON"),
    (EVAL + ["--quiet", "--limit", "nine"], "argument --limit: invalid int value: 'nine'"),
    (EVAL + ["--exclude-questions", "{in}/missing.json"], "--exclude-questions: no such file: {in}/missing.json"),
    (EVAL + ["--exclude-questions", "{in}/file.txt"], "--exclude-questions: cannot read {in}/file.txt as JSON"),
    (EVAL + ["--exclude-questions", "{in}/squad.json"], "--exclude-questions: {in}/squad.json must hold a JSON list"),
])
def test_eval_refuses_bad_arguments_before_the_model_loads(capsys, no_model, files, argv, pattern):
    refused(capsys, files["tmp"], [a.format(**files) for a in argv], pattern.format(**files))


def test_eval_prints_results_on_stdout_and_status_on_stderr(capsys, tmp_path, qa_path, weights):
    backbone = save_tiny_backbone("llama", tmp_path / "m")
    argv = ["eval", "--weights", weights, "--backbone", backbone, "--data", qa_path, "--limit", "3", "--device", "cpu",
            "-o", tmp_path / "r.json"]
    assert main([str(a) for a in argv]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].strip().startswith("toy_eval: EM") and lines[1].strip().startswith("average: EM")
    assert lines[2:] == [str(tmp_path / "r.json"), str(tmp_path / "r.md")]
    assert "data: 3 questions in 1 set(s)" in err and "evaluated comprexit on" in err
    for quiet in ("-q", "--no-progress"):  # the old name stays
        assert main([str(a) for a in argv] + [quiet]) == 0
        out, err = capsys.readouterr()
        assert err == "" and len(out.splitlines()) == 4


def test_eval_leaves_out_the_excluded_questions_before_the_limit(capsys, tmp_path, qa_path, weights):
    backbone = save_tiny_backbone("llama", tmp_path / "m")
    (tmp_path / "seen.json").write_text(json.dumps(["q0a", "q0b", "q1a", "not-in-the-file"]))
    argv = ["eval", "--weights", weights, "--backbone", backbone, "--data", qa_path, "--device", "cpu", "--predictions",
            "--exclude-questions", tmp_path / "seen.json", "-o", tmp_path / "r.json"]
    assert main([str(a) for a in argv + ["--limit", "3"]]) == 0
    scored = json.loads((tmp_path / "r.json").read_text())["predictions"]["toy_eval"]
    assert [row["qid"] for row in scored] == ["q1b", "q2a", "q2b"]
    (tmp_path / "all.json").write_text(json.dumps([f"q{i}{x}" for i in range(6) for x in "ab"]))
    capsys.readouterr()
    assert main([str(a) for a in argv[:-4] + ["--exclude-questions", tmp_path / "all.json"]]) == 2
    assert "--exclude-questions leaves no question" in capsys.readouterr().err
    # with several files, one that the exclusion empties is named and left out; the others are scored
    other = tmp_path / "other_eval.jsonl"
    other.write_text(qa_path.read_text().replace('"qid": "q', '"qid": "o'))
    both = argv[:7] + [other] + argv[7:-4] + ["--exclude-questions", tmp_path / "all.json", "-o", tmp_path / "both.json"]
    assert main([str(a) for a in both]) == 0
    err = capsys.readouterr().err
    assert "toy_eval.jsonl: --exclude-questions leaves no question; not scored" in err
    assert list(json.loads((tmp_path / "both.json").read_text())["datasets"]) == ["other_eval"]


@pytest.fixture
def run_folder(tmp_path):
    run = tmp_path / "in" / "run"
    run.mkdir(parents=True)
    (run / "train_config.json").write_text(json.dumps({"phase": "ntp", "lr": 1e-4, "batch_size": 4, "ce_weight": 1.0}))
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "train", "step": 1, "loss": 2.0}) + "\n")
    return run


@pytest.mark.parametrize("argv, pattern", [
    (["summarize", "{run}", "-o", "{tmp}"], "{tmp} is a folder; give a file name"),
    (["summarize", "{run}", "-o", "{tmp}/missing/s.json"], "folder {tmp}/missing does not exist (summarize creates no folders)"),
    (["summarize", "{run}", "-o", "{tmp}/s.md"], "--output names the results JSON"),
    (["summarize", "{run}", "-o", "{tmp}/s.json", "--plot", "{tmp}/missing/p.png"], "folder {tmp}/missing does not exist"),
    (["summarize", "{run}", "-o", "{tmp}/s.json", "--plot", "{tmp}/s.md"], "--plot {tmp}/s.md would overwrite the results"),
    (["summarize", "{run}", "-o", "{tmp}/s.json", "--plot", "{tmp}"], "{tmp} is a folder; give a file name"),
    (["summarize", "{tmp}/in/missing", "-o", "{tmp}/s.json"], "no such run folder: {tmp}/in/missing"),
    (["summarize", "{run}/metrics.jsonl", "-o", "{tmp}/s.json"], "{run}/metrics.jsonl is a file, not a run folder"),
    (["summarize", "{tmp}/in", "-o", "{tmp}/s.json"], "{tmp}/in is not a training run folder"),
    (["summarize", "{bad_run}", "-o", "{tmp}/s.json"], "{bad_run}: cannot read its run files"),
    (["table", "{results}", "-o", "{tmp}"], "{tmp} is a folder; give a file name"),
    (["table", "{results}", "-o", "{tmp}/missing/t.md"], "folder {tmp}/missing does not exist (table creates no folders)"),
    (["table", "{tmp}/in", "-o", "{tmp}/t.md"], "cannot read {tmp}/in: is a directory"),
    (["table", "{bad_run}/train_config.json"], "is not valid JSON"),
])
def test_summarize_and_table_refuse_bad_outputs_and_inputs(capsys, tmp_path, run_folder, argv, pattern):
    bad_run = tmp_path / "in" / "bad_run"
    bad_run.mkdir()
    (bad_run / "train_config.json").write_text("{not json")
    (bad_run / "metrics.jsonl").write_text("")
    results = tmp_path / "in" / "r.json"
    results.write_text(json.dumps({"method": {"method": "zero-shot"}, "datasets": {}}))
    values = {"tmp": tmp_path, "run": run_folder, "bad_run": bad_run, "results": results}
    refused(capsys, tmp_path, [a.format(**values) for a in argv], pattern.format(**values))


def test_summarize_writes_into_an_existing_folder(capsys, tmp_path, run_folder):
    assert main(["summarize", str(run_folder), "-o", str(tmp_path / "s.json")]) == 0
    assert (tmp_path / "s.json").is_file() and (tmp_path / "s.md").is_file()
    assert "| run |" in capsys.readouterr().out
