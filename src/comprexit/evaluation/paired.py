"""Is A better than B? A paired bootstrap over the questions that two results files both answered.

Why paired: both files answer the same questions, so the difference is taken question by question
and the luck of which questions were drawn cancels. Why over contexts: questions about one
paragraph (SQuAD asks about five of each) succeed or fail together, so the paragraph is the unit
resampled, with all of its questions. Why stratified: every resample keeps each dataset's number of
contexts, as the evaluation did. Pooled numbers weigh every question the same, unlike a results
file's `average`, which weighs every dataset the same (a 59-question slice counting for a third).

Rows are paired by dataset and position and must carry the same question ids (`report.prediction_row`
writes them). Files written before rows named their context resample each question alone; the
interval is then too narrow where questions share paragraphs, and the output says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .metrics import score
from .report import load_results, run_label, write_json_and_markdown

DEFAULT_RESAMPLES = 2000
LEVEL = 0.95
FEW_CONTEXTS = 10  # below this many contexts a bootstrap says little (one context: an interval of width 0)
_CHUNK = 256  # resamples drawn at once: a (chunk, contexts) array of counts


@dataclass(frozen=True)
class PairedSet:
    """One dataset's questions as both files scored them, in the files' order."""

    name: str
    f1: np.ndarray  # (questions, 2): A's and B's F1 in [0, 1]
    em: np.ndarray  # (questions, 2): A's and B's exact match, 0 or 1
    clusters: np.ndarray  # (questions,): the context each question asks about, 0..contexts-1
    by_context: bool  # False: the files name no contexts, each question is its own cluster

    @property
    def contexts(self) -> int:
        return int(self.clusters.max()) + 1


@dataclass(frozen=True)
class Difference:
    """One metric of A and of B (percent), A - B, its interval and the share of resamples where A wins."""

    a: float
    b: float
    diff: float
    low: float
    high: float
    p_a_better: float  # resamples where A - B > 0 (a tie, as between identical files, counts for neither)


@dataclass(frozen=True)
class Row:
    """A dataset's comparison, or the pooled one over all questions."""

    name: str
    questions: int
    contexts: int
    by_context: bool
    f1: Difference
    em: Difference


@dataclass(frozen=True)
class Comparison:
    """What `comprexit compare` reports: the datasets' rows, then the pooled one."""

    a: dict[str, str]  # {"path", "label"}
    b: dict[str, str]
    resamples: int
    seed: int
    rows: list[Row]

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a, "b": self.b, "resamples": self.resamples, "seed": self.seed, "level": LEVEL,
            "method": "paired bootstrap resampling contexts with all their questions, stratified per dataset; "
            "percentile interval of A - B; pooled: every question weighs the same",
            "datasets": {row.name: _row_dict(row) for row in self.rows[:-1]},
            "pooled": _row_dict(self.rows[-1]),
        }


def compare_files(path_a: str | Path, path_b: str | Path, resamples: int = DEFAULT_RESAMPLES,
                  seed: int = 0) -> Comparison:
    """Read two results files written by `comprexit eval --predictions` and compare A with B."""
    results = [load_results(path_a), load_results(path_b)]
    sets = paired_sets(*results, where=(str(path_a), str(path_b)))
    rows = bootstrap(sets, resamples, seed)
    sides = [{"path": str(path), "label": run_label(r)} for path, r in zip((path_a, path_b), results)]
    return Comparison(sides[0], sides[1], resamples, seed, rows)


def paired_sets(a: dict[str, Any], b: dict[str, Any], where: tuple[str, str] = ("A", "B")) -> list[PairedSet]:
    """The questions of `a` and `b` side by side; refuses files that do not hold the same questions."""
    predictions = [_predictions(results, name) for results, name in zip((a, b), where)]
    names_a, names_b = (list(p) for p in predictions)
    if set(names_a) != set(names_b):
        raise InputError(f"{where[0]} holds the datasets {', '.join(names_a)} and {where[1]} "
                         f"{', '.join(names_b)}: compare results of the same --data")
    return [_pair(name, predictions[0][name], predictions[1][name], where) for name in names_a]


def bootstrap(sets: list[PairedSet], resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> list[Row]:
    """Each dataset's row and the pooled one (last): means, A - B and its interval from `resamples`
    draws of each dataset's contexts with replacement (numpy's generator seeded with `seed`)."""
    rng = np.random.default_rng(seed)
    observed, drawn = [], []
    for s in sets:
        values = np.column_stack([s.f1, s.em, np.ones(len(s.f1))])  # (questions, 5): f1 A, f1 B, em A, em B, 1
        per_context = np.zeros((s.contexts, 5))
        np.add.at(per_context, s.clusters, values)
        sums = np.empty((resamples, 5))
        for start in range(0, resamples, _CHUNK):
            count = min(_CHUNK, resamples - start)
            picks = rng.multinomial(s.contexts, np.full(s.contexts, 1 / s.contexts), size=count)
            sums[start : start + count] = picks @ per_context
        observed.append(values.sum(axis=0))
        drawn.append(sums)
    rows = [_row(s.name, len(s.f1), s.contexts, s.by_context, o, d) for s, o, d in zip(sets, observed, drawn)]
    pooled = _row("pooled", sum(len(s.f1) for s in sets), sum(s.contexts for s in sets),
                  all(s.by_context for s in sets), sum(observed), sum(drawn))
    return [*rows, pooled]


def comparison_markdown(comparison: Comparison) -> str:
    """The comparison as a small Markdown table with a line on what it means."""
    a, b = comparison.a, comparison.b
    lines = [
        "# Paired comparison: A - B",
        "",
        f"- A: {a['label']} ({a['path']})",
        f"- B: {b['label']} ({b['path']})",
        (f"- {LEVEL:.0%} interval of A - B by a paired bootstrap over contexts ({comparison.resamples} resamples, "
         f"seed {comparison.seed}), stratified per dataset; pooled: every question weighs the same"),
        "",
        "| dataset | questions | contexts | F1 A | F1 B | F1 A - B | 95% CI | P(A>B) | EM A - B (95% CI) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in comparison.rows:
        name = f"**{row.name}**" if row is comparison.rows[-1] else row.name
        f1, em = row.f1, row.em
        lines.append(f"| {name} | {row.questions} | {row.contexts if row.by_context else '-'} | {f1.a:.2f} | "
                     f"{f1.b:.2f} | {f1.diff:+.2f} | [{f1.low:+.2f}, {f1.high:+.2f}] | {f1.p_a_better:.3f} | "
                     f"{em.diff:+.2f} [{em.low:+.2f}, {em.high:+.2f}] |")
    lines += ["", _verdict(comparison.rows[-1])]
    unclustered = [row.name for row in comparison.rows[:-1] if not row.by_context]
    if unclustered:
        lines.append(f"Contexts not recorded for {', '.join(unclustered)} (results written before eval stored them): "
                     "each question resampled alone, so the interval is too narrow where questions share a "
                     "paragraph; re-run `comprexit eval --predictions` to resample by context.")
    few = [f"{row.name} ({row.contexts})" for row in comparison.rows[:-1]
           if row.by_context and row.contexts < FEW_CONTEXTS]
    if few:
        lines.append(f"Few contexts in {', '.join(few)}: an interval drawn from so few says little.")
    return "\n".join(lines) + "\n"


def write_comparison(comparison: Comparison, path: str | Path) -> tuple[Path, Path]:
    """Write `path` (JSON) and the same name with `.md` (the table)."""
    return write_json_and_markdown(comparison.to_dict(), comparison_markdown(comparison), path)


def _predictions(results: dict[str, Any], where: str) -> dict[str, list]:
    predictions = results.get("predictions")
    if not isinstance(predictions, dict) or not predictions:
        raise InputError(f"{where} holds no predictions: re-run `comprexit eval` with --predictions")
    for name, rows in predictions.items():
        if not isinstance(rows, list) or not rows:
            raise InputError(f"{where}: the predictions of {name} are not a non-empty list")
    return predictions


def _pair(name: str, rows_a: list, rows_b: list, where: tuple[str, str]) -> PairedSet:
    """One dataset's rows paired by position, checked to be the same questions (and contexts, where named)."""
    if len(rows_a) != len(rows_b):
        raise InputError(f"{name}: {where[0]} holds {len(rows_a)} questions and {where[1]} {len(rows_b)}: "
                         "compare results of the same --data, --limit and --held-out")
    scores = np.empty((len(rows_a), 2, 2))  # (questions, A/B, f1/em)
    contexts: list[str | None] = []
    for i, (row_a, row_b) in enumerate(zip(rows_a, rows_b)):
        scores[i, 0], scores[i, 1] = _scores(row_a, name, i, where[0]), _scores(row_b, name, i, where[1])
        if row_a.get("qid") != row_b.get("qid"):
            raise InputError(f"{name} question {i} is {row_a.get('qid')!r} in {where[0]} and {row_b.get('qid')!r} in "
                             f"{where[1]}: the two files do not hold the same questions")
        context_a, context_b = row_a.get("context"), row_b.get("context")
        if context_a is not None and context_b is not None and context_a != context_b:
            raise InputError(f"{name} question {i} ({row_a.get('qid')!r}) asks about another context in {where[0]} "
                             f"than in {where[1]}: the two files do not hold the same questions")
        contexts.append(context_a if context_a is not None else context_b)
    by_context = all(c is not None for c in contexts)
    keys = contexts if by_context else list(range(len(contexts)))
    ids: dict[Any, int] = {}
    clusters = np.array([ids.setdefault(key, len(ids)) for key in keys])
    return PairedSet(name, scores[:, :, 0], scores[:, :, 1], clusters, by_context)


def _scores(row: Any, name: str, index: int, where: str) -> tuple[float, float]:
    """(F1, EM) of one prediction row; rows written before EM was stored are scored again."""
    try:
        f1 = float(row["f1"])
        em = float(row["em"]) if "em" in row else score(row["prediction"], row["answers"])[0]
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(f"{where}: {name} question {index} is not a prediction row of `comprexit eval`") from error
    if not (0 <= f1 <= 1 and 0 <= em <= 1):
        raise InputError(f"{where}: {name} question {index} has scores outside 0..1")
    return f1, em


def _row(name: str, questions: int, contexts: int, by_context: bool, observed: np.ndarray, drawn: np.ndarray) -> Row:
    """observed: (5,) sums over the questions; drawn: (resamples, 5) the same sums in each resample."""
    return Row(name, questions, contexts, by_context,
               _difference(observed[[0, 1, 4]], drawn[:, [0, 1, 4]]),
               _difference(observed[[2, 3, 4]], drawn[:, [2, 3, 4]]))


def _difference(observed: np.ndarray, drawn: np.ndarray) -> Difference:
    """observed: (3,) sum of A, sum of B, questions; drawn: (resamples, 3)."""
    a, b = 100 * observed[:2] / observed[2]
    diffs = 100 * (drawn[:, 0] - drawn[:, 1]) / drawn[:, 2]
    low, high = np.percentile(diffs, [50 * (1 - LEVEL), 50 * (1 + LEVEL)])
    return Difference(float(a), float(b), float(a - b), float(low), float(high), float(np.mean(diffs > 0)))


def _row_dict(row: Row) -> dict[str, Any]:
    def rounded(d: Difference) -> dict[str, Any]:
        return {"a": round(d.a, 2), "b": round(d.b, 2), "diff": round(d.diff, 2),
                "ci": [round(d.low, 2), round(d.high, 2)], "p_a_better": round(d.p_a_better, 3)}

    return {"questions": row.questions, "contexts": row.contexts, "by_context": row.by_context,
            "f1": rounded(row.f1), "em": rounded(row.em)}


def _verdict(pooled: Row) -> str:
    f1 = pooled.f1
    if f1.low > 0:
        meaning = "A is better (the interval lies above 0)"
    elif f1.high < 0:
        meaning = "B is better (the interval lies below 0)"
    else:
        meaning = "the two cannot be told apart (the interval holds 0)"
    return (f"Pooled F1: A - B = {f1.diff:+.2f}, {LEVEL:.0%} interval [{f1.low:+.2f}, {f1.high:+.2f}]: {meaning}.")
