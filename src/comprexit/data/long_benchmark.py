"""The long-document QA benchmark: MRQA files whose contexts hide the gold paragraph among distractors.

One file per (source file, length, position), named `{source}_{length}_{position}.jsonl.gz`,
read by `comprexit eval` as it is (give `--context-budget` at least the length, or the
documents are cut to their last 512 tokens). The first line's header records the recipe
(source file and its sha256, length, position, seed, tokenizer, grouping, counts); each
line adds a "gold" object (the gold paragraph's index, character and token offsets, the
document's token count) that the loaders ignore and analyses can use.

Every file of one source holds the same questions: a seeded draw of the source's contexts,
each with at most `per_context` of its questions, until `limit` questions are reached. The files are
written byte-for-byte reproducibly (gzip without a time stamp or file name, fixed key order),
so the same command on the same inputs rebuilds the committed files exactly.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..errors import DataError, InputError
from .distractors import POSITIONS, SEPARATOR, CountTokens, DistractorBuilder, HiddenGold, Unit, units_of
from .files import stream_lines
from .qa import load_qa
from .token_cache import file_digest

RECIPE = "comprexit data distractors, recipe 1"
QA_SUFFIXES = (".jsonl.gz", ".jsonl", ".json.gz", ".json")


def source_stem(path: str | Path) -> str:
    """A source file's name without its data suffix (squad_eval.jsonl.gz -> squad_eval)."""
    name = Path(path).name
    for suffix in QA_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def output_name(source: str | Path, length: int, position: str) -> str:
    return f"{source_stem(source)}_{length}_{position}.jsonl.gz"


def source_split(path: Path) -> str | None:
    """The "split" named by an MRQA file's header line, if it has one."""
    for _, line in stream_lines(path):
        try:
            first = json.loads(line)
        except json.JSONDecodeError:
            return None
        header = first.get("header") if isinstance(first, dict) else None
        return header.get("split") if isinstance(header, dict) else None
    return None


def select_units(units: Sequence[Unit], limit: int | None, seed: int, per_context: int | None = None) -> list[Unit]:
    """A seeded draw of contexts, each with at most `per_context` of its questions, until `limit` questions
    (without a limit: every context, in file order).

    A document costs the same bytes however many questions ask about it, but questions about
    one context are not independent: `per_context` spreads a file's share over more contexts
    (a SQuAD context has ~5 questions). Kept questions are a seeded choice in file order; the
    last context's are cut to make exactly `limit`.
    """
    rng = np.random.default_rng([seed, 1])
    picked, left = [], limit if limit is not None else sum(len(u.questions) for u in units)
    for k in rng.permutation(len(units)) if limit is not None else range(len(units)):
        if left <= 0:
            break
        unit = units[int(k)]
        questions = unit.questions
        if per_context is not None and len(questions) > per_context:
            questions = tuple(questions[int(i)] for i in sorted(rng.choice(len(questions), per_context, replace=False)))
        picked.append(Unit(unit.context, questions[:left]))
        left -= len(picked[-1].questions)
    return picked


def write_jsonl_gz(path: Path, rows: Sequence[dict]) -> None:
    """JSON lines, gzip-compressed with no time stamp or file name, so equal rows give equal bytes."""
    body = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as handle:
        handle.write(body)
    path.write_bytes(buffer.getvalue())


def document_row(unit: Unit, document: HiddenGold, builder: DistractorBuilder) -> dict:
    pool = builder.pool
    return {
        "context": document.text(pool),
        "qas": [{"qid": qa.qid, "question": qa.question, "answers": list(qa.answers)} for qa in unit.questions],
        "gold": {
            "paragraph": document.gold_paragraph,
            "paragraphs": len(document.order),
            "char_start": document.gold_char_start(pool),
            "token_start": document.gold_token_start,
            "tokens": document.tokens,
            "same_article_distractors": document.same_article,
        },
    }


def header_row(header: dict, documents: Sequence[HiddenGold], questions: int, skipped: int) -> dict:
    tokens = [d.tokens for d in documents]
    distractors = [len(d.chosen) for d in documents]
    counts = {
        "questions": questions,
        "documents": len(documents),
        "skipped_questions": skipped,
        "tokens": {"min": min(tokens), "mean": round(float(np.mean(tokens)), 1), "max": max(tokens)} if tokens else None,
        "distractors_mean": round(float(np.mean(distractors)), 2) if documents else None,
        "same_article_distractors_mean": round(float(np.mean([d.same_article for d in documents])), 2) if documents else None,
    }
    return {"header": {**header, "long_document": {**header["long_document"], **counts}}}


def build_benchmark(
    sources: Sequence[str | Path],
    lengths: Sequence[int],
    positions: Sequence[str],
    out_dir: str | Path,
    count_tokens: CountTokens,
    tokenizer_name: str,
    tokenizer_fingerprint: str,
    *,
    limit: int | None = 200,
    per_context: int | None = None,
    seed: int = 0,
    progress: Callable[[], None] | None = None,
) -> list[Path]:
    """Write the benchmark files of every source x length x position into `out_dir`; return their paths.

    progress: called after each file is written (for a progress bar).
    """
    check_plan(sources, lengths, positions, limit, per_context)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sources:
        path = Path(source)
        dataset = load_qa(str(path))
        builder = DistractorBuilder([qa.context for qa in dataset], count_tokens, seed)
        units = select_units(units_of(dataset), limit, seed, per_context)
        recipe = {
            "recipe": RECIPE, "source": path.name, "source_sha256": file_digest(path), "seed": seed, "limit": limit,
            "per_context": per_context, "tokenizer": tokenizer_name, "tokenizer_fingerprint": tokenizer_fingerprint,
            "separator": SEPARATOR, "grouping": builder.pool.grouping,
        }
        for length in lengths:
            for position in positions:
                header = {"dataset": dataset.name, "split": source_split(path),
                          "long_document": {**recipe, "length": length, "position": position}}
                target = out_dir / output_name(path, length, position)
                write_jsonl_gz(target, file_rows(header, units, builder.documents(units, length, position), builder))
                written.append(target)
                if progress:
                    progress()
    return written


def file_rows(header: dict, units: Sequence[Unit], documents: Sequence[HiddenGold | None],
              builder: DistractorBuilder) -> list[dict]:
    """The header line (recipe and counts) and one line per document; units without a document are counted as skipped."""
    kept = [(u, d) for u, d in zip(units, documents) if d is not None]
    skipped = sum(len(u.questions) for u, d in zip(units, documents) if d is None)
    rows = [header_row(header, [d for _, d in kept], sum(len(u.questions) for u, _ in kept), skipped)]
    return rows + [document_row(u, d, builder) for u, d in kept]


def check_plan(sources: Sequence[str | Path], lengths: Sequence[int], positions: Sequence[str], limit: int | None,
               per_context: int | None = None) -> None:
    """Refuse a bad plan before any work: missing files, clashing names, bad lengths, positions or counts."""
    if not sources:
        raise InputError("--data needs at least one QA file")
    for source in sources:
        path = Path(source)
        if str(source).startswith("hf:"):
            raise InputError(f"{source}: the benchmark records its source's sha256, so it needs a file, not a hf: dataset")
        if not path.is_file():
            raise DataError(f"no such file: {path}" if not path.exists() else f"not a file: {path}")
    stems = [source_stem(s) for s in sources]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:
        raise InputError(f"two sources would write files of the same name: {', '.join(clashes)}")
    if not lengths:
        raise InputError("--lengths needs at least one length")
    bad = [n for n in lengths if not isinstance(n, int) or n < 1]
    if bad:
        raise InputError(f"lengths must be positive token counts, got {bad}")
    if len(set(lengths)) != len(lengths):
        raise InputError(f"a length is given twice: {list(lengths)}")
    if not positions:
        raise InputError("--positions needs at least one position")
    unknown = [p for p in positions if p not in POSITIONS]
    if unknown:
        raise InputError(f"unknown position(s) {', '.join(unknown)}: choose from {', '.join(POSITIONS)}")
    if len(set(positions)) != len(positions):
        raise InputError(f"a position is given twice: {list(positions)}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise InputError(f"--limit must be >= 1, got {limit}")
    if per_context is not None and (not isinstance(per_context, int) or per_context < 1):
        raise InputError(f"--per-context must be >= 1, got {per_context}")
