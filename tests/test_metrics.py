"""Tests of the SQuAD-style metrics, including agreement with the official definitions."""

from __future__ import annotations

import re
import string
from collections import Counter

import pytest

from comprexit.evaluation.metrics import (
    ScoreTotals,
    average_over_datasets,
    exact_match,
    max_over_golds,
    normalize_answer,
    score,
    token_f1,
)

# --------------------------------------------------------------------------- hand-computed cases


def test_articles_are_removed_as_whole_words() -> None:
    assert exact_match("The Eiffel Tower", "eiffel tower") == 1.0
    assert normalize_answer("An apple a day") == "apple day"
    # "the" inside a word is not an article.
    assert normalize_answer("Theater of the Absurd") == "theater of absurd"


def test_ascii_punctuation_is_deleted_without_inserting_spaces() -> None:
    assert normalize_answer("U.S.A.") == "usa"
    assert normalize_answer("well-known") == "wellknown"
    assert exact_match("$5 million!", "5 million") == 1.0


def test_unicode_punctuation_is_deleted() -> None:
    assert exact_match("\u201cParis\u201d", "Paris") == 1.0  # curly quotes
    assert exact_match("Paris\u2026", "paris") == 1.0  # ellipsis
    assert normalize_answer("Arab\u2013Israeli") == "arabisraeli"  # en dash, like "-"
    assert normalize_answer("\u00bfQu\u00e9?") == "qu\u00e9"  # inverted question mark


def test_unicode_letters_are_kept() -> None:
    assert exact_match("Z\u00fcrich", "z\u00fcrich") == 1.0
    assert exact_match("Z\u00fcrich", "Zurich") == 0.0
    assert normalize_answer("  Beyonc\u00e9   Knowles ") == "beyonc\u00e9 knowles"


def test_several_golds_take_the_best() -> None:
    golds = ["London", "paris, France"]
    em, f1 = score("Paris", golds)
    assert em == 0.0
    # "paris" vs "paris france": precision 1, recall 1/2 -> F1 2/3.
    assert f1 == pytest.approx(2 / 3)
    assert score("Paris", ["London", "Paris"]) == (1.0, 1.0)


def test_empty_prediction_scores_zero_against_a_real_answer() -> None:
    assert score("", ["Paris"]) == (0.0, 0.0)
    assert score("the", ["Paris"]) == (0.0, 0.0)


def test_both_empty_gives_full_credit() -> None:
    # A gold made only of punctuation/articles normalises to nothing; an empty prediction
    # then matches exactly, and we keep F1 consistent with that (F1 >= EM).
    assert exact_match("", ".") == 1.0
    assert token_f1("", ".") == 1.0
    assert token_f1("a", "the") == 1.0


def test_partial_overlap_f1() -> None:
    # pred -> [big, red, dog], gold -> [red, dog, barked]: 2 shared, P = R = 2/3.
    assert token_f1("the big red dog", "red dog barked") == pytest.approx(2 / 3)
    assert exact_match("the big red dog", "red dog barked") == 0.0


def test_repeated_tokens_use_multiset_overlap() -> None:
    # pred [dog, dog, dog], gold [dog, cat]: overlap min(3, 1) = 1, P = 1/3, R = 1/2.
    assert token_f1("dog dog dog", "dog cat") == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    # pred [dog, dog], gold [dog, dog, cat]: overlap 2, P = 1, R = 2/3 -> F1 = 0.8.
    assert token_f1("dog dog", "dog dog cat") == pytest.approx(0.8)


def test_no_overlap_is_zero() -> None:
    assert token_f1("blue cat", "red dog") == 0.0


def test_max_over_golds_rejects_no_golds() -> None:
    with pytest.raises(ValueError, match="empty"):
        max_over_golds(exact_match, "Paris", [])
    with pytest.raises(ValueError):
        score("Paris", [])


# --------------------------------------------------------------------------- official definitions
# An independent re-typing of the SQuAD v1.1 evaluation logic (the MRQA 2019 script uses the
# same three functions), kept here to check that our metrics agree with it on ASCII text.


def _official_normalize(s: str) -> str:
    s = s.lower()
    s = "".join(c for c in s if c not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def _official_f1(prediction: str, ground_truth: str) -> float:
    p = _official_normalize(prediction).split()
    g = _official_normalize(ground_truth).split()
    same = sum((Counter(p) & Counter(g)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def _official_em(prediction: str, ground_truth: str) -> float:
    return float(_official_normalize(prediction) == _official_normalize(ground_truth))


ASCII_PAIRS = [
    ("The Eiffel Tower", "eiffel tower"),
    ("Denver Broncos", "Denver Broncos"),
    ("the Denver Broncos!", "Broncos"),
    ("Super Bowl 50", "Super Bowl L"),
    ("in 1995", "1995"),
    ("$5 million", "5 million dollars"),
    ("U.S.", "US"),
    ("well-known author", "well known author"),
    ("a cat and a dog", "the dog and the cat"),
    ("an apple", "apple"),
    ("Theodore Roosevelt", "Teddy Roosevelt"),
    ("anthem", "the anthem"),
    ("A Cat", "a cat"),
    ("", "Paris"),
    ("Paris", ""),
    ("   spaced   out   ", "spaced out"),
    ("tab\tseparated\nlines", "tab separated lines"),
    ("dog dog dog", "dog cat"),
    ("red red blue", "red blue blue"),
    ("New York City", "new york"),
    ("O'Neill", "ONeill"),
    ("(approximately) 300 km", "300 km"),
    ("3.14", "314"),
    ("50%", "50 percent"),
    ("Mr. Smith & Sons", "mr smith sons"),
    ("#1 hit", "number one hit"),
    ("the the the", "cat"),
    ("yes", "no"),
    ("Albert Einstein's theory", "Einstein theory of relativity"),
    ("C++ and C#", "c and c"),
    ("THE END", "end"),
    ("e-mail", "email"),
]


@pytest.mark.parametrize(("prediction", "gold"), ASCII_PAIRS)
def test_matches_official_squad_definitions_on_ascii(prediction: str, gold: str) -> None:
    # The one deliberate difference (both sides empty) is tested separately above.
    assert _official_normalize(prediction) or _official_normalize(gold)
    assert normalize_answer(prediction) == _official_normalize(prediction)
    assert exact_match(prediction, gold) == _official_em(prediction, gold)
    assert token_f1(prediction, gold) == pytest.approx(_official_f1(prediction, gold))


def test_official_definitions_differ_only_when_both_sides_are_empty() -> None:
    assert _official_em("", ".") == 1.0
    assert _official_f1("", ".") == 0.0  # the official guard; we give 1.0 (see token_f1)


# --------------------------------------------------------------------------- accumulation


def test_score_totals_reports_percentages() -> None:
    totals = ScoreTotals()
    assert (totals.count, totals.em, totals.f1) == (0, 0.0, 0.0)
    assert totals.to_dict() == {"count": 0, "em": 0.0, "f1": 0.0}
    totals.add(1.0, 1.0)
    totals.add(0.0, 2 / 3)
    totals.add(0.0, 0.0)
    assert totals.count == 3
    assert totals.em == pytest.approx(100 / 3)
    assert totals.f1 == pytest.approx(100 * (5 / 3) / 3)
    assert totals.to_dict() == {"count": 3, "em": 33.33, "f1": 55.56}


def test_score_totals_rejects_out_of_range_scores() -> None:
    with pytest.raises(ValueError, match="em"):
        ScoreTotals().add(100.0, 1.0)


def test_average_over_datasets_is_a_macro_average() -> None:
    result = average_over_datasets(
        {
            "SQuAD": {"count": 1000, "em": 80.0, "f1": 90.0},
            "DROP": {"count": 10, "em": 20.0, "f1": 30.0},
        }
    )
    # Unweighted: the small dataset counts as much as the big one.
    assert result == {"count": 1010, "em": 50.0, "f1": 60.0}


def test_average_over_datasets_edge_cases() -> None:
    assert average_over_datasets({}) == {"count": 0, "em": 0.0, "f1": 0.0}
    single = ScoreTotals()
    single.add(1.0, 0.5)
    assert average_over_datasets({"x": single.to_dict()}) == {"count": 1, "em": 100.0, "f1": 50.0}
    with pytest.raises(ValueError, match="'x'"):
        average_over_datasets({"x": {"em": 1.0}})
