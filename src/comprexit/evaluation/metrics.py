"""SQuAD-style answer scoring: exact match and token F1.

The definitions follow the official SQuAD v1.1 and MRQA 2019 evaluation scripts so that
numbers are comparable with published tables: answers are normalised (lower-case, no
punctuation, no articles, single spaces) and a prediction is scored against its best gold
answer. Two deliberate differences, both documented where they apply:

* Unicode punctuation (any character whose Unicode category starts with ``P``, such as
  curly quotes or the ellipsis) is removed as well as ``string.punctuation``. The official
  scripts only strip ASCII punctuation; for ASCII input the results are identical.
* When the prediction and the gold answer both normalise to nothing, F1 is 1.0 (the
  official v1.1/MRQA scripts give 0.0 while giving exact match 1.0); see `token_f1`.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

_ASCII_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _is_punctuation(char: str) -> bool:
    """ASCII punctuation (which includes symbols like ``$`` and ``+``) or any Unicode P* char."""
    return char in _ASCII_PUNCTUATION or unicodedata.category(char).startswith("P")


def normalize_answer(text: str) -> str:
    """Normalise an answer the way the SQuAD/MRQA scripts do, so scores are comparable.

    Steps, in the official order: lower-case, delete punctuation (no space is inserted,
    so ``"a-b"`` becomes ``"ab"``), replace the whole words a/an/the by a space, then
    collapse runs of whitespace into single spaces and trim the ends. Non-ASCII letters
    are kept (``"Zürich"`` -> ``"zürich"``).
    """
    text = text.lower()
    text = "".join(char for char in text if not _is_punctuation(char))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when both strings are equal after `normalize_answer`, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """Harmonic mean of token precision and recall between prediction and gold.

    Tokens are the whitespace-separated words of the normalised strings; overlap counts
    repeated tokens at most as often as they occur on both sides (multiset intersection).

    Empty case: if either side normalises to no tokens, F1 is 1.0 when both are empty and
    0.0 otherwise. The SQuAD v1.1 and MRQA scripts return 0.0 when both are empty (their
    "no common tokens" guard fires first) even though exact match is 1.0 for the same
    pair; we follow the SQuAD v2.0 script instead so that F1 >= EM always holds. This only
    matters for gold answers that are pure punctuation or articles (e.g. ``"."``).
    """
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = Counter(pred_tokens) & Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def max_over_golds(
    metric: Callable[[str, str], float], prediction: str, golds: Iterable[str]
) -> float:
    """Best score of `prediction` against any gold answer (questions have several golds).

    Raises ValueError when there is no gold answer: a question without one cannot be
    scored, and silently giving 0 would hide a data problem.
    """
    scores = [metric(prediction, gold) for gold in golds]
    if not scores:
        raise ValueError("cannot score a prediction against an empty list of gold answers")
    return max(scores)


def score(prediction: str, golds: Iterable[str]) -> tuple[float, float]:
    """(exact match, F1) of one prediction, each in [0, 1] and maximised over the golds."""
    golds = list(golds)
    return (
        max_over_golds(exact_match, prediction, golds),
        max_over_golds(token_f1, prediction, golds),
    )


@dataclass
class ScoreTotals:
    """Running sums of per-question scores for one dataset, reported as percentages."""

    count: int = 0
    em_sum: float = 0.0
    f1_sum: float = 0.0

    def add(self, em: float, f1: float) -> None:
        """Record one question's scores (each in [0, 1], as returned by `score`)."""
        for label, value in (("em", em), ("f1", f1)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{label} must be in [0, 1], got {value!r}")
        self.count += 1
        self.em_sum += em
        self.f1_sum += f1

    @property
    def em(self) -> float:
        """Mean exact match in percent (0..100); 0.0 before any question is added."""
        return 100.0 * self.em_sum / self.count if self.count else 0.0

    @property
    def f1(self) -> float:
        """Mean F1 in percent (0..100); 0.0 before any question is added."""
        return 100.0 * self.f1_sum / self.count if self.count else 0.0

    def to_dict(self) -> dict[str, float | int]:
        """JSON-ready summary: ``{"count", "em", "f1"}`` with percentages rounded to 2 decimals."""
        return {"count": self.count, "em": round(self.em, 2), "f1": round(self.f1, 2)}


def average_over_datasets(per_dataset: Mapping[str, Mapping[str, float]]) -> dict[str, float | int]:
    """Macro average: the unweighted mean EM/F1 over datasets, as in the paper's tables.

    Each value is a summary like `ScoreTotals.to_dict` (keys ``count``, ``em``, ``f1``).
    Every dataset weighs the same whatever its size; ``count`` is the total number of
    questions. With no datasets the result is all zeros, matching an empty `ScoreTotals`.
    """
    for name, summary in per_dataset.items():
        missing = [key for key in ("count", "em", "f1") if key not in summary]
        if missing:
            raise ValueError(f"summary of dataset {name!r} lacks {', '.join(missing)}")
    n = len(per_dataset)
    if n == 0:
        return {"count": 0, "em": 0.0, "f1": 0.0}
    summaries = per_dataset.values()
    return {
        "count": int(sum(s["count"] for s in summaries)),
        "em": round(sum(s["em"] for s in summaries) / n, 2),
        "f1": round(sum(s["f1"] for s in summaries) / n, 2),
    }
