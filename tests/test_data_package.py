"""The data package: one reader per suffix, the token cache, source mixtures, NTP pieces from the cache."""

import gzip
import json
from collections import Counter

import numpy as np
import pytest

from comprexit.data import token_cache
from comprexit.data.corpus import iter_documents
from comprexit.data.files import FileFormat, file_format, read_text
from comprexit.data.mixture import epoch_indices, shares
from comprexit.data.qa import load_qa
from comprexit.data.token_cache import open_cache, tokenized_corpus
from comprexit.errors import ConfigError, DataError
from comprexit.training.data import CorpusPieces, ntp_examples

from tiny import char_tokenizer


def write_corpus(path, texts):
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as handle:
        for text in texts:
            handle.write(json.dumps({"text": text}) + "\n")
    return path


class CountingTokenizer:
    """A tokenizer that counts its batch calls, to see whether a cache was built or reused."""

    def __init__(self, tokenizer):
        self.inner, self.calls = tokenizer, 0
        self.backend_tokenizer = tokenizer.backend_tokenizer

    def __call__(self, texts, **kwargs):
        self.calls += 1
        return self.inner(texts, **kwargs)


def test_one_meaning_per_suffix():
    assert file_format("a.jsonl") is file_format("a.JSONL.GZ") is FileFormat.JSON_LINES
    assert file_format("squad.json") is file_format("squad.json.gz") is FileFormat.JSON
    assert file_format("notes.txt") is file_format("notes") is FileFormat.TEXT


def test_squad_json_gz_is_squad_json_in_every_reader(tmp_path):
    squad = tmp_path / "train.json.gz"
    document = {"data": [{"paragraphs": [{"context": "Ada lives in Oslo.",
                                          "qas": [{"id": "a", "question": "Where?", "answers": [{"text": "Oslo"}]}]}]}]}
    squad.write_bytes(gzip.compress(json.dumps(document).encode()))
    assert [e.answers for e in load_qa(str(squad))] == [("Oslo",)]
    with pytest.raises(DataError, match="a .json file is read as SQuAD JSON"):
        list(iter_documents(squad))


def test_corrupt_gzip_and_bad_bytes_are_one_line_errors(tmp_path):
    cut = tmp_path / "cut.jsonl.gz"
    lines = "".join(json.dumps({"text": f"line {i} {i * 7919 % 10007}"}) + "\n" for i in range(3000))
    cut.write_bytes(gzip.compress(lines.encode())[:2000])
    with pytest.raises(DataError, match="cut.jsonl.gz: corrupt gzip"):
        list(iter_documents(cut))
    with pytest.raises(DataError, match="cut.jsonl.gz: corrupt gzip"):
        read_text(cut)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DataError, match="latin.txt: not UTF-8"):
        read_text(latin)


def test_token_cache_is_built_once_and_reused(tmp_path):
    texts = [f"document {i} " + "abc " * (i % 7) for i in range(300)]
    corpus = write_corpus(tmp_path / "corpus.jsonl.gz", texts)
    tokenizer = CountingTokenizer(char_tokenizer())
    first = tokenized_corpus(corpus, tokenizer, cache_dir=tmp_path / "cache", show_progress=False)
    calls = tokenizer.calls
    assert calls == -(-300 // token_cache.BUILD_BATCH)
    again = tokenized_corpus(corpus, tokenizer, cache_dir=tmp_path / "cache", show_progress=False)
    assert tokenizer.calls == calls and again.folder == first.folder  # opened, not rebuilt
    expected = tokenizer.inner(texts, add_special_tokens=False)["input_ids"]
    assert len(again) == 300 and [again.document(i).tolist() for i in range(300)] == expected
    assert isinstance(again.tokens, np.memmap)
    held = again.held_out(100)
    assert held.tolist() == [token_cache.is_held_out(t, 100) for t in texts] and 0 < held.sum() < 300


def test_token_cache_follows_the_file_and_the_tokenizer(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl", ["one two", "three"])
    cache = tmp_path / "cache"
    before = tokenized_corpus(corpus, char_tokenizer(), cache_dir=cache, show_progress=False)
    write_corpus(corpus, ["one two", "three four"])
    changed_file = tokenized_corpus(corpus, char_tokenizer(), cache_dir=cache, show_progress=False)
    assert changed_file.folder != before.folder and len(changed_file.document(1)) == len("three four")
    other = char_tokenizer()
    other.add_tokens(["three"])
    changed_tokenizer = tokenized_corpus(corpus, other, cache_dir=cache, show_progress=False)
    assert changed_tokenizer.folder not in (before.folder, changed_file.folder)
    assert len(changed_tokenizer.document(1)) == 1 + len(" four")


@pytest.mark.parametrize("damage", ["truncate tokens", "drop meta", "scramble offsets"])
def test_a_corrupt_token_cache_is_refused_with_a_clear_message(tmp_path, damage):
    corpus = write_corpus(tmp_path / "corpus.jsonl", ["alpha beta", "gamma", "delta epsilon"])
    built = tokenized_corpus(corpus, char_tokenizer(), cache_dir=tmp_path / "cache", show_progress=False)
    if damage == "truncate tokens":
        path = built.folder / "tokens.bin"
        path.write_bytes(path.read_bytes()[:-4])
    elif damage == "drop meta":
        (built.folder / "meta.json").unlink()
    else:
        np.array([0, 9, 3, 25], dtype=np.int64).tofile(built.folder / "offsets.bin")
    with pytest.raises(DataError, match=r"token cache .* is corrupt .*delete that folder and run again"):
        tokenized_corpus(corpus, char_tokenizer(), cache_dir=tmp_path / "cache", show_progress=False)


def test_streaming_reads_only_the_documents_asked_for(tmp_path):
    corpus = write_corpus(tmp_path / "big.jsonl.gz", [f"doc {i}" for i in range(1000)])
    cached = tokenized_corpus(corpus, char_tokenizer(), cache_dir=tmp_path / "cache", max_documents=10,
                              show_progress=False)
    assert len(cached) == 10
    assert open_cache(cached.folder).document(9).tolist() == char_tokenizer()("doc 9", add_special_tokens=False)["input_ids"]


def test_a_hugging_face_dataset_streams_into_the_cache(tmp_path):
    pytest.importorskip("datasets")
    folder = tmp_path / "local_dataset"
    folder.mkdir()
    write_corpus(folder / "train.jsonl", [f"streamed text {i}" for i in range(40)])
    cached = tokenized_corpus(f"hf:{folder}", char_tokenizer(), cache_dir=tmp_path / "cache", max_documents=25,
                              show_progress=False)
    assert len(cached) == 25
    assert cached.document(3).tolist() == char_tokenizer()("streamed text 3", add_special_tokens=False)["input_ids"]


def test_pieces_cut_from_the_cache_equal_pieces_cut_in_memory(tmp_path):
    rng = np.random.default_rng(0)
    texts = ["".join(rng.choice(list("abcdefgh "), size=int(n))) for n in rng.integers(10, 900, size=40)]
    corpus = write_corpus(tmp_path / "c.jsonl", texts)
    cached = tokenized_corpus(corpus, char_tokenizer(), cache_dir=tmp_path / "cache", show_progress=False)
    pieces = CorpusPieces("c", cached, np.arange(len(cached)), context=96, continuation=32)
    expected = ntp_examples(char_tokenizer()(texts, add_special_tokens=False)["input_ids"], 96, 32)
    assert len(pieces) == len(expected) > 40
    assert [pieces[i] for i in range(len(pieces))] == expected
    assert pieces.lengths.tolist() == [e.length for e in expected]


def test_source_weights_are_honoured_each_epoch():
    sizes = [1000, 50, 200]
    assert shares(sizes, None) == sizes
    assert shares(sizes, [0.6, 0.2, 0.2]) == [750, 250, 250]
    indices = epoch_indices(sizes, [0.6, 0.2, 0.2], seed=0, epoch=0)
    source = np.searchsorted([0, 1000, 1050], indices, side="right") - 1
    assert Counter(source.tolist()) == {0: 750, 1: 250, 2: 250}
    small = Counter(indices[source == 1].tolist())
    assert set(small.values()) == {5}  # the 50-example source is repeated whole, five times
    assert len(set(indices[source == 0].tolist())) == 750  # the large one sub-sampled without repeats
    again = epoch_indices(sizes, [0.6, 0.2, 0.2], seed=0, epoch=0)
    assert np.array_equal(indices, again)
    assert not np.array_equal(np.sort(indices), np.sort(epoch_indices(sizes, [0.6, 0.2, 0.2], seed=0, epoch=1)))
    with pytest.raises(ConfigError, match="one per source"):
        shares(sizes, [1.0, 1.0])
    with pytest.raises(ConfigError, match="positive sum"):
        shares(sizes, [0, 0, 0])


def test_a_data_fraction_keeps_a_fixed_random_share_of_one_source():
    from comprexit.training.data import Example, ExampleSet, ListSource

    big = ListSource("big", [Example((i,), (1, 2)) for i in range(1000)])
    small = ListSource("small", [Example((i,), (3,)) for i in range(50)])
    both = ExampleSet([big, small])
    tenth = both.fractions([0.1, 1.0], seed=0)
    assert tenth.sizes == [100, 50] and len(tenth) == 150
    kept = [tenth[i].context[0] for i in range(100)]
    assert kept == sorted(kept) and len(set(kept)) == 100 and kept != list(range(100))  # random, in order
    assert [tenth[i] for i in range(100, 150)] == [small[i] for i in range(50)]
    assert tenth.lengths.tolist() == [3] * 100 + [2] * 50
    again = both.fractions([0.1, 1.0], seed=0)
    assert [again[i] for i in range(150)] == [tenth[i] for i in range(150)]
