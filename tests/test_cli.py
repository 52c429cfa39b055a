"""Bad input at the command line: one line naming the problem, non-zero exit, no traceback, nothing written."""

import json

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
    doc = tmp_path / "doc.txt"
    doc.write_text("Ada Lovelace wrote the first program in 1843. " * 5)
    common = ["--backbone", tiny_folder, "--compressor", compressor_folder, "--device", "cpu"]
    code, out, _ = run_cli(capsys, "compress", doc, "-o", tmp_path / "doc.ctx", *common)
    assert code == 0 and "tokens ->" in out and (tmp_path / "doc.ctx").is_file()
    code, out, _ = run_cli(capsys, "ask", "--compressed", tmp_path / "doc.ctx", "Who?", "When?", *common)
    assert code == 0 and out.count("Q: ") == 2 and out.count("A: ") == 2
    code, out, _ = run_cli(capsys, "ask", "--context-file", doc, "--full-context", "Who?", *common)
    assert code == 0 and "read in full" in out
    code, out, _ = run_cli(capsys, "info", "--json", *common)
    assert code == 0 and json.loads(out)["compressor_parameters"] > 0


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
