"""Tokenise a corpus once, keep the token ids on disk, memory-map them in every later run.

A 200 M-character corpus takes minutes to tokenise and gigabytes as Python lists; cached, a
run opens it in milliseconds and each data-parallel process shares the same pages. Documents
are streamed through the tokenizer to disk, so a corpus need not fit in memory. The cache of
one corpus is a folder named by a digest of (cache version, the file's bytes or a streamed
dataset's spec, the tokenizer), so a changed file or another tokenizer never reads stale ids:

    meta.json     what the folder holds (file digest, tokenizer fingerprint, counts); written last
    tokens.bin    int32 (tokens,): every document's ids, one after the other
    offsets.bin   int64 (documents + 1,): document i is tokens[offsets[i]:offsets[i + 1]]
    keys.bin      uint32 (documents,): the hold-out hash of each document's text (`holdout_key`)

Folders are built under a temporary name and renamed into place, so a killed build leaves
nothing half-written behind; a folder that fails its checks is refused with a message that
says how to rebuild it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .corpus import is_streamed, iter_documents

CACHE_VERSION = 1
BUILD_BATCH = 256  # documents per tokenizer call (the Rust tokenizer spreads a batch over cores)


def holdout_key(text: str) -> int:
    """A stable 32-bit hash of a text: documents with `key % 1000 < permille` are held out."""
    return int(hashlib.md5(text.encode("utf-8")).hexdigest()[:8], 16)


def is_held_out(text: str, permille: int) -> bool:
    """Deterministic hold-out by a hash of the text, so the split never depends on file order."""
    return holdout_key(text) % 1000 < permille


def file_digest(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """A digest of everything that decides a tokenizer's ids (its serialised pipeline, or its vocabulary)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        described = backend.to_str()
    else:  # a slow tokenizer: its class, vocabulary and special tokens
        described = json.dumps([type(tokenizer).__name__, sorted(tokenizer.get_vocab().items()),
                                tokenizer.all_special_tokens])
    return hashlib.sha256(described.encode("utf-8")).hexdigest()[:16]


@dataclass
class TokenizedCorpus:
    """The memory-mapped token ids of one corpus file (see the module docstring for the layout)."""

    folder: Path
    source: str
    tokens: np.ndarray  # int32 (tokens,)
    offsets: np.ndarray  # int64 (documents + 1,)
    keys: np.ndarray  # uint32 (documents,)

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def document(self, index: int) -> np.ndarray:
        return self.tokens[self.offsets[index] : self.offsets[index + 1]]

    def held_out(self, permille: int) -> np.ndarray:
        """(documents,) bool: which documents belong to the validation slice."""
        return self.keys % 1000 < permille


def source_digest(spec: str | Path, max_documents: int | None = None) -> str:
    """What identifies a corpus's contents: a file's sha256, or a streamed dataset's spec."""
    if is_streamed(str(spec)):
        return hashlib.sha256(f"{spec}|{max_documents}".encode()).hexdigest()
    path = Path(spec)
    if not path.is_file():
        raise DataError(f"no such file: {path}" if not path.exists() else f"not a file: {path}")
    return file_digest(path) if max_documents is None else f"{file_digest(path)}|{max_documents}"


def cache_folder(digest: str, tokenizer, cache_dir: Path) -> Path:
    """The folder of the corpus with `digest` tokenised by `tokenizer`."""
    key = hashlib.sha256(f"{CACHE_VERSION}|{digest}|{tokenizer_fingerprint(tokenizer)}".encode()).hexdigest()
    return Path(cache_dir) / key[:24]


def tokenized_corpus(
    spec: str | Path,
    tokenizer,
    cache_dir: Path | None = None,
    max_documents: int | None = None,
    show_progress: bool = True,
) -> TokenizedCorpus:
    """The token ids of a corpus file or `hf:` dataset (its first `max_documents`), cached on first use."""
    if cache_dir is None:
        from ..bundled import cache_root

        cache_dir = cache_root() / "tokens"
    digest = source_digest(spec, max_documents)
    folder = cache_folder(digest, tokenizer, cache_dir)
    if not folder.exists():
        _build(spec, digest, tokenizer, folder, max_documents, show_progress)
    return open_cache(folder, expected_source=str(spec))


def open_cache(folder: Path, expected_source: str | None = None) -> TokenizedCorpus:
    """Memory-map a cache folder, refusing one whose files disagree with its meta.json."""
    folder = Path(folder)

    def corrupt(why: str) -> DataError:
        return DataError(f"token cache {folder} is corrupt ({why}); delete that folder and run again to rebuild it")

    try:
        meta = json.loads((folder / "meta.json").read_text())
        documents, total = int(meta["documents"]), int(meta["tokens"])
    except FileNotFoundError:
        raise corrupt("meta.json is missing") from None
    except (ValueError, KeyError, TypeError) as error:
        raise corrupt(f"meta.json is unreadable: {error}") from None
    if meta.get("version") != CACHE_VERSION:
        raise corrupt(f"version {meta.get('version')!r}, expected {CACHE_VERSION}")
    expected = {"tokens.bin": 4 * total, "offsets.bin": 8 * (documents + 1), "keys.bin": 4 * documents}
    for name, size in expected.items():
        actual = (folder / name).stat().st_size if (folder / name).is_file() else None
        if actual != size:
            raise corrupt(f"{name} holds {actual} bytes, expected {size}")
    offsets = np.fromfile(folder / "offsets.bin", dtype=np.int64)
    if offsets[0] != 0 or offsets[-1] != total or np.any(np.diff(offsets) < 0):
        raise corrupt("document offsets are out of order")
    tokens = np.memmap(folder / "tokens.bin", dtype=np.int32, mode="r", shape=(total,)) if total else np.zeros(0, np.int32)
    keys = np.fromfile(folder / "keys.bin", dtype=np.uint32)
    return TokenizedCorpus(folder, expected_source or meta.get("source", ""), tokens, offsets, keys)


@contextmanager
def parallel_tokenizer():
    """Let the Rust tokenizer use every core inside (the CLI turns that off): for building a token cache,
    or the long documents of distractor training."""
    before = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = before


def _build(spec, digest: str, tokenizer, folder: Path, max_documents: int | None, show_progress: bool) -> None:
    """Stream the documents through the tokenizer into a staging folder, then rename it into place."""
    from tqdm.auto import tqdm

    staging = folder.with_name(f".{folder.name}.{os.getpid()}.building")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    offsets, keys = [0], []
    bar = tqdm(desc=f"tokenising {Path(str(spec)).name}", unit="doc", disable=not show_progress)
    documents = itertools.islice(iter_documents(spec), max_documents)
    with open(staging / "tokens.bin", "wb") as out, parallel_tokenizer():
        while batch := list(itertools.islice(documents, BUILD_BATCH)):
            for text, ids in zip(batch, tokenizer(batch, add_special_tokens=False)["input_ids"]):
                np.asarray(ids, dtype=np.int32).tofile(out)
                offsets.append(offsets[-1] + len(ids))
                keys.append(holdout_key(text))
            bar.update(len(batch))
    bar.close()
    if not keys:
        shutil.rmtree(staging, ignore_errors=True)
        raise DataError(f"{spec} holds no documents")
    np.asarray(offsets, dtype=np.int64).tofile(staging / "offsets.bin")
    np.asarray(keys, dtype=np.uint32).tofile(staging / "keys.bin")
    meta = {"version": CACHE_VERSION, "source": str(spec), "digest": digest,
            "tokenizer": tokenizer_fingerprint(tokenizer), "documents": len(keys), "tokens": offsets[-1]}
    (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    try:
        staging.rename(folder)
    except OSError:  # another process finished the same cache first: keep theirs
        shutil.rmtree(staging, ignore_errors=True)
        if not folder.exists():
            raise
