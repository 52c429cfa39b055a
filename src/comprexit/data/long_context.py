"""Long NTP spans: whole articles of a chunked corpus, cut into (context of L tokens, continuation) pairs.

Training the compressor on 512-token pieces never asks it to carry a fact across chunks. A
long span asks exactly that: L = 2k, 4k or 8k tokens of one article are compressed chunk by
chunk and the continuation is predicted from all their slots.

What the corpus gives, and what is done with it (`ntp_wikipedia` is the case in point):

* An article is stored as several ~3k-character chunks, one JSON line each, whose `source`
  field names the article after a "#" ("...wiki_43#Martin Scorsese"). Documents with the
  same such source form one article; a document without one (no `source`, or one without
  "#", as in `ntp_debian_docs`, whose sources name only a package) is an article by itself.
* The chunks are shuffled through the file and their order is not recorded (a chunk may
  start mid-word), so an article's chunks are concatenated in file order: a span is one
  topic, but consecutive chunks in it are not consecutive text. They are joined by a blank
  line, and the continuation is always taken from inside one chunk, after at least
  `CONTINUATION_LEAD` of its tokens, so that it continues the text right before it.
* Every chunk opens with the article's title line; where all chunks of an article share
  their first line, that line is kept at the start of the first chunk only.

Spans of one article do not overlap. The token ids come from the memory-mapped token cache
(`token_cache`); this module only computes where each span lies.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .corpus import iter_records
from .token_cache import TokenizedCorpus, holdout_key

CONTINUATION_LEAD = 64  # tokens of the continuation's own chunk that precede it
CHUNK_SEPARATOR = "\n\n"
HEADING_MAX_CHARS = 200


@dataclass(frozen=True)
class Article:
    """One article of a tokenised corpus: its chunks (cache documents, file order) and what each drops."""

    key: str
    documents: np.ndarray  # int64 (chunks,): document indices into the token cache
    skip: np.ndarray  # int64 (chunks,): leading tokens dropped from each chunk (a repeated title line)


def article_key(record: dict | None, index: int) -> str:
    """The article a corpus line belongs to: the page named after '#' in its source, else the line itself."""
    source = record.get("source") if isinstance(record, dict) else None
    if isinstance(source, str) and "#" in source:
        return source
    return f"#document-{index}"


def read_records(spec: str | Path, max_documents: int | None = None) -> tuple[list[str], list[str]]:
    """(article key, first line of the text) of each document of a corpus, in the token cache's order."""
    keys, heads = [], []
    for index, (record, text) in enumerate(itertools.islice(iter_records(spec), max_documents)):
        keys.append(article_key(record, index))
        heads.append(text.partition("\n")[0])
    return keys, heads


def corpus_articles(spec: str | Path, corpus: TokenizedCorpus, tokenizer) -> list[Article]:
    """The articles of a tokenised corpus file, in the order their first chunk appears."""
    keys, heads = read_records(spec, max_documents=len(corpus))
    if len(keys) != len(corpus):
        raise DataError(f"{spec}: {len(keys)} documents in the file but {len(corpus)} in its token cache")
    members: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        members.setdefault(key, []).append(index)
    repeated = {key: heads[docs[0]] for key, docs in members.items() if len(docs) > 1 and _shared_heading(heads, docs)}
    heading_ids = dict(zip(repeated, _tokenize([h + "\n" for h in repeated.values()], tokenizer)))
    articles = []
    for key, docs in members.items():
        skip = np.zeros(len(docs), dtype=np.int64)
        ids = heading_ids.get(key)
        if ids is not None:
            for k, doc in enumerate(docs[1:], start=1):
                if corpus.document(doc)[: len(ids)].tolist() == ids:
                    skip[k] = len(ids)
        articles.append(Article(key, np.asarray(docs, dtype=np.int64), skip))
    return articles


def _shared_heading(heads: Sequence[str], docs: Sequence[int]) -> bool:
    first = heads[docs[0]]
    return bool(first.strip()) and len(first) <= HEADING_MAX_CHARS and all(heads[d] == first for d in docs)


def _tokenize(texts: list[str], tokenizer) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []


def held_out_articles(articles: Sequence[Article], permille: int) -> np.ndarray:
    """(articles,) bool: the validation slice, by a hash of the article's key (all its chunks on one side)."""
    return np.asarray([holdout_key(a.key) % 1000 < permille for a in articles], dtype=bool)


def segment_lengths(corpus: TokenizedCorpus, article: Article) -> np.ndarray:
    """(chunks,) the tokens each chunk contributes to the article's concatenation."""
    return corpus.lengths[article.documents] - article.skip


def span_splits(lengths: Sequence[int], separator: int, context: int, continuation: int,
                lead: int = CONTINUATION_LEAD) -> list[int]:
    """Where each span's continuation starts, in the coordinates of the joined article.

    The article is chunk 0, separator, chunk 1, ... (`lengths` tokens each, `separator` between
    them). A split s gives the span [s - context, s + continuation): the first split is the
    smallest s >= context whose continuation lies inside one chunk after `lead` of its tokens;
    the next search starts `context` tokens after the previous continuation, so spans never overlap.
    """
    starts, ends, position = [], [], 0
    for n in lengths:
        starts.append(position)
        ends.append(position + int(n))
        position += int(n) + separator
    splits, candidate, k = [], context, 0
    while k < len(starts):
        candidate = max(candidate, starts[k] + lead)
        if candidate + continuation > ends[k]:
            k += 1
            continue
        splits.append(candidate)
        candidate += continuation + context
    return splits


def joined_tokens(corpus: TokenizedCorpus, article: Article, separator_ids: Sequence[int]) -> np.ndarray:
    """The article's token ids: its chunks (each less its skipped heading) joined by the separator."""
    separator = np.asarray(separator_ids, dtype=np.int32)
    parts = []
    for k, (doc, skip) in enumerate(zip(article.documents, article.skip)):
        if k:
            parts.append(separator)
        parts.append(np.asarray(corpus.document(int(doc))[int(skip):]))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
