"""Our own decode loop (decoding/graph.py) beyond the token-for-token matrix it shares with the
static path in test_static_decoding.py: stop tokens, the compiled loop, Reader, refusals.

Exact equality, no tolerance: greedy tokens of tiny float32 models whose weights make answers vary
(`varied_backbone`). Most tests run the loop's functions eagerly; the compiled ones use fullgraph
torch.compile with the "eager" dynamo backend (no C++ toolchain, seconds not minutes).
"""

import pytest
import torch

from comprexit.decoding import EagerDecoder, GraphDecoder, StaticDecoder
from comprexit.errors import ConfigError, InputError
from comprexit.prefix import SoftPrefix

from test_static_decoding import QUESTIONS, _cached, _setup
from tiny import varied_backbone


def test_rows_stop_at_their_first_stop_token():
    """Without forcing, stop tokens end rows (checked every `check_every` steps; answers cut at the first)."""
    backbone = varied_backbone("gemma3-hybrid")
    prefix, prompts = _setup(backbone, 40)
    stops = [1, *backbone.tokenize("J^e")]  # characters these weights often choose
    graph = GraphDecoder(backbone, max_cache_len=96, bucket=16, check_every=2, stops=stops)
    eager = EagerDecoder(backbone, stops=stops)
    expected = _cached(eager, prefix, prompts, max_new_tokens=10)
    assert any(len(answer) < 10 for answer in expected)
    assert _cached(graph, prefix, prompts, max_new_tokens=10) == expected
    rows = [SoftPrefix(prefix)] * 3
    assert graph.answers(rows, prompts, 10) == eager.answers(rows, prompts, 10)


def test_compiled_loop_matches_eager_and_compiles_each_shape_once():
    """fullgraph torch.compile of the prefill and the step: a graph break would fail here, as it
    would on a GPU; further batches of the same shapes and all their steps reuse the graphs."""
    from torch._dynamo.utils import counters

    backbone = varied_backbone("gemma3-hybrid")
    prefix, prompts = _setup(backbone, 40)
    graph = GraphDecoder.compiled(backbone, max_cache_len=96, mode="default", backend="eager", stops=())
    decode = dict(max_new_tokens=8, exact=False)
    eager = _cached(EagerDecoder(backbone, stops=()), prefix, prompts, **decode)
    cache = graph.prefill(prefix)
    assert graph.cached_answers(cache, prompts, **decode) == eager
    compiled = counters["stats"]["unique_graphs"]
    assert graph.cached_answers(cache, prompts, **decode) == eager
    assert graph.cached_answers(cache, prompts[::-1], **{**decode, "max_new_tokens": 5}) == [
        a[:5] for a in eager[::-1]]
    assert counters["stats"]["unique_graphs"] == compiled
    rows = [SoftPrefix(prefix)] * 3
    assert graph.answers(rows, prompts, 8) == EagerDecoder(backbone, stops=()).answers(rows, prompts, 8)
    assert counters["stats"]["unique_graphs"] == compiled + 1  # (a)'s prefill bucket; its steps reuse the step


def test_reader_answers_the_same_through_the_graph_decoder():
    from comprexit import ComprExIT, ComprExITConfig
    from comprexit.reader import Reader

    backbone = varied_backbone("gemma3-hybrid")
    torch.manual_seed(0)
    compressor = ComprExIT.for_backbone(backbone, ComprExITConfig(window=16))
    eager = Reader(backbone, compressor)
    graph = Reader(backbone, compressor, decoder=GraphDecoder(backbone, reserve=64, bucket=16))
    text = "The lighthouse keeper was Thomas Reed. The lens came from Paris. " * 2
    document = eager.compress(text)
    for use_cache in (True, False):
        assert (graph.ask(document, QUESTIONS, max_new_tokens=6, use_cache=use_cache)
                == eager.ask(document, QUESTIONS, max_new_tokens=6, use_cache=use_cache))


def test_refusals_name_the_problem():
    backbone = varied_backbone("llama")
    prefix, prompts = _setup(backbone, 40)
    graph = GraphDecoder(backbone, max_cache_len=48)
    with pytest.raises(InputError, match="do not fit"):
        graph.answers([SoftPrefix(prefix)] * 3, prompts, max_new_tokens=8)
    for other in (StaticDecoder(backbone, 48), GraphDecoder(backbone, max_cache_len=48)):
        with pytest.raises(ConfigError, match="prefilled by another decoder"):
            graph.cached_answers(other.prefill(prefix[:5]), prompts[1:2], max_new_tokens=2)
    with pytest.raises(ConfigError, match="bucket"):
        GraphDecoder(backbone, bucket=0)


def test_shapes_past_dynamos_recompile_limit_run_uncompiled(caplog):
    """With fullgraph=True dynamo refuses a shape past its recompile limit; that shape runs uncompiled."""
    backbone = varied_backbone("llama")
    prefix, prompts = _setup(backbone, 5)
    graph = GraphDecoder.compiled(backbone, max_cache_len=96, mode="default", backend="eager")
    cache = graph.prefill(prefix)
    expected = _cached(EagerDecoder(backbone), prefix, prompts, 4)
    with torch._dynamo.config.patch(recompile_limit=1):
        assert graph.cached_answers(cache, prompts[:2], 4, exact=False) == expected[:2]
        assert graph.cached_answers(cache, prompts, 4, exact=False) == expected  # a second batch size
    assert "runs uncompiled" in caplog.text
