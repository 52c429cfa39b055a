"""The evaluation loop shared by every method: truncate, prepare, decode greedily, score.

Each dataset's summary also says what the prepared prefixes cost per document (`costs.py`).

Questions are processed longest-context first so that a batch holds contexts of similar
length (less padding); each distinct context in a batch is prepared once, however many
questions ask about it. Progress is appended to a JSON-lines file after every batch, so an
interrupted run resumes where it stopped; a bar per dataset is shown through `progress`
(progress.py: none by default; the command line's on stderr, on a terminal).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..decoding import PAPER, EagerDecoder, get_answer_rule
from ..errors import ConfigError
from ..methods.base import Method
from ..data.qa import QADataset, keep_tail
from ..progress import Progress, bar, stderr_progress
from ..prompting import DEFAULT_TEMPLATE, PromptTemplate
from .costs import CostMeter
from .metrics import ScoreTotals, average_over_datasets, score
from .report import combined_costs, prediction_row


@dataclass
class EvalSettings:
    """How questions are asked; stored in every results file.

    answer_rule: how a generated text is cut into the answer scored; "paper" (the first "." or
        newline), the protocol every reported number uses, so that they stay comparable.
    """

    context_budget: int = 512
    max_new_tokens: int = 20
    batch_size: int = 32
    template: str = DEFAULT_TEMPLATE
    answer_rule: str = PAPER

    def __post_init__(self) -> None:
        for name in ("context_budget", "max_new_tokens", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        PromptTemplate(self.template)
        get_answer_rule(self.answer_rule)


class ProgressLog:
    """Append-only record of answered questions, keyed by dataset and position, for resuming."""

    def __init__(self, path: Path | None, fingerprint: str):
        self.path = path
        self.done: dict[tuple[str, int], str] = {}
        if path is None:
            return
        if path.exists():
            lines = path.read_text().splitlines()
            if lines and json.loads(lines[0]).get("fingerprint") == fingerprint:
                for line in lines[1:]:
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:  # a line cut by an interruption
                        continue
                    self.done[(row["dataset"], row["index"])] = row["prediction"]
            else:
                path.unlink()
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"fingerprint": fingerprint}) + "\n")

    def record(self, dataset: str, rows: list[tuple[int, str]]) -> None:
        for index, prediction in rows:
            self.done[(dataset, index)] = prediction
        if self.path is not None:
            with self.path.open("a") as handle:
                for index, prediction in rows:
                    handle.write(json.dumps({"dataset": dataset, "index": index, "prediction": prediction}) + "\n")

    def finish(self) -> None:
        if self.path is not None and self.path.exists():
            self.path.unlink()


def evaluate(
    method: Method,
    datasets: dict[str, QADataset],
    settings: EvalSettings,
    *,
    keep_predictions: bool = False,
    progress_path: Path | None = None,
    progress: Progress | None = None,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Score `method` on every dataset; returns the per-dataset and averaged EM/F1 and timings.

    `progress` shows a bar per dataset; `show_progress=True` (older callers) stands for stderr's.
    """
    if progress is None and show_progress:
        progress = stderr_progress()
    template = PromptTemplate(settings.template)
    fingerprint = _fingerprint(method, datasets, settings)
    log = ProgressLog(progress_path, fingerprint)
    results: dict[str, Any] = {}
    predictions: dict[str, list[dict]] = {}
    start_all = time.perf_counter()
    for name, dataset in datasets.items():
        start = time.perf_counter()
        summary, rows = _evaluate_one(method, name, dataset, settings, template, log, progress)
        seconds = time.perf_counter() - start
        summary["seconds"] = round(seconds, 2)
        summary["questions_per_second"] = round(summary["answered_now"] / seconds, 2) if summary["answered_now"] else None
        results[name] = summary
        if keep_predictions:
            predictions[name] = rows
    log.finish()
    out = {
        "method": method.settings(),
        "settings": asdict(settings),
        "datasets": results,
        "average": average_over_datasets(results),
        "wall_seconds": round(time.perf_counter() - start_all, 2),
    }
    out["cost"] = combined_costs([r.get("cost") for r in results.values()])
    answered = sum(r["answered_now"] for r in results.values())
    decode_seconds = sum(r["seconds"] for r in results.values())
    out["questions_per_second"] = round(answered / decode_seconds, 2) if answered and decode_seconds else None
    if keep_predictions:
        out["predictions"] = predictions
    return out


def _evaluate_one(method, name, dataset, settings, template, log, progress):
    backbone = method.backbone
    decoder, answer = EagerDecoder(backbone), get_answer_rule(settings.answer_rule)
    token_cache: dict[str, tuple[list[int], bool]] = {}
    contexts, prompts = [], []
    for example in dataset:
        if example.context not in token_cache:
            token_cache[example.context] = keep_tail(backbone.tokenize(example.context), settings.context_budget)
        contexts.append(token_cache[example.context][0])
        prompts.append(backbone.tokenize(template.render(example.question)))
    order = sorted(range(len(dataset)), key=lambda i: (-len(contexts[i]), i))
    todo = [i for i in order if (name, i) not in log.done]
    cost = CostMeter(backbone)
    with bar(progress, total=len(dataset), desc=name, unit="q") as shown:
        shown.update(len(dataset) - len(todo))  # answered before an interruption
        for start in range(0, len(todo), settings.batch_size):
            batch = todo[start : start + settings.batch_size]
            unique: dict[tuple[int, ...], int] = {}
            for i in batch:
                unique.setdefault(tuple(contexts[i]), len(unique))
            with cost.timing():
                prefix = method.prepare([list(c) for c in unique])
            cost.add(prefix.rows)
            prefixes = [prefix.rows[unique[tuple(contexts[i])]] for i in batch]
            raw = decoder.answers(prefixes, [prompts[i] for i in batch], settings.max_new_tokens)
            log.record(name, [(i, answer(text)) for i, text in zip(batch, raw)])
            shown.update(len(batch))

    totals = ScoreTotals()
    rows = []
    for i, example in enumerate(dataset):
        prediction = log.done[(name, i)]
        em, f1 = score(prediction, example.answers)
        totals.add(em, f1)
        rows.append(prediction_row(example, prediction, em, f1))
    summary = totals.to_dict()
    summary.update(
        dataset=dataset.name,
        source=dataset.source,
        contexts=len(token_cache),
        contexts_cut=sum(cut for _, cut in token_cache.values()),
        skipped_lines=dataset.skipped_lines,
        answered_now=len(todo),
        cost=cost.summary(),
    )
    return summary, rows


def _fingerprint(method: Method, datasets: dict[str, QADataset], settings: EvalSettings) -> str:
    key = json.dumps(
        [method.settings(), asdict(settings), {n: [d.source, len(d)] for n, d in datasets.items()}],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(key.encode()).hexdigest()[:16]
