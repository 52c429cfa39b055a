"""QA data: MRQA JSON lines, SQuAD JSON and Hugging Face datasets, for training and evaluation alike.

Every loader returns a `QADataset` of `QAExample`s (one per question, with all of its gold
answers). Bad input raises `DataError` with a one-line message that names the file and the
place inside it, so a user can fix the file instead of reading a traceback. Loaders can be
asked to skip malformed entries instead; the number skipped is always reported in
`QADataset.skipped_lines`, never dropped silently.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import DataError
from .files import HF_PREFIX, FileFormat, file_format, json_lines, read_text, split_hf_spec

_MRQA_SUFFIXES = (".jsonl.gz", ".jsonl", ".gz")
_SQUAD_SUFFIXES = (".json.gz", ".json")


@dataclass(frozen=True)
class QAExample:
    """One question about one context, with every acceptable gold answer."""

    qid: str
    context: str
    question: str
    answers: tuple[str, ...]
    dataset: str


@dataclass
class QADataset:
    """The questions of one dataset, where they came from, and how many entries were skipped."""

    name: str
    examples: list[QAExample]
    source: str
    skipped_lines: int = 0

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[QAExample]:
        return iter(self.examples)

    def limit(self, n: int) -> QADataset:
        """A copy holding only the first `n` examples (for quick runs); the original is unchanged."""
        if n < 0:
            raise DataError(f"limit must be >= 0, got {n}")
        return replace(self, examples=self.examples[:n])


class _Malformed(Exception):
    """Internal: one entry is unusable; the caller adds the file and location."""


# --------------------------------------------------------------------------- helpers


def _name_from_path(path: Path, suffixes: tuple[str, ...]) -> str:
    """File name without its data suffix, used as the dataset name when the file has none."""
    name = path.name
    for suffix in suffixes:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def _require_str(value: Any, what: str, *, allow_blank: bool = False) -> str:
    if not isinstance(value, str):
        raise _Malformed(f"{what} must be a string, got {type(value).__name__}")
    if not allow_blank and not value.strip():
        raise _Malformed(f"{what} is blank")
    return value


def _dedupe(answers: list[str]) -> tuple[str, ...]:
    """Drop repeated gold strings (annotators often agree), keeping first-seen order."""
    return tuple(dict.fromkeys(answers))


def _check_answer_list(answers: Any, what: str) -> list[str]:
    if not isinstance(answers, list):
        raise _Malformed(f"{what} must be a list, got {type(answers).__name__}")
    if not answers:
        raise _Malformed(f"{what} is empty")
    for i, answer in enumerate(answers):
        _require_str(answer, f"{what}[{i}]")
    return answers


def _qid(value: Any, fallback: str) -> str:
    """Question id as a string; a missing id is replaced by a position-based one."""
    if value is None:
        return fallback
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _Malformed(f"'qid' must be a string, got {type(value).__name__}")
    return str(value)


def _no_examples(source: Path | str, skipped: int) -> DataError:
    detail = f" ({skipped} malformed entries skipped)" if skipped else ""
    return DataError(f"{source}: no questions found{detail}")


# --------------------------------------------------------------------------- MRQA


def _mrqa_answers(qa: dict[str, Any]) -> list[str]:
    """Gold strings of an MRQA question; `detected_answers` texts stand in when `answers` is absent."""
    if "answers" in qa:
        return _check_answer_list(qa["answers"], "'answers'")
    detected = qa.get("detected_answers")
    if detected is None:
        raise _Malformed("missing 'answers'")
    if not isinstance(detected, list) or not detected:
        raise _Malformed("'answers' is missing and 'detected_answers' is not a non-empty list")
    texts = []
    for i, item in enumerate(detected):
        if not isinstance(item, dict) or "text" not in item:
            raise _Malformed(f"'detected_answers'[{i}] has no 'text'")
        texts.append(_require_str(item["text"], f"'detected_answers'[{i}].text"))
    return texts


def _mrqa_line(record: Any, dataset: str, line_no: int) -> list[QAExample]:
    """The questions of one MRQA context line; raises _Malformed if any part is unusable."""
    if not isinstance(record, dict):
        raise _Malformed(f"expected a JSON object, got {type(record).__name__}")
    if "header" in record:
        raise _Malformed("a header is only allowed on the first line")
    if "context" not in record:
        raise _Malformed("missing 'context'")
    context = _require_str(record["context"], "'context'", allow_blank=True)
    if "qas" not in record:
        raise _Malformed("missing 'qas'")
    qas = record["qas"]
    if not isinstance(qas, list):
        raise _Malformed("'qas' must be a list")
    examples = []
    for j, qa in enumerate(qas):
        try:
            if not isinstance(qa, dict):
                raise _Malformed(f"expected an object, got {type(qa).__name__}")
            if "question" not in qa:
                raise _Malformed("missing 'question'")
            question = _require_str(qa["question"], "'question'")
            answers = _mrqa_answers(qa)
            qid = _qid(qa.get("qid"), f"{dataset}-{line_no}-{j}")
        except _Malformed as exc:
            raise _Malformed(f"qas[{j}]: {exc}") from None
        examples.append(QAExample(qid, context, question, _dedupe(answers), dataset))
    return examples


def load_mrqa(path: str | Path, *, skip_malformed: bool = False, name: str | None = None) -> QADataset:
    """Read an MRQA 2019 JSON-lines file (plain or gzip) into one example per question.

    The optional first line ``{"header": {"dataset": ...}}`` names the dataset; otherwise the
    file name without ``.jsonl.gz``/``.jsonl``/``.gz`` is used, and `name` overrides both.
    Blank lines are ignored. A malformed line raises `DataError` naming the file and its
    1-based line number, or with `skip_malformed` is skipped as a whole and counted in
    `skipped_lines`. A file with no questions at all is an error either way.
    """
    path = Path(path)
    text = read_text(path)
    dataset = _name_from_path(path, _MRQA_SUFFIXES)
    examples: list[QAExample] = []
    skipped = 0
    first_record = True
    for line_no, line in json_lines(text):
        try:
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise _Malformed(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
            if first_record and isinstance(record, dict) and "header" in record:
                first_record = False
                header = record["header"]
                if not isinstance(header, dict):
                    raise _Malformed("'header' must be an object")
                if header.get("dataset") is not None:
                    dataset = _require_str(header["dataset"], "header 'dataset'")
                continue
            first_record = False
            examples.extend(_mrqa_line(record, name or dataset, line_no))
        except _Malformed as exc:
            if not skip_malformed:
                raise DataError(f"{path} line {line_no}: {exc}") from None
            skipped += 1
    if not examples:
        raise _no_examples(path, skipped)
    return QADataset(name or dataset, examples, str(path), skipped)


# --------------------------------------------------------------------------- SQuAD JSON


def _squad_answers(answers: Any) -> list[str]:
    """Gold strings of a SQuAD question: ``[{"text": ...}]`` (plain strings are accepted too)."""
    if not isinstance(answers, list):
        raise _Malformed(f"'answers' must be a list, got {type(answers).__name__}")
    if not answers:
        raise _Malformed("'answers' is empty")
    texts = []
    for i, answer in enumerate(answers):
        if isinstance(answer, dict):
            if "text" not in answer:
                raise _Malformed(f"answers[{i}] has no 'text'")
            answer = answer["text"]
        texts.append(_require_str(answer, f"answers[{i}].text"))
    return texts


def _as_list(container: dict[str, Any], key: str) -> list[Any]:
    if not isinstance(container, dict):
        raise _Malformed(f"expected an object, got {type(container).__name__}")
    if key not in container:
        raise _Malformed(f"missing '{key}'")
    value = container[key]
    if not isinstance(value, list):
        raise _Malformed(f"'{key}' must be a list")
    return value


def load_squad_json(
    path: str | Path, *, skip_malformed: bool = False, name: str | None = None
) -> QADataset:
    """Read a SQuAD v1.1-style JSON file (``{"data": [{"paragraphs": [...]}]}``).

    Errors name the file and the location, e.g. ``data[3].paragraphs[2].qas[0]``. With
    `skip_malformed` the smallest broken unit (article, paragraph or question) is skipped
    and counted in `skipped_lines`. SQuAD v2.0 questions marked ``is_impossible`` with no
    answers cannot be scored by EM/F1 against a gold span, so they are always skipped and
    counted in `skipped_lines` too. Questions without an ``id`` get their location as id.
    """
    path = Path(path)
    text = read_text(path)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    try:
        articles = _as_list(document, "data")
    except _Malformed as exc:
        raise DataError(f"{path}: {exc}") from None
    dataset = name or _name_from_path(path, _SQUAD_SUFFIXES)
    examples: list[QAExample] = []
    skipped = 0

    def broken(location: str, exc: _Malformed) -> None:
        nonlocal skipped
        if not skip_malformed:
            raise DataError(f"{path} {location}: {exc}") from None
        skipped += 1

    for a, article in enumerate(articles):
        try:
            paragraphs = _as_list(article, "paragraphs")
        except _Malformed as exc:
            broken(f"data[{a}]", exc)
            continue
        for p, paragraph in enumerate(paragraphs):
            where = f"data[{a}].paragraphs[{p}]"
            try:
                qas = _as_list(paragraph, "qas")
                if "context" not in paragraph:
                    raise _Malformed("missing 'context'")
                context = _require_str(paragraph["context"], "'context'", allow_blank=True)
            except _Malformed as exc:
                broken(where, exc)
                continue
            for q, qa in enumerate(qas):
                location = f"{where}.qas[{q}]"
                try:
                    if not isinstance(qa, dict):
                        raise _Malformed(f"expected an object, got {type(qa).__name__}")
                    if qa.get("is_impossible") is True and not qa.get("answers"):
                        skipped += 1  # unanswerable (SQuAD v2.0): nothing to score against
                        continue
                    if "question" not in qa:
                        raise _Malformed("missing 'question'")
                    question = _require_str(qa["question"], "'question'")
                    if "answers" not in qa:
                        raise _Malformed("missing 'answers'")
                    answers = _squad_answers(qa["answers"])
                    qid = _qid(qa.get("id"), location)
                except _Malformed as exc:
                    broken(location, exc)
                    continue
                examples.append(QAExample(qid, context, question, _dedupe(answers), dataset))
    if not examples:
        raise _no_examples(path, skipped)
    return QADataset(dataset, examples, str(path), skipped)


# --------------------------------------------------------------------------- Hugging Face


def load_hf_dataset(
    name: str, split: str = "validation", *, config: str | None = None, limit: int | None = None
) -> QADataset:
    """Load a SQuAD-like dataset from the Hugging Face hub (needs network and `datasets`).

    Expects the columns ``context``, ``question`` and ``answers`` (``{"text": [...]}``) and
    uses ``id`` when present. Rows without any answer text (SQuAD v2.0 unanswerables) are
    skipped and counted in `skipped_lines`. `limit` stops after that many rows are read.
    """
    try:
        import datasets  # optional dependency, only needed for hf: specs
    except ImportError:
        raise DataError(
            "loading Hugging Face datasets needs the 'datasets' package: "
            "pip install datasets (or pip install 'comprexit[hf-datasets]')"
        ) from None
    if limit is not None and limit < 0:
        raise DataError(f"limit must be >= 0, got {limit}")
    source = f"hf:{name}:{split}" + (f" (config {config})" if config else "")
    try:
        table = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # network, unknown name, bad split: all are the user's to fix
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"cannot load Hugging Face dataset {source}: {message}") from exc

    columns = list(table.column_names)
    missing = [column for column in ("context", "question", "answers") if column not in columns]
    if missing:
        raise DataError(
            f"{source}: expected SQuAD-like columns context, question, answers ({{'text': [...]}}); "
            f"missing {', '.join(missing)}; the dataset has {', '.join(columns)}"
        )
    examples: list[QAExample] = []
    skipped = 0
    for i, row in enumerate(itertools.islice(table, limit)):
        answers = row["answers"]
        texts = answers.get("text") if isinstance(answers, dict) else None
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise DataError(f"{source} row {i}: 'answers' must look like {{'text': [str, ...]}}")
        texts = [t for t in texts if t.strip()]
        if not texts:
            skipped += 1
            continue
        qid = str(row["id"]) if "id" in columns else f"{name}-{i}"
        examples.append(QAExample(qid, row["context"], row["question"], _dedupe(texts), name))
    if not examples:
        raise _no_examples(source, skipped)
    return QADataset(name, examples, source, skipped)


# --------------------------------------------------------------------------- dispatch


def load_qa(spec: str, *, skip_malformed: bool = False) -> QADataset:
    """Load QA data from a command-line style spec.

    * an existing ``*.json`` (or ``*.json.gz``) file: SQuAD JSON (`load_squad_json`);
    * any other existing file: MRQA JSON lines (`load_mrqa`; `data.files` says why by suffix);
    * ``hf:NAME`` or ``hf:NAME:SPLIT``: a Hugging Face dataset (`load_hf_dataset`).
    """
    if spec.startswith(HF_PREFIX):
        name, split = split_hf_spec(spec)
        return load_hf_dataset(name, split or "validation")
    path = Path(spec)
    if path.is_file():
        if file_format(path) is FileFormat.JSON:
            return load_squad_json(path, skip_malformed=skip_malformed)
        return load_mrqa(path, skip_malformed=skip_malformed)
    raise DataError(f"no such file: {spec}; use hf:NAME for a Hugging Face dataset")


def keep_tail(token_ids: list[int], budget: int) -> tuple[list[int], bool]:
    """Truncate a context to its last `budget` tokens, as the paper does; also say whether it was cut."""
    if budget < 1:
        raise DataError(f"context budget must be >= 1 token, got {budget}")
    return list(token_ids[-budget:]), len(token_ids) > budget
