"""Training examples for the two phases, the held-out validation slice, and length-bucketed batches.

Every example is the same shape: a context to compress, the `targets` the decoder reads
after the slots, and `score_from`, the first target index whose token is scored.
  NTP: context = a span of text, targets = the next tokens, all scored.
  SFT: context = a QA context (tail kept), targets = prompt + answer + EOS, answer and EOS scored.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import DataError
from ..evaluation.data import load_qa, keep_tail
from ..prompting import PromptTemplate


@dataclass(frozen=True)
class Example:
    context: tuple[int, ...]
    targets: tuple[int, ...]
    score_from: int = 0

    @property
    def length(self) -> int:
        return len(self.context) + len(self.targets)


@dataclass
class Split:
    train: list[Example]
    validation: list[Example]


def is_held_out(key: str, permille: int) -> bool:
    """Deterministic hold-out by a hash of the text, so the split never depends on file order."""
    return int(hashlib.md5(key.encode("utf-8")).hexdigest()[:8], 16) % 1000 < permille


# ---------------------------------------------------------------------------- NTP
def read_texts(path: str | Path) -> list[str]:
    """Documents of a corpus file: JSON lines with a "text" field (plain or gzip), or a plain text file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"corpus file not found: {path}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 (byte {error.start})") from error
    if not path.name.endswith((".jsonl", ".jsonl.gz", ".json.gz")):
        return [text] if text.strip() else []
    docs = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path.name} line {number}: not valid JSON ({error.msg})") from error
        if isinstance(record, dict) and "header" in record and number == 1:
            continue
        if not isinstance(record, dict) or not isinstance(record.get("text", record.get("context")), str):
            raise DataError(f"{path.name} line {number}: expected an object with a string 'text' field")
        docs.append(record.get("text", record.get("context")))
    if not docs:
        raise DataError(f"{path} holds no documents")
    return docs


def ntp_examples(
    token_lists: Iterable[Sequence[int]], context_tokens: int = 512, continuation_tokens: int = 128
) -> list[Example]:
    """Cut each document into consecutive (context, continuation) pieces.

    A full piece is `context_tokens + continuation_tokens` long; a shorter remainder still
    counts when it gives at least 32 context and 16 continuation tokens, its continuation
    being a quarter of it (at most `continuation_tokens`).
    """
    examples = []
    piece = context_tokens + continuation_tokens
    for ids in token_lists:
        for start in range(0, len(ids), piece):
            chunk = ids[start : start + piece]
            cont = continuation_tokens if len(chunk) == piece else min(continuation_tokens, len(chunk) // 4)
            if len(chunk) - cont >= 32 and cont >= 16:
                examples.append(Example(tuple(chunk[: len(chunk) - cont]), tuple(chunk[len(chunk) - cont :])))
    return examples


def load_ntp(
    backbone,
    files: Sequence[str | Path],
    *,
    context_tokens: int = 512,
    continuation_tokens: int = 128,
    validation_permille: int = 20,
) -> Split:
    """NTP examples from corpus files, split by document into train and validation."""
    train_ids, val_ids = [], []
    for path in files:
        docs = read_texts(path)
        for doc, ids in zip(docs, tokenize_cached(backbone, docs)):
            (val_ids if is_held_out(doc, validation_permille) else train_ids).append(ids)
    return Split(
        ntp_examples(train_ids, context_tokens, continuation_tokens),
        ntp_examples(val_ids, context_tokens, continuation_tokens),
    )


def tokenize_cached(backbone, docs: list[str]) -> list[list[int]]:
    """Token ids of many documents, cached on disk per (texts, tokenizer): every run of a sweep reuses them."""
    import torch

    from ..bundled import cache_root

    digest = hashlib.sha1()
    for doc in docs:
        digest.update(hashlib.sha1(doc.encode("utf-8")).digest())
    digest.update(f"{backbone.identity.name}|{backbone.identity.vocab_size}|{len(backbone.tokenizer)}".encode())
    path = cache_root() / "tokens" / f"{digest.hexdigest()[:24]}.pt"
    if path.is_file():
        return torch.load(path)
    ids = backbone.tokenizer(docs, add_special_tokens=False)["input_ids"] if docs else []
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    torch.save(ids, tmp)
    tmp.replace(path)
    return ids


# ---------------------------------------------------------------------------- SFT
def load_sft(
    backbone,
    files: Sequence[str],
    *,
    template: PromptTemplate | None = None,
    context_budget: int = 512,
    validation_permille: int = 50,
    skip_malformed: bool = False,
) -> tuple[Split, list]:
    """SFT examples from QA files, held out by context. Also returns the held-out QAExamples (for F1)."""
    template = template or PromptTemplate()
    eos = [backbone.eos_token_id] if backbone.eos_token_id is not None else []
    train, validation, held_out_questions = [], [], []
    cache: dict[str, tuple[int, ...]] = {}
    for spec in files:
        for qa in load_qa(str(spec), skip_malformed=skip_malformed):
            if qa.context not in cache:
                cache[qa.context] = tuple(keep_tail(backbone.tokenize(qa.context), context_budget)[0])
            prompt = backbone.tokenize(template.render(qa.question))
            answer = backbone.tokenize(" " + qa.answers[0].strip()) + eos
            example = Example(cache[qa.context], tuple(prompt + answer), score_from=len(prompt))
            if is_held_out(qa.context, validation_permille):
                validation.append(example)
                held_out_questions.append(qa)
            else:
                train.append(example)
    if not train:
        raise DataError(f"no SFT training examples in {list(files)}")
    return Split(train, validation), held_out_questions


# ---------------------------------------------------------------------------- batching
def bucketed_batches(examples: Sequence[Example], batch_size: int, seed: int, pool: int = 64) -> list[list[int]]:
    """Shuffled batches of similar-length examples (indices into `examples`).

    Examples are shuffled, cut into pools of `pool * batch_size`, sorted by length inside a
    pool and batched; the batches are then shuffled. Deterministic for a given seed.
    """
    rng = random.Random(seed)
    order = list(range(len(examples)))
    rng.shuffle(order)
    batches = []
    size = pool * batch_size
    for start in range(0, len(order), size):
        chunk = sorted(order[start : start + size], key=lambda i: examples[i].length)
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches
