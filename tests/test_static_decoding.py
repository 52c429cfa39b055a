"""Static-cache decoding gives the eager dynamic-cache answers, token for token: through generate
(decoding/static.py) and through our own loop (decoding/graph.py; more of it in test_graph_decoding.py).

Exact equality, no tolerance: greedy tokens of tiny float32 models whose weights make answers vary
(`varied_backbone`). The Gemma-3-style backbones have a 16-position sliding window, so prefix +
prompt outgrow it, as a 2048-token document's cache outgrows Gemma-3-270M's 512-position window.
"""

from functools import partial

import pytest
import torch

from comprexit.assembly import LEFT
from comprexit.decoding import EagerDecoder, GraphDecoder, StaticDecoder
from comprexit.errors import InputError
from comprexit.prefix import SoftPrefix, SoftPrefixBatch

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


def _cached(decoder, prefix, prompts, *args, **kwargs):
    """Answers of `prompts` after `decoder`'s own cache of `[BOS] + prefix`."""
    return decoder.cached_answers(decoder.prefill(prefix), prompts, *args, **kwargs)


@DECODERS
@pytest.mark.parametrize("prefix_tokens", [5, 40])
def test_left_padded_path_matches_eager(backbone, prefix_tokens, decoder_class):
    """(a): left-padded `[BOS] + prefix + prompt` from the decoder's empty working cache."""
    prefix, prompts = _setup(backbone, prefix_tokens)
    rows = [SoftPrefix(prefix)] * 3
    eager = EagerDecoder(backbone).answers(rows, prompts, max_new_tokens=8)
    assert decoder_class(backbone, max_cache_len=96).answers(rows, prompts, max_new_tokens=8) == eager
    inputs = SoftPrefixBatch.stack(rows).inputs(backbone, prompts, side=LEFT)
    unstopped = decoder_class(backbone, max_cache_len=96, stops=()).generate(inputs, 12)  # exactly 12 tokens a row
    assert unstopped == EagerDecoder(backbone, stops=()).generate(inputs, 12)
    assert all(len(row) == 12 for row in unstopped)


@DECODERS
@pytest.mark.parametrize("prefix_tokens", [5, 40])
@pytest.mark.parametrize("exact", [True, False])
def test_prefix_cache_path_matches_eager_and_keeps_the_snapshot(backbone, prefix_tokens, exact, decoder_class):
    """(b)/(c): a static snapshot of `[BOS] + prefix`, copied into the working cache per question batch."""
    prefix, prompts = _setup(backbone, prefix_tokens)
    decode = dict(max_new_tokens=10, exact=exact)
    eager = _cached(EagerDecoder(backbone, stops=()), prefix, prompts, **decode)
    decoder = decoder_class(backbone, max_cache_len=96, stops=())
    cache = decoder.prefill(prefix)
    before = [(layer.keys.clone(), layer.values.clone()) for layer in cache.past_key_values.layers]
    assert decoder.cached_answers(cache, prompts, **decode) == eager
    assert decoder.cached_answers(cache, prompts, **decode) == eager  # a second batch reads the same prefix
    assert decoder.cached_answers(cache, prompts[1:], **decode) == eager[1:]  # another batch size
    for layer, (keys, values) in zip(cache.past_key_values.layers, before):
        assert torch.equal(layer.keys, keys) and torch.equal(layer.values, values)


def test_cache_lengths_chosen_per_prefix(backbone):
    """max_cache_len=None sizes each cache by what it must hold (powers of two), for `Reader.ask`."""
    prefix, prompts = _setup(backbone, 40)
    decoder = StaticDecoder(backbone, reserve=64)
    cache = decoder.prefill(prefix)
    assert decoder.caches.length(cache.past_key_values) == 1024 and decoder.caches.cache_length(1500) == 2048
    assert decoder.cached_answers(cache, prompts, 6) == _cached(EagerDecoder(backbone), prefix, prompts, 6)


def test_a_cache_too_short_is_refused(backbone):
    prefix, prompts = _setup(backbone, 40)
    decoder = StaticDecoder(backbone, max_cache_len=48)
    with pytest.raises(InputError, match="do not fit a static decoder cache of 48"):
        decoder.answers([SoftPrefix(prefix)] * 3, prompts, max_new_tokens=8)
    with pytest.raises(InputError, match="do not fit"):
        _cached(decoder, prefix, prompts, max_new_tokens=8)


def test_compiled_decode_steps_match_eager():
    """generate's own compiled decode step (torch.compile; the "eager" dynamo backend needs no C++
    toolchain; on a CPU only through CompileConfig._compile_all_devices) gives the same tokens."""
    backbone = tiny_backbone("gemma3-hybrid")
    prefix, prompts = _setup(backbone, 40)
    decoder = StaticDecoder.compiled(backbone, max_cache_len=96, mode="default", backend="eager", stops=())
    decode = dict(max_new_tokens=10, exact=False)
    eager = _cached(EagerDecoder(backbone, stops=()), prefix, prompts, **decode)
    cache = decoder.prefill(prefix)
    assert decoder.cached_answers(cache, prompts, **decode) == eager
    assert decoder.cached_answers(cache, prompts, **decode) == eager
    rows = [SoftPrefix(prefix)] * 3
    assert decoder.answers(rows, prompts, 8) == EagerDecoder(backbone, stops=()).answers(rows, prompts, 8)
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


def test_a_document_cache_is_read_only_by_the_decoder_that_prefilled_it(backbone):
    """Two readers over one document, each with its own decoder: the second prefills its own cache
    instead of decoding through the first one's (whose 48 positions its answers would overrun)."""
    from comprexit import ComprExIT, ComprExITConfig
    from comprexit.reader import Reader

    torch.manual_seed(0)
    compressor = ComprExIT.for_backbone(backbone, ComprExITConfig(window=16))
    eager = Reader(backbone, compressor)
    document = eager.compress("The lens came from Paris. " * 2)
    prompts = [eager.prompt_ids(q) for q in QUESTIONS]
    room = 1 + document.num_slots + max(len(p) for p in prompts) + 2
    tight = Reader(backbone, compressor, decoder=StaticDecoder(backbone, max_cache_len=room))
    roomy = Reader(backbone, compressor, decoder=StaticDecoder(backbone, reserve=64))
    expected = {n: eager.ask(document, QUESTIONS, max_new_tokens=n, use_cache=False) for n in (2, 8)}
    assert tight.ask(document, QUESTIONS, max_new_tokens=2) == expected[2]
    assert roomy.ask(document, QUESTIONS, max_new_tokens=8) == expected[8]
    with pytest.raises(InputError, match="do not fit"):  # the tight decoder, its own cache again
        tight.ask(document, QUESTIONS, max_new_tokens=8)
