"""Plain-text corpora for next-token pretraining, read as streams of documents.

A corpus is a file, JSON lines with a "text" field per document (MRQA files work too: their
"context" fields are the documents) or plain text (one document), or `hf:NAME[:SPLIT]`, a
Hugging Face dataset's "text" column. Both are read as streams: the token cache
(`data.token_cache`) writes their ids to disk as they come, so a corpus larger than memory
never has to be held whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from ..errors import DataError
from .files import HF_PREFIX, FileFormat, corpus_format, read_text, split_hf_spec, stream_lines


def is_streamed(spec: str) -> bool:
    """True for a Hugging Face dataset spec (`hf:NAME[:SPLIT]`), False for a file path."""
    return str(spec).startswith(HF_PREFIX)


def iter_documents(spec: str | Path) -> Iterator[str]:
    """The documents of a corpus file or `hf:` dataset, in order."""
    for _, text in iter_records(spec):
        yield text


def iter_records(spec: str | Path) -> Iterator[tuple[dict | None, str]]:
    """(record, text) of each document: the JSON object or dataset row it came from (None for plain text).

    For readers that need a document's other fields too, e.g. the "source" that names its article.
    """
    if is_streamed(str(spec)):
        yield from _hf_documents(str(spec))
        return
    path = Path(spec)
    kind = corpus_format(path)
    if kind is FileFormat.TEXT:
        text = read_text(path)
        if text.strip():
            yield None, text
        return
    first = True
    for number, line in stream_lines(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path.name} line {number}: not valid JSON ({error.msg})") from error
        if first and isinstance(record, dict) and "header" in record:
            first = False
            continue
        first = False
        body = record.get("text", record.get("context")) if isinstance(record, dict) else None
        if not isinstance(body, str):
            raise DataError(f"{path.name} line {number}: expected an object with a string 'text' field")
        yield record, body


def _hf_documents(spec: str) -> Iterator[tuple[dict, str]]:
    """(row, its "text") of a Hugging Face dataset, streamed (default split: train).

    NAME may also be a local folder of data files that `datasets` reads, which needs no network.
    """
    try:
        import datasets
    except ImportError:
        raise DataError(
            "streaming a Hugging Face dataset needs the 'datasets' package: pip install 'comprexit[hf-datasets]'"
        ) from None
    name, split = split_hf_spec(spec)
    try:
        stream = datasets.load_dataset(name, split=split or "train", streaming=True)
    except Exception as error:  # network, unknown name, bad split: all are the user's to fix
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"cannot stream Hugging Face dataset {spec}: {first}") from error
    for number, row in enumerate(stream):
        body = row.get("text") if isinstance(row, dict) else None
        if not isinstance(body, str):
            raise DataError(f"{spec} row {number}: expected a string 'text' column, got {sorted(row)}")
        if body.strip():
            yield row, body
