"""Static-cache decoding gives the eager dynamic-cache answers, token for token: through generate
(static_decoding.py) and through our own loop (graph_decoding.py; more of it in test_graph_decoding.py).

Exact equality, no tolerance: greedy tokens of tiny float32 models whose weights make answers vary
(`varied_backbone`). The Gemma-3-style backbones have a 16-position sliding window, so prefix +
prompt outgrow it, as a 2048-token document's cache outgrows Gemma-3-270M's 512-position window.
"""

from functools import partial

import pytest
import torch

from comprexit.decoding import build_decoder_batch, cached_answers, greedy_answers, prefill
from comprexit.errors import InputError
from comprexit.graph_decoding import GraphDecoder
from comprexit.static_decoding import StaticDecoder

from tiny import tiny_backbone, varied_backbone

QUESTIONS = ["Who is it?", "Where?", "What is the name of it?"]
# generate's path, and our own loop with small buckets (the default 64 is capped by these short caches)
DECODERS = pytest.mark.parametrize("decoder_class", [StaticDecoder, partial(GraphDecoder, bucket=16)],
                                   ids=["static", "graph"])


@pytest.fixture(scope="module", params=["llama", "gemma3-hybrid", "gemma3"])
def backbone(request):
    return varied_backbone(request.param)


def _setup(backbone, prefix_tokens):
    torch.manual_seed(prefix_tokens)
    prefix = backbone.embed(torch.randint(10, 90, (prefix_tokens,)))
    return prefix, [backbone.tokenize(q) for q in QUESTIONS]


@DECODERS
@pytest.mark.parametrize("prefix_tokens", [5, 40])
def test_left_padded_path_matches_eager(backbone, prefix_tokens, decoder_class):
    """(a): left-padded `[BOS] + prefix + prompt` from the decoder's empty working cache."""
    prefix, prompts = _setup(backbone, prefix_tokens)
    decoder = decoder_class(backbone, max_cache_len=96)
    eager = greedy_answers(backbone, [prefix] * 3, prompts, max_new_tokens=8)
    assert greedy_answers(backbone, [prefix] * 3, prompts, max_new_tokens=8, decoder=decoder) == eager
    batch = build_decoder_batch(backbone, [prefix] * 3, prompts)
    forced = dict(max_new_tokens=12, force_new_tokens=True)
    assert (backbone.generate(batch.inputs_embeds, batch.attention_mask, decoder=decoder, **forced)
            == backbone.generate(batch.inputs_embeds, batch.attention_mask, **forced))


@DECODERS
@pytest.mark.parametrize("prefix_tokens", [5, 40])
@pytest.mark.parametrize("exact", [True, False])
def test_prefix_cache_path_matches_eager_and_keeps_the_snapshot(backbone, prefix_tokens, exact, decoder_class):
    """(b)/(c): a static snapshot of `[BOS] + prefix`, copied into the working cache per question batch."""
    prefix, prompts = _setup(backbone, prefix_tokens)
    decode = dict(max_new_tokens=10, force_new_tokens=True, exact=exact)
    eager = cached_answers(backbone, prefill(backbone, prefix), prompts, **decode)
    cache = prefill(backbone, prefix, decoder=decoder_class(backbone, max_cache_len=96))
    before = [(layer.keys.clone(), layer.values.clone()) for layer in cache.past_key_values.layers]
    assert cached_answers(backbone, cache, prompts, **decode) == eager
    assert cached_answers(backbone, cache, prompts, **decode) == eager  # a second batch reads the same prefix
    assert cached_answers(backbone, cache, prompts[1:], **decode) == eager[1:]  # another batch size
    for layer, (keys, values) in zip(cache.past_key_values.layers, before):
        assert torch.equal(layer.keys, keys) and torch.equal(layer.values, values)


def test_cache_lengths_chosen_per_prefix(backbone):
    """max_cache_len=None sizes each cache by what it must hold (powers of two), for `Reader.ask`."""
    prefix, prompts = _setup(backbone, 40)
    decoder = StaticDecoder(backbone, reserve=64)
    cache = prefill(backbone, prefix, decoder=decoder)
    assert cache.max_cache_len == 1024 and decoder.cache_length(1500) == 2048
    assert cached_answers(backbone, cache, prompts, 6) == cached_answers(backbone, prefill(backbone, prefix), prompts, 6)


def test_a_cache_too_short_is_refused(backbone):
    prefix, prompts = _setup(backbone, 40)
    decoder = StaticDecoder(backbone, max_cache_len=48)
    with pytest.raises(InputError, match="do not fit a static decoder cache of 48"):
        greedy_answers(backbone, [prefix] * 3, prompts, max_new_tokens=8, decoder=decoder)
    cache = prefill(backbone, prefix, decoder=decoder)
    with pytest.raises(InputError, match="do not fit"):
        cached_answers(backbone, cache, prompts, max_new_tokens=8)


def test_compiled_decode_steps_match_eager():
    """generate's own compiled decode step (torch.compile; the "eager" dynamo backend needs no C++
    toolchain; on a CPU only through CompileConfig._compile_all_devices) gives the same tokens."""
    backbone = tiny_backbone("gemma3-hybrid")
    prefix, prompts = _setup(backbone, 40)
    decoder = StaticDecoder.compiled(backbone, max_cache_len=96, mode="default", backend="eager")
    decode = dict(max_new_tokens=10, force_new_tokens=True, exact=False)
    eager = cached_answers(backbone, prefill(backbone, prefix), prompts, **decode)
    cache = prefill(backbone, prefix, decoder=decoder)
    assert cached_answers(backbone, cache, prompts, **decode) == eager
    assert cached_answers(backbone, cache, prompts, **decode) == eager
    expected = greedy_answers(backbone, [prefix] * 3, prompts, 8)
    assert greedy_answers(backbone, [prefix] * 3, prompts, 8, decoder=decoder) == expected
    assert hasattr(backbone.model, "_compiled_call")  # generate really took its compiled path


def test_reader_answers_the_same_through_static_caches(backbone):
    """`Reader(decoder=...)` (what `Reader.load(compile_mode=...)` builds on a GPU) changes no answer."""
    from comprexit import ComprExIT, ComprExITConfig
    from comprexit.reader import Reader

    torch.manual_seed(0)
    compressor = ComprExIT.for_backbone(backbone, ComprExITConfig(window=16))
    eager, static = Reader(backbone, compressor), Reader(backbone, compressor, decoder=StaticDecoder(backbone, reserve=64))
    text = "The lighthouse keeper was Thomas Reed. The lens came from Paris. " * 2
    for use_cache in (True, False):
        document = eager.compress(text)
        expected = eager.ask(document, QUESTIONS, max_new_tokens=6, use_cache=use_cache)
        assert static.ask(document, QUESTIONS, max_new_tokens=6, use_cache=use_cache) == expected
        assert (static.ask_full_context(text, QUESTIONS, max_new_tokens=6, use_cache=use_cache)
                == eager.ask_full_context(text, QUESTIONS, max_new_tokens=6, use_cache=use_cache))
