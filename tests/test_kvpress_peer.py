"""The kvpress peer script (scripts/peers/kvpress_eval.py): arguments, refusal without kvpress,
budget arithmetic, the comprexit modules it borrows, and (opt-in) a run in kvpress's environment.

kvpress is not a comprexit dependency and cannot share its environment (it needs
transformers < 5.3), so the script runs in its own environment; these tests run it with this
Python, where kvpress is absent, except the last, which needs KVPRESS_PYTHON.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "peers" / "kvpress_eval.py"
KVPRESS_PYTHON = os.environ.get("KVPRESS_PYTHON")


def _load_script():
    spec = importlib.util.spec_from_file_location("kvpress_eval", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


kv = _load_script()


def _run(*args, python=sys.executable, timeout=120, env=None):
    return subprocess.run([python, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=ROOT)


def _one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("kvpress_eval.py: error: "), result.stderr
    return lines[0]


def test_help_names_every_press():
    result = _run("--help")
    assert result.returncode == 0
    for name in kv.PRESSES:
        assert name in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--presses", "knorm,zip"], "--presses: unknown zip"),
    (["--budgets", "tokens"], "--budgets: unknown tokens"),
    (["--limit", "0"], "--limit must be >= 1"),
    (["--ratio", "0"], "--ratio must be >= 1"),
    (["--model", "/nonexistent"], "is not a model folder"),
    (["--device", "gpu"], "--device must be auto, cpu, cuda or cuda:N"),
])
def test_bad_arguments_are_one_line_errors(tmp_path, args, message):
    data = tmp_path / "qa.jsonl"
    data.write_text("{}\n")
    assert message in _one_error_line(_run("--data", str(data), "-o", str(tmp_path), *args))


def test_missing_data_file_is_one_line_error(tmp_path):
    assert "no such data file" in _one_error_line(_run("--data", str(tmp_path / "none.jsonl"), "-o", str(tmp_path)))


@pytest.mark.skipif(importlib.util.find_spec("kvpress") is not None, reason="kvpress is installed in this Python")
def test_refuses_without_kvpress(tmp_path):
    data = tmp_path / "qa.jsonl"
    data.write_text("{}\n")
    line = _one_error_line(_run("--data", str(data), "-o", str(tmp_path)))
    assert "kvpress is not importable" in line and "setup_kvpress_venv.sh" in line


def test_borrowed_comprexit_modules_need_neither_torch_nor_transformers():
    """The script imports comprexit's reader, prompt, scorer and results writer in kvpress's
    environment; they must stay free of torch and transformers at import time."""
    code = (
        "import sys, importlib.util\n"
        "sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
        f"spec = importlib.util.spec_from_file_location('kvpress_eval', {str(SCRIPT)!r})\n"
        "m = sys.modules['kvpress_eval'] = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "print(' '.join(sorted(m.import_comprexit_parts())), sys.modules['comprexit'].__version__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    from comprexit import __version__

    assert result.stdout.split() == ["answers", "errors", "metrics", "prompting", "qa", "report", __version__]


def test_costs_per_document_are_in_comprexits_fields():
    """`comprexit table --costs` reads a peer row's costs: kept positions, their keys and values, press time."""
    from comprexit.evaluation.report import combined_costs as combined

    documents = [kv.ContextStats(kept=11, nbytes=0, seconds=0.002, kept_whole=False),
                 kv.ContextStats(kept=21, nbytes=0, seconds=0.004, kept_whole=False)]
    cost = kv.document_cost(documents, kv_values=100)
    assert cost == {"documents": 2, "compress_ms": 3.0, "positions": 16.0, "stored_values": 1600, "cache_values": 1600}
    other = kv.document_cost(documents[:1], kv_values=100)
    summaries = [{"cost": cost}, {"cost": other}, {"cost": None}]
    assert kv.combined_cost(summaries) == combined([cost, other, None])


def test_every_name_the_script_reads_from_comprexit_exists():
    """The real run needs kvpress's environment and is skipped in CI; a renamed function of a borrowed
    module (as `prompting.postprocess_answer` once was) must still fail here."""
    import ast

    tree = ast.parse(SCRIPT.read_text())
    parts = lambda node: (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)  # noqa: E731
                          and node.value.id == "parts" and isinstance(node.slice, ast.Constant))
    aliases = {}  # local name -> borrowed module key, from `a, b = parts["x"], parts["y"]`
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            targets = node.targets[0].elts if isinstance(node.targets[0], ast.Tuple) else [node.targets[0]]
            values = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
            for target, value in zip(targets, values):
                if isinstance(target, ast.Name) and parts(value):
                    aliases[target.id] = value.slice.value
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            if parts(node.value):
                used.add((node.value.slice.value, node.attr))
            elif isinstance(node.value, ast.Name) and node.value.id in aliases:
                used.add((aliases[node.value.id], node.attr))
    modules = kv.import_comprexit_parts()
    assert {"answers", "metrics", "prompting", "qa", "report"} <= {key for key, _ in used}
    missing = sorted(f"{key}.{name}" for key, name in used if not hasattr(modules[key], name))
    assert not missing


def test_dataset_names_match_comprexit_eval():
    from comprexit.cli.eval import dataset_key

    for spec in ("/a/squad_eval.jsonl.gz", "b/nq_eval.jsonl", "c/train.json", "d/x.json.gz", "hf:squad:validation"):
        assert kv.dataset_key(spec) == dataset_key(spec)


def test_slot_count_follows_comprexit_windows():
    from comprexit import ComprExITConfig

    assert ComprExITConfig().window == kv.SLOT_WINDOW
    assert kv.slot_count(512, 4) == 128
    assert kv.slot_count(130, 4) == 32 + 1
    assert kv.slot_count(130, 16) == 8 + 1
    assert kv.slot_count(1, 4) == 1


def test_budgets_of_a_full_context():
    """Gemma-3-270M: a cache position holds 18 x 2 x 1 x 256 = 9,216 values, a slot 640 (14.4x)."""
    assert kv.kept_positions(512, "positions", 4, 9216, 640) == 129  # 128 slots + [BOS]
    assert kv.kept_positions(512, "bytes", 4, 9216, 640) == 10  # round(128 * 640 / 9216 = 8.89) + [BOS]
    assert kv.kept_positions(512, "full", 4, 9216, 640) == 513
    assert kv.kept_positions(9, "bytes", 4, 9216, 640) == 1  # 3 slots are 0.2 positions: [BOS] only
    assert kv.kept_positions(1, "positions", 4, 9216, 640) == 2  # never more than the cache holds
    with pytest.raises(ValueError):
        kv.kept_positions(10, "tokens", 4, 9216, 640)


def test_compression_ratio_keeps_exactly_the_budget():
    """kvpress keeps max(1, int(length * (1 - compression_ratio))) positions (kvpress.utils.compute_n_kept)."""
    for length in range(2, 700, 7):
        for kept in range(1, length + 1):
            ratio = kv.compression_ratio_for(length, kept)
            assert 0 <= ratio < 1
            assert (length if ratio == 0 else max(1, int(length * (1 - ratio)))) == kept


def test_planned_runs_check_once():
    runs = kv.planned_runs(["none", "knorm"], ["positions", "bytes"])
    assert [(spec.name, budget) for spec, budget in runs] == [
        ("none", "full"), ("knorm", "positions"), ("knorm", "bytes")]
    assert kv.run_label(kv.PRESSES["knorm"], "bytes", 4) == "kvpress knorm, bytes of 4x slots (peer)"


@pytest.mark.slow
def test_probe_ids_are_comprexit_tokens(gemma):
    """The script refuses a model folder whose tokenizer gives other ids for its probe sentence."""
    assert gemma.tokenize(kv.PROBE_TEXT) == kv.PROBE_IDS


@pytest.mark.slow
@pytest.mark.skipif(not KVPRESS_PYTHON, reason="set KVPRESS_PYTHON to the python of kvpress's environment "
                    "(scripts/peers/setup_kvpress_venv.sh venv builds it) to run the script for real")
def test_kvpress_run_matches_zero_shot_and_feeds_the_table(gemma, shared_data, tmp_path):
    """Two questions: the uncompressed check equals comprexit's zero-shot answers; a pruned run
    writes a results file that `comprexit table` reads."""
    from comprexit.data.qa import load_qa
    from comprexit.evaluation.report import comparison_table, load_results
    from comprexit.evaluation.runner import EvalSettings, evaluate
    from comprexit.methods import create_method

    data = shared_data / "squad_eval.jsonl.gz"
    result = _run("--data", str(data), "--limit", "2", "--presses", "none,knorm", "--budgets", "bytes",
                  "--device", "cpu", "--no-progress", "--predictions", "-o", str(tmp_path),
                  python=KVPRESS_PYTHON, timeout=1800, env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr[-2000:]
    check = json.loads((tmp_path / "kvpress-none-full.json").read_text())
    ours = evaluate(create_method("zero-shot", gemma), {"squad_eval": load_qa(str(data)).limit(2)},
                    EvalSettings(batch_size=2), keep_predictions=True, show_progress=False)
    assert [r["prediction"] for r in check["predictions"]["squad_eval"]] == \
        [r["prediction"] for r in ours["predictions"]["squad_eval"]]
    pruned = load_results(tmp_path / "kvpress-knorm-bytes.json")
    assert pruned["method"]["peer"] and pruned["method"]["ratio"] == 4
    assert "kvpress knorm, bytes of 4x slots (peer)" in comparison_table([pruned, check])
