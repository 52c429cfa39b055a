"""A long prefix read in chunks through the cache (decoding/prefill.py) gives the answers of one pass.

The document is longer than the tiny hybrid model's 16-position sliding window (and than several
chunks), so every chunk after the first reads a sliding-window layer's cache that has already
dropped positions: exactly where a chunked prefill could go wrong. Greedy tokens of a float32
model whose weights make answers vary (`varied_backbone`), compared without tolerance.
"""

from functools import partial

import pytest
import torch

from comprexit import ComprExIT, ComprExITConfig
from comprexit.decoding import EagerDecoder, GraphDecoder, StaticDecoder
from comprexit.errors import ConfigError
from comprexit.reader import Reader

from test_static_decoding import QUESTIONS, _cached, _setup
from tiny import varied_backbone

DOCUMENT = (
    "The Harrowby Point lighthouse stands on a granite headland at the northern end of Keel Bay. "
    "Its light was automated in 1989; Thomas Reed, the last keeper, left that autumn."
)


@pytest.fixture(scope="module")
def backbone():
    backbone = varied_backbone("gemma3-hybrid")
    assert backbone.config.sliding_window == 16
    return backbone


@pytest.mark.parametrize("decoder_class", [EagerDecoder, partial(StaticDecoder, max_cache_len=160),
                                           partial(GraphDecoder, max_cache_len=160, bucket=16)],
                         ids=["eager", "static", "graph"])
@pytest.mark.parametrize("chunk", [1, 7, 16, 50])
def test_chunked_prefill_answers_like_one_pass(backbone, decoder_class, chunk):
    prefix, prompts = _setup(backbone, 100)  # [BOS] + 100 positions: 6x the window
    one_pass = _cached(decoder_class(backbone, prefill_chunk=None), prefix, prompts, max_new_tokens=8)
    assert len(set(one_pass)) > 1  # the answers vary, so a wrong key would show
    assert _cached(decoder_class(backbone, prefill_chunk=chunk), prefix, prompts, max_new_tokens=8) == one_pass


def test_chunked_cache_holds_the_keys_of_one_pass(backbone):
    """Beyond the answers: every layer keeps the same keys and values (a sliding layer: its window)."""
    prefix, _ = _setup(backbone, 100)
    whole = EagerDecoder(backbone, prefill_chunk=None).prefill(prefix).past_key_values
    chunked = EagerDecoder(backbone, prefill_chunk=7).prefill(prefix).past_key_values
    for one, other in zip(whole.layers, chunked.layers, strict=True):
        assert one.keys.shape == other.keys.shape
        torch.testing.assert_close(other.keys, one.keys, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(other.values, one.values, rtol=1e-5, atol=1e-5)


def test_reader_full_context_answers_alike_in_chunks_and_counts_progress(backbone):
    torch.manual_seed(0)
    compressor = ComprExIT.for_backbone(backbone, ComprExITConfig(window=16))
    ids = backbone.tokenize(DOCUMENT)
    assert len(ids) > 10 * backbone.config.sliding_window
    one_pass = Reader(backbone, compressor, decoder=EagerDecoder(backbone, prefill_chunk=None))
    chunked = Reader(backbone, compressor, decoder=EagerDecoder(backbone, prefill_chunk=32))
    read = []
    answers = chunked.ask_full_context(DOCUMENT, QUESTIONS, progress=_counting(read))
    assert answers == one_pass.ask_full_context(DOCUMENT, QUESTIONS)
    positions = len(ids) + 1  # [BOS] + the document, read 32 at a time
    assert read == [("reading", positions)] + [32] * (positions // 32) + [positions % 32] * (positions % 32 > 0)


def test_prefill_chunk_must_be_positive(backbone):
    with pytest.raises(ConfigError, match="prefill_chunk must be >= 1"):
        EagerDecoder(backbone, prefill_chunk=0)


def _counting(record: list):
    """A progress factory that records the bar it opens and every update of the first one."""

    class Bar:
        def update(self, n=1):
            record.append(n)

        def close(self):
            pass

    def factory(total, desc, unit):
        if not record:
            record.append((desc, total))
            return Bar()
        return _Quiet()

    return factory


class _Quiet:
    def update(self, n=1):
        pass

    def close(self):
        pass
