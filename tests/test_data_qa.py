"""Tests of the QA data loaders on small files written into tmp_path."""

from __future__ import annotations

import gzip
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from comprexit.errors import DataError
from comprexit.data.qa import (
    QADataset,
    QAExample,
    keep_tail,
    load_hf_dataset,
    load_mrqa,
    load_qa,
    load_squad_json,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

HEADER = {"header": {"dataset": "TinyQA", "split": "eval"}}
CONTEXT_1 = {
    "context": "Paris is the capital of France.",
    "qas": [
        {"qid": "q1", "question": "What is the capital of France?", "answers": ["Paris", "Paris", "paris"]},
        {"qid": "q2", "question": "Paris is the capital of what?", "answers": ["France"]},
    ],
}
CONTEXT_2 = {
    "context": "Z\u00fcrich lies on a lake.",
    "qas": [{"qid": "q3", "question": "Which city lies on a lake?", "answers": ["Z\u00fcrich"]}],
}


def _jsonl(records: list[Any]) -> str:
    return "\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records) + "\n"


def write_mrqa(path: Path, records: list[Any], *, gz: bool = False) -> Path:
    data = _jsonl(records).encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


# --------------------------------------------------------------------------- MRQA


@pytest.mark.parametrize("gz", [False, True])
def test_load_mrqa_with_header(tmp_path: Path, gz: bool) -> None:
    path = write_mrqa(tmp_path / "tiny.jsonl.gz", [HEADER, CONTEXT_1, CONTEXT_2], gz=gz)
    dataset = load_mrqa(path)
    assert isinstance(dataset, QADataset)
    assert dataset.name == "TinyQA"
    assert dataset.source == str(path)
    assert dataset.skipped_lines == 0
    assert len(dataset) == 3
    first = next(iter(dataset))
    assert first == QAExample(
        qid="q1",
        context="Paris is the capital of France.",
        question="What is the capital of France?",
        answers=("Paris", "paris"),  # deduplicated, order kept
        dataset="TinyQA",
    )
    assert [e.qid for e in dataset] == ["q1", "q2", "q3"]
    assert dataset.examples[2].answers == ("Z\u00fcrich",)


def test_gzip_is_detected_by_content_not_name(tmp_path: Path) -> None:
    # Gzip data under a plain name, and plain data under a .gz name, both load.
    zipped = write_mrqa(tmp_path / "a.jsonl", [CONTEXT_1], gz=True)
    plain = write_mrqa(tmp_path / "b.jsonl.gz", [CONTEXT_1], gz=False)
    assert len(load_mrqa(zipped)) == len(load_mrqa(plain)) == 2


def test_name_without_header_comes_from_the_file_name(tmp_path: Path) -> None:
    for file_name, expected in [("nq_dev.jsonl.gz", "nq_dev"), ("drop.jsonl", "drop"), ("x.gz", "x")]:
        path = write_mrqa(tmp_path / file_name, [CONTEXT_1, CONTEXT_2], gz=file_name.endswith(".gz"))
        dataset = load_mrqa(path)
        assert dataset.name == expected
        assert {e.dataset for e in dataset} == {expected}


def test_name_argument_overrides_header(tmp_path: Path) -> None:
    path = write_mrqa(tmp_path / "tiny.jsonl", [HEADER, CONTEXT_1])
    dataset = load_mrqa(path, name="Custom")
    assert dataset.name == "Custom"
    assert {e.dataset for e in dataset} == {"Custom"}


def test_detected_answers_are_used_when_answers_are_missing(tmp_path: Path) -> None:
    record = {
        "context": "Bern is the Swiss capital.",
        "qas": [
            {
                "qid": "d1",
                "question": "Swiss capital?",
                "detected_answers": [
                    {"text": "Bern", "char_spans": [[0, 3]], "token_spans": [[0, 0]]},
                    {"text": "Bern", "char_spans": [[0, 3]], "token_spans": [[0, 0]]},
                ],
            },
            {
                "qid": "d2",
                "question": "Which capital?",
                "answers": ["Bern"],
                "detected_answers": [{"text": "bern", "char_spans": [[0, 3]]}],
            },
        ],
    }
    dataset = load_mrqa(write_mrqa(tmp_path / "det.jsonl", [record]))
    assert [e.answers for e in dataset] == [("Bern",), ("Bern",)]


def test_blank_lines_are_ignored(tmp_path: Path) -> None:
    path = write_mrqa(tmp_path / "blank.jsonl", ["", HEADER, "", "   ", CONTEXT_1, "\t", CONTEXT_2, ""])
    dataset = load_mrqa(path)
    assert dataset.name == "TinyQA"
    assert len(dataset) == 3
    assert dataset.skipped_lines == 0


def test_crlf_line_endings_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(_jsonl([HEADER, CONTEXT_1]).replace("\n", "\r\n").encode())
    assert len(load_mrqa(path)) == 2


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"context": "x", "qas": ', "not valid JSON"),
        ({"context": "x", "qas": {"qid": "a"}}, "'qas' must be a list"),
        ({"qas": []}, "missing 'context'"),
        ({"context": "x"}, "missing 'qas'"),
        ({"context": 3, "qas": []}, "'context' must be a string"),
        ({"context": "x", "qas": [{"qid": "a", "answers": ["y"]}]}, r"qas\[0\]: missing 'question'"),
        ({"context": "x", "qas": [{"qid": "a", "question": "q", "answers": []}]}, "'answers' is empty"),
        ({"context": "x", "qas": [{"qid": "a", "question": "q", "answers": [1]}]}, "must be a string"),
        ({"context": "x", "qas": [{"qid": "a", "question": "q"}]}, "missing 'answers'"),
        ({"context": "x", "qas": ["not an object"]}, "expected an object"),
        ([1, 2], "expected a JSON object"),
        (HEADER, "header is only allowed on the first line"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, bad_line: Any, message: str) -> None:
    # Lines: 1 header, 2 good, 3 blank, 4 bad -> the error must say line 4.
    path = write_mrqa(tmp_path / "squad_eval.jsonl.gz", [HEADER, CONTEXT_1, "", bad_line, CONTEXT_2], gz=True)
    with pytest.raises(DataError, match=rf"squad_eval\.jsonl\.gz line 4: .*{message}") as info:
        load_mrqa(path)
    assert "\n" not in str(info.value)


def test_skip_malformed_counts_skipped_lines(tmp_path: Path) -> None:
    bad_answers = {
        "context": "x",
        "qas": [
            {"qid": "ok", "question": "q", "answers": ["y"]},
            {"qid": "b", "question": "q", "answers": []},
        ],
    }
    lines = [HEADER, CONTEXT_1, "not json", bad_answers, {"qas": 1}, CONTEXT_2]
    path = write_mrqa(tmp_path / "mixed.jsonl", lines)
    dataset = load_mrqa(path, skip_malformed=True)
    # A line with one bad question is skipped as a whole, never partly.
    assert [e.qid for e in dataset] == ["q1", "q2", "q3"]
    assert dataset.skipped_lines == 3


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty.jsonl: no questions"):
        load_mrqa(empty)
    header_only = write_mrqa(tmp_path / "header_only.jsonl.gz", [HEADER], gz=True)
    with pytest.raises(DataError, match="no questions"):
        load_mrqa(header_only)


def test_all_lines_skipped_is_still_an_error(tmp_path: Path) -> None:
    path = write_mrqa(tmp_path / "bad.jsonl", ["nope", "{}"])
    with pytest.raises(DataError, match=r"no questions found \(2 malformed entries skipped\)"):
        load_mrqa(path, skip_malformed=True)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.jsonl.gz"
    with pytest.raises(DataError, match="no such file: .*nowhere.jsonl.gz"):
        load_mrqa(missing)
    with pytest.raises(DataError, match="no such file"):
        load_squad_json(tmp_path / "nowhere.json")


def test_non_utf8_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps(CONTEXT_2, ensure_ascii=False).encode("latin-1"))
    with pytest.raises(DataError, match="latin1.jsonl: not UTF-8"):
        load_mrqa(path)
    zipped = tmp_path / "latin1.jsonl.gz"
    zipped.write_bytes(gzip.compress(path.read_bytes()))
    with pytest.raises(DataError, match="not UTF-8"):
        load_mrqa(zipped)


def test_truncated_gzip_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(gzip.compress(_jsonl([HEADER, CONTEXT_1]).encode())[:20])
    with pytest.raises(DataError, match="cut.jsonl.gz: corrupt gzip"):
        load_mrqa(path)


def test_limit_returns_a_shorter_copy(tmp_path: Path) -> None:
    dataset = load_mrqa(write_mrqa(tmp_path / "t.jsonl", [HEADER, CONTEXT_1, CONTEXT_2]))
    short = dataset.limit(2)
    assert [e.qid for e in short] == ["q1", "q2"]
    assert (short.name, short.source) == (dataset.name, dataset.source)
    assert len(dataset) == 3
    assert len(dataset.limit(10)) == 3
    with pytest.raises(DataError):
        dataset.limit(-1)


# --------------------------------------------------------------------------- SQuAD JSON


def _squad_document() -> dict[str, Any]:
    return {
        "version": "1.1",
        "data": [
            {
                "title": "France",
                "paragraphs": [
                    {
                        "context": "Paris is the capital of France.",
                        "qas": [
                            {
                                "id": "s1",
                                "question": "Capital of France?",
                                "answers": [
                                    {"text": "Paris", "answer_start": 0},
                                    {"text": "Paris", "answer_start": 0},
                                ],
                            }
                        ],
                    }
                ],
            },
            {
                "title": "Swiss",
                "paragraphs": [
                    {"context": "Bern.", "qas": []},
                    {
                        "context": "Bern is the Swiss capital.",
                        "qas": [
                            {
                                "id": "s2",
                                "question": "Swiss capital?",
                                "answers": [{"text": "Bern", "answer_start": 0}],
                            },
                            {
                                "id": "s3",
                                "question": "Capital of Mars?",
                                "answers": [],
                                "plausible_answers": [{"text": "Bern", "answer_start": 0}],
                                "is_impossible": True,
                            },
                        ],
                    },
                ],
            },
        ],
    }


def test_load_squad_json(tmp_path: Path) -> None:
    path = tmp_path / "dev-v2.0.json"
    path.write_text(json.dumps(_squad_document()), encoding="utf-8")
    dataset = load_squad_json(path)
    assert dataset.name == "dev-v2.0"
    assert [(e.qid, e.answers) for e in dataset] == [("s1", ("Paris",)), ("s2", ("Bern",))]
    assert dataset.examples[1].context == "Bern is the Swiss capital."
    assert dataset.skipped_lines == 1  # the unanswerable v2.0 question
    assert load_squad_json(path, name="SQuAD2").name == "SQuAD2"


def test_squad_json_error_names_the_location(tmp_path: Path) -> None:
    document = _squad_document()
    del document["data"][1]["paragraphs"][1]["qas"][0]["question"]
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    location = r"data\[1\]\.paragraphs\[1\]\.qas\[0\]"
    with pytest.raises(DataError, match=rf"broken\.json {location}: missing 'question'"):
        load_squad_json(path)
    dataset = load_squad_json(path, skip_malformed=True)
    assert [e.qid for e in dataset] == ["s1"]
    assert dataset.skipped_lines == 2  # the broken question and the unanswerable one


def test_squad_json_structure_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"data": {}}', encoding="utf-8")
    with pytest.raises(DataError, match="bad.json: 'data' must be a list"):
        load_squad_json(path)
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match="bad.json: not valid JSON"):
        load_squad_json(path)
    document = {"data": [{"title": "t", "paragraphs": [{"context": "c", "qas": 5}]}]}
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(DataError, match=r"data\[0\]\.paragraphs\[0\]: 'qas' must be a list"):
        load_squad_json(path)


# --------------------------------------------------------------------------- Hugging Face


class _FakeTable(list):
    """Just enough of a `datasets.Dataset` for the loader: rows plus column_names."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        super().__init__(rows)
        self.column_names = list(rows[0]) if rows else []


def _fake_datasets(rows: list[dict[str, Any]], calls: list[tuple[Any, ...]]) -> types.ModuleType:
    module = types.ModuleType("datasets")

    def load_dataset(name: str, config: str | None = None, *, split: str) -> _FakeTable:
        calls.append((name, config, split))
        if name == "missing/dataset":
            raise FileNotFoundError("Dataset 'missing/dataset' doesn't exist on the Hub")
        return _FakeTable(rows)

    module.load_dataset = load_dataset  # type: ignore[attr-defined]
    return module


def test_hf_loader_without_datasets_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(DataError, match=r"pip install datasets.*comprexit\[hf-datasets\]"):
        load_hf_dataset("squad")
    with pytest.raises(DataError, match="pip install datasets"):
        load_qa("hf:squad")


def test_hf_loader_maps_squad_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    def row(i: int, texts: list[str]) -> dict[str, Any]:
        answers = {"text": texts, "answer_start": [0] * len(texts)}
        return {"id": f"h{i}", "title": "t", "context": f"c{i}", "question": f"q{i}", "answers": answers}

    rows = [row(1, ["a", "a"]), row(2, []), row(3, ["b"])]  # row 2 is a v2.0 unanswerable
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setitem(sys.modules, "datasets", _fake_datasets(rows, calls))
    dataset = load_hf_dataset("squad_v2", config="plain", limit=3)
    assert calls == [("squad_v2", "plain", "validation")]
    assert [(e.qid, e.answers) for e in dataset] == [("h1", ("a",)), ("h3", ("b",))]
    assert dataset.skipped_lines == 1
    assert len(load_hf_dataset("squad_v2", limit=1)) == 1

    dataset = load_qa("hf:squad:train")
    assert calls[-1] == ("squad", None, "train")
    assert dataset.source.startswith("hf:squad:train")


def test_hf_loader_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [{"text": "x", "label": 1}]
    monkeypatch.setitem(sys.modules, "datasets", _fake_datasets(rows, []))
    with pytest.raises(DataError, match="missing context, question, answers; the dataset has text, label"):
        load_hf_dataset("imdb")
    with pytest.raises(DataError, match="cannot load Hugging Face dataset hf:missing/dataset"):
        load_hf_dataset("missing/dataset")


# --------------------------------------------------------------------------- dispatch and truncation


def test_load_qa_dispatch(tmp_path: Path) -> None:
    squad = tmp_path / "tiny.json"
    squad.write_text(json.dumps(_squad_document()), encoding="utf-8")
    mrqa = write_mrqa(tmp_path / "tiny.jsonl.gz", [HEADER, CONTEXT_1], gz=True)
    assert [e.qid for e in load_qa(str(squad))] == ["s1", "s2"]
    assert load_qa(str(mrqa)).name == "TinyQA"
    bad = write_mrqa(tmp_path / "bad.jsonl", [CONTEXT_1, "oops"])
    with pytest.raises(DataError, match="line 2"):
        load_qa(str(bad))
    assert load_qa(str(bad), skip_malformed=True).skipped_lines == 1


def test_load_qa_unknown_spec(tmp_path: Path) -> None:
    message = "no such file: .*nope.jsonl; use hf:NAME for a Hugging Face dataset"
    with pytest.raises(DataError, match=message):
        load_qa(str(tmp_path / "nope.jsonl"))
    with pytest.raises(DataError, match="hf:NAME"):
        load_qa("hf:")


def test_keep_tail() -> None:
    assert keep_tail([1, 2, 3, 4, 5], 3) == ([3, 4, 5], True)
    assert keep_tail([1, 2, 3], 3) == ([1, 2, 3], False)
    assert keep_tail([1, 2], 10) == ([1, 2], False)
    assert keep_tail([], 1) == ([], False)
    ids = [7, 8]
    kept, _ = keep_tail(ids, 5)
    kept.append(9)
    assert ids == [7, 8]  # a new list, the caller's is untouched
    for budget in (0, -1):
        with pytest.raises(DataError, match="budget"):
            keep_tail([1, 2], budget)


# --------------------------------------------------------------------------- shared data


def _shared_file(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} not found: the shared data folder exists only on developer machines and in CI")
    return path


def test_shared_squad_eval() -> None:
    dataset = load_mrqa(_shared_file("squad_eval.jsonl.gz"))
    assert dataset.name == "SQuAD"
    assert len(dataset) == 1650
    assert dataset.skipped_lines == 0
    assert all(e.answers and e.question and e.dataset == "SQuAD" for e in dataset)


def test_shared_nq_train() -> None:
    dataset = load_mrqa(_shared_file("nq_train.jsonl.gz"))
    assert dataset.name == "NaturalQuestions"
    assert len(dataset) == 2011
