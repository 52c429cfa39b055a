"""Bad input at the command line: one line naming the problem, non-zero exit, no traceback, nothing written."""

import io
import json
import os
import time

import pytest
import torch

from comprexit import ComprExIT, ComprExITConfig
from comprexit.cli import main

from tiny import save_tiny_backbone, tiny_backbone


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_tiny_backbone("llama", tmp_path_factory.mktemp("backbone"))


@pytest.fixture(scope="module")
def compressor_folder(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("compressor")
    ComprExIT.for_backbone(tiny_backbone("llama"), ComprExITConfig(window=16)).save_pretrained(folder)
    return folder


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean_error(code, err, pattern):
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert pattern in lines[0], lines[0]


def test_compress_then_ask(capsys, tmp_path, tiny_folder, compressor_folder):
    """Answers (or the written path) on stdout, status lines on stderr: a script can take stdout alone."""
    doc = tmp_path / "doc.txt"
    doc.write_text("Ada Lovelace wrote the first program in 1843. " * 5)
    common = ["--backbone", tiny_folder, "--compressor", compressor_folder, "--device", "cpu"]
    code, out, err = run_cli(capsys, "compress", doc, "-o", tmp_path / "doc.ctx", *common)
    assert code == 0 and out == f"{tmp_path / 'doc.ctx'}\n" and (tmp_path / "doc.ctx").is_file()
    assert "context: 230 tokens -> 58 slots (4x) in" in err
    code, out, err = run_cli(capsys, "ask", "--compressed", tmp_path / "doc.ctx", "Who?", "When?", *common)
    assert code == 0 and out.count("Q: ") == 2 and out.count("A: ") == 2 and len(out.splitlines()) == 4
    assert f"context: 230 tokens -> 58 slots (4x, loaded from {tmp_path / 'doc.ctx'})" in err
    assert "answered 2 question(s) in" in err
    code, out, err = run_cli(capsys, "ask", "--context-file", doc, "--full-context", "Who?", *common)
    assert code == 0 and "context: 230 tokens read in full; answered in" in err and len(out.splitlines()) == 2
    code, out, err = run_cli(capsys, "ask", "--context-file", doc, "--quiet", "Who?", *common)
    assert code == 0 and err == "" and len(out.splitlines()) == 2
    code, out, _ = run_cli(capsys, "info", "--json", *common)
    assert code == 0 and json.loads(out)["compressor_parameters"] > 0


def test_json_output_and_standard_input(capsys, tmp_path, monkeypatch, tiny_folder, compressor_folder):
    text = "Ada Lovelace wrote the first program in 1843. " * 5
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    common = ["--backbone", tiny_folder, "--compressor", compressor_folder, "--device", "cpu"]
    code, out, _ = run_cli(capsys, "compress", "-", "-o", tmp_path / "doc.ctx", "--json", *common)
    saved = json.loads(out)
    assert code == 0 and saved["output"] == str(tmp_path / "doc.ctx") and saved["bytes"] > 0
    assert saved["context"] == {"source": "standard input", "tokens": 230, "slots": 58, "ratio": 4}
    assert set(saved["timings"]) == {"load_seconds", "compress_seconds"}

    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    code, out, _ = run_cli(capsys, "ask", "--context-file", "-", "--json", "Who?", "When?", *common)
    asked = json.loads(out)
    assert code == 0 and [a["question"] for a in asked["answers"]] == ["Who?", "When?"]
    assert asked["context"] == {"source": "standard input", "read": "compressed", "tokens": 230, "slots": 58, "ratio": 4}
    assert asked["answer_rule"] == "sentence" and asked["timings"]["compress_seconds"] >= 0
    code, out, _ = run_cli(capsys, "ask", "--compressed", tmp_path / "doc.ctx", "--json", "--answer-rule", "paper",
                           "Who?", *common)
    loaded = json.loads(out)
    assert loaded["timings"]["compress_seconds"] is None and loaded["answer_rule"] == "paper"
    code, _, err = run_cli(capsys, "ask", "--context-file", "-", "--full-context", "Who?", *common)
    assert_clean_error(code, err, "context is empty: standard input holds nothing")  # it was read already

    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"\xff\xfe bad")))
    code, _, err = run_cli(capsys, "ask", "--context-file", "-", "Who?", *common)
    assert_clean_error(code, err, "standard input: not UTF-8 text")


@pytest.mark.parametrize(
    "content, pattern",
    [("", "context is empty"), ("  \n\t ", "context is empty"), (b"\xff\xfe\x00bad", "not UTF-8 text")],
)
def test_bad_context_files(capsys, tmp_path, tiny_folder, compressor_folder, content, pattern):
    path = tmp_path / "doc.txt"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    output = tmp_path / "out.ctx"
    code, _, err = run_cli(
        capsys, "compress", path, "-o", output, "--backbone", tiny_folder, "--compressor", compressor_folder
    )
    assert_clean_error(code, err, pattern)
    assert not output.exists() and not list(tmp_path.glob("*.tmp"))


def test_missing_context_file(capsys, tmp_path):
    code, _, err = run_cli(capsys, "ask", "--context-file", tmp_path / "nope.txt", "Who?")
    assert_clean_error(code, err, "no such file")


def test_empty_question(capsys, tmp_path):
    path = tmp_path / "doc.txt"
    path.write_text("Some text.")
    code, _, err = run_cli(capsys, "ask", "--context-file", path, "  ")
    assert_clean_error(code, err, "question is empty")


def test_missing_and_corrupt_compressor(capsys, tmp_path, tiny_folder, compressor_folder):
    path = tmp_path / "doc.txt"
    path.write_text("Some text.")
    code, _, err = run_cli(
        capsys, "ask", "--context-file", path, "Who?", "--backbone", tiny_folder, "--compressor", tmp_path / "none"
    )
    assert_clean_error(code, err, "compressor folder not found")
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in compressor_folder.iterdir():
        (broken / f.name).write_bytes(f.read_bytes()[:100])
    code, _, err = run_cli(
        capsys, "ask", "--context-file", path, "Who?", "--backbone", tiny_folder, "--compressor", broken
    )
    assert_clean_error(code, err, "not valid JSON")


def test_compressor_for_another_backbone(capsys, tmp_path, compressor_folder):
    other = save_tiny_backbone("gemma3", tmp_path / "gemma")
    path = tmp_path / "doc.txt"
    path.write_text("Some text.")
    code, _, err = run_cli(capsys, "ask", "--context-file", path, "Who?", "--backbone", other, "--compressor", compressor_folder)
    assert_clean_error(code, err, "was trained for backbone")


def test_corrupt_compressed_document(capsys, tmp_path):
    path = tmp_path / "doc.ctx"
    path.write_bytes(b"\x00" * 64)
    code, _, err = run_cli(capsys, "ask", "--compressed", path, "Who?")
    assert_clean_error(code, err, "not a comprexit compressed document")


def test_resume_takes_new_session_settings_but_refuses_a_changed_recipe(tmp_path):
    """A device call that resumes has its own time limit; a changed learning rate must not pass silently."""
    import argparse

    from comprexit.cli import train as train_cli
    from comprexit.errors import ConfigError

    parser = argparse.ArgumentParser()
    train_cli.add_parser(parser.add_subparsers())
    common = ["train", "ntp", "--data", "corpus.jsonl", "-o", str(tmp_path)]
    first = train_cli.build_config(parser.parse_args(common + ["--max-minutes", "8", "--lr", "5e-4"]))
    (tmp_path / "train_config.json").write_text(json.dumps(first.to_dict()))

    resumed = train_cli.build_config(parser.parse_args(common + ["--resume", "--max-minutes", "3", "--lr", "5e-4"]))
    assert resumed.max_minutes == 3 and resumed.lr == 5e-4
    with pytest.raises(ConfigError, match="--lr"):
        train_cli.build_config(parser.parse_args(common + ["--resume", "--lr", "1e-3"]))


def test_a_preset_leaves_the_architecture_of_init_weights_alone(tmp_path):
    """The scale preset's NTP turns on the embedding skip for a new compressor; continuing trained weights
    (long-context NTP from the shipped NTP weights) keeps theirs, and only additive levers may be added."""
    import argparse

    from comprexit.cli import train as train_cli

    parser = argparse.ArgumentParser()
    train_cli.add_parser(parser.add_subparsers())
    common = ["train", "ntp", "--preset", "scale", "--data", "corpus.jsonl", "-o", str(tmp_path / "run")]
    assert train_cli.build_config(parser.parse_args(common)).compressor == {"embedding_skip": True}
    continued = train_cli.build_config(parser.parse_args(common + ["--init", "weights"]))
    assert continued.compressor == {} and continued.init == "weights"
    lever = train_cli.build_config(parser.parse_args(common + ["--init", "weights", "--compressor-config",
                                                               '{"chunk_positions": 16}']))
    assert lever.compressor == {"chunk_positions": 16}


# ---------------------------------------------------------------- every bad input: one line, exit 2, before any work
def _no_model(monkeypatch):
    for command in ("ask", "compress"):
        monkeypatch.setattr(f"comprexit.cli.{command}.load_reader", lambda args: pytest.fail("a model was loaded"))


@pytest.mark.parametrize("argv, pattern", [
    (["ask", "--context-file", "{doc}", "Who?", "--device", "tpu"], "unknown device 'tpu'"),
    (["ask", "--context-file", "{doc}", "Who?", "--device", "CPU"], "unknown device 'CPU'"),
    (["compress", "{doc}", "-o", "{tmp}/x.ctx", "--device", "cuda:7"], "device cuda:7 was asked for"),
    (["ask", "--context-file", "{doc}", "Who?", "--max-new-tokens", "0"], "max_new_tokens must be an integer from 1 to 256, got 0"),
    (["ask", "--context-file", "{doc}", "Who?", "--max-new-tokens", "-5"], "got -5"),
    (["ask", "--context-file", "{doc}", "Who?", "--max-new-tokens", "257"], "got 257"),
    (["ask", "--context-file", "{doc}", "Who?", "--max-new-tokens", "ten"], "argument --max-new-tokens: invalid int value"),
    (["ask", "--context-file", "{doc}", "Who?", "--answer-rule", "nonsense"], "unknown answer rule 'nonsense'"),
    (["ask", "--context-file", "{doc}", "Who?", "--no-such-option"], "unrecognized arguments: --no-such-option"),
    (["compress", "{doc}", "-o", "{tmp}"], "is a folder; give a file name"),
    (["compress", "{doc}", "-o", "{tmp}/missing/dir/x.ctx"], "does not exist (compress creates no folders)"),
    (["compress", "{doc}", "-o", "{doc}"], "is the input document"),
    (["compress", "{doc}", "-o", "/sys/comprexit-test.ctx"], "cannot write /sys/comprexit-test.ctx"),
    (["compress", "{doc}", "-o", "{tmp}/x.ctx", "--compressor", "{extra_field}"], "unknown top-level field(s) ['embeding_rms']"),
])
def test_bad_arguments_are_refused_before_a_model_loads(capsys, tmp_path, monkeypatch, compressor_folder, argv, pattern):
    if "/sys/" in " ".join(argv) and os.access("/sys", os.W_OK) and os.geteuid() != 0:
        pytest.skip("/sys is writable here")
    _no_model(monkeypatch)
    doc = tmp_path / "doc.txt"
    doc.write_text("Some text.")
    extra = tmp_path / "extra"
    extra.mkdir()
    for file in compressor_folder.iterdir():
        (extra / file.name).write_bytes(file.read_bytes())
    config = json.loads((extra / "comprexit_config.json").read_text())
    (extra / "comprexit_config.json").write_text(json.dumps({**config, "embeding_rms": 2.0}))  # a misspelt field
    before = sorted(tmp_path.iterdir())
    values = {"doc": doc, "tmp": tmp_path, "extra_field": extra}
    code, out, err = run_cli(capsys, *[a.format(**values) for a in argv])
    assert_clean_error(code, err, pattern)
    assert out == "" and sorted(tmp_path.iterdir()) == before


def test_unknown_backbone_fails_fast_offline(capsys, tmp_path, monkeypatch):
    """Without network, transformers would retry the Hub for ~48 s; the probe (hub.py) answers at once."""
    monkeypatch.setattr("comprexit.hub.hub_unreachable", lambda endpoint: "no network")
    doc = tmp_path / "doc.txt"
    doc.write_text("Some text.")
    start = time.perf_counter()
    code, _, err = run_cli(capsys, "ask", "--context-file", doc, "Who?", "--backbone", "nobody/no-such-model")
    assert_clean_error(code, err, "backbone 'nobody/no-such-model' is neither a local folder nor in the Hugging Face "
                                  "cache, and https://huggingface.co cannot be reached (no network)")
    assert time.perf_counter() - start < 10
    code, _, err = run_cli(capsys, "ask", "--context-file", doc, "Who?", "--backbone", tmp_path / "missing" / "model")
    assert_clean_error(code, err, f"no such backbone folder or file: {tmp_path / 'missing' / 'model'}")


def test_long_questions_and_documents_are_refused_before_any_work(capsys, tmp_path, monkeypatch, tiny_folder,
                                                                  compressor_folder):
    """Measured in tokens right after the model loads, before the document is compressed or read in full."""
    from comprexit.reader import Reader

    monkeypatch.setattr(Reader, "compress", lambda *a, **k: pytest.fail("the document was compressed"))
    monkeypatch.setattr(Reader, "ask_full_context", lambda *a, **k: pytest.fail("the document was read"))
    doc = tmp_path / "doc.txt"
    doc.write_text("Some text.")
    common = ["--backbone", tiny_folder, "--compressor", compressor_folder, "--device", "cpu"]
    question = "Why " * 25_000 + "?"  # 100,001 characters: one token each with this tokenizer
    code, out, err = run_cli(capsys, "ask", "--context-file", doc, "Fine?", question, *common)
    assert_clean_error(code, err, "question 2 has 100,001 tokens; at most 200 are read")
    assert len(err) < 200 and out == ""  # the question is not echoed
    code, _, err = run_cli(capsys, "ask", "--context-file", doc, "--full-context", question, *common)
    assert_clean_error(code, err, "question 1 has 100,001 tokens")
    doc.write_text("x" * 5000)  # the tiny model has 4096 positions
    code, _, err = run_cli(capsys, "ask", "--context-file", doc, "--full-context", "Who?", *common)
    assert_clean_error(code, err, "the context has 5000 tokens; read in full, at most 3584 fit the decoder's 4096 positions")


def test_memory_that_cannot_fit_is_refused_before_reading(capsys, tmp_path, monkeypatch, tiny_folder, compressor_folder):
    from comprexit.decoding import EagerDecoder

    monkeypatch.setattr("comprexit.memory.available_bytes", lambda device: 1000)
    monkeypatch.setattr(EagerDecoder, "prefill", lambda *a, **k: pytest.fail("the prefix was read"))
    doc = tmp_path / "doc.txt"
    doc.write_text("Ada Lovelace wrote the first program in 1843. " * 5)
    code, _, err = run_cli(capsys, "ask", "--context-file", doc, "--full-context", "Who?", "--backbone", tiny_folder,
                           "--compressor", compressor_folder, "--device", "cpu")
    assert_clean_error(code, err, "reading 230 context tokens in full needs about")
    assert "GiB are free on cpu: compress the document instead" in err


def test_progress_bars_only_on_a_terminal_without_quiet(monkeypatch):
    from comprexit.progress import no_progress, stderr_progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stderr", Terminal())
    assert stderr_progress(quiet=True) is no_progress
    shown = stderr_progress()
    assert shown is not no_progress
    bar = shown(total=10, desc="compressing", unit="token")
    bar.update(10)
    bar.close()
    monkeypatch.setattr("sys.stderr", io.StringIO())  # a pipe or a file: no bars
    assert stderr_progress() is no_progress
