"""Hide a question's gold paragraph among distractor paragraphs of the same file, up to a token budget.

A compressor that only ever saw one 512-token context has never had to find an answer among
hundreds of slots. This module makes long QA documents out of short ones, with one set of
rules for the long-document benchmark (eval files, gold at a fixed position) and for
long-context QA training (train files, gold at a random position):

* A *unit* is one gold context with the questions asked about it; its document holds the
  gold paragraph and distractors, and every question of the unit is asked about it.
* Distractors come only from the file of the question, so an eval document never holds a
  train paragraph (nor the reverse), and never from a paragraph equal to the gold one.
* Same article first: where the file marks articles (every context opens with a short title
  line, as NaturalQuestions' "title\\npassage" does), the gold's article-mates come first,
  then the file's other paragraphs; each group in an order drawn from (seed, unit).
  SQuAD files carry no article mark, so all their distractors are "other paragraphs".
* No distractor contains a gold answer of the unit's questions (as whole words, either
  case-insensitively or after SQuAD normalisation), so the answer is only in the gold paragraph.
* Paragraphs are stripped and joined by a blank line; candidates are taken in order while
  they fit the budget; one that would overflow is passed over, and the filling stops after
  `PASS_LIMIT` such candidates in a row. The same order serves every length, so a unit's
  documents of different lengths open with the same distractors.
* Position is the share of the distractors' tokens placed before the gold paragraph: start
  0, middle 0.5, end 1, random drawn per unit; the gold goes to the paragraph boundary
  nearest that share, and the distractors keep their order whatever the position.
* Training draws anew each epoch: every draw comes from (seed, unit) and, past epoch 0, the
  epoch, so epoch 0 gives the documents of a one-time draw and each later epoch new ones.

Token counts are those of the given tokenizer; a document's count is measured on its whole
text, and a document that the sum of its paragraphs' counts underestimated past the budget
loses its last-chosen distractors until it fits.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..errors import InputError
from ..evaluation.metrics import normalize_answer
from .qa import QAExample

SEPARATOR = "\n\n"
POSITIONS = {"start": 0.0, "middle": 0.5, "end": 1.0, "random": None}
TITLE_MAX_CHARS = 120  # a first line longer than this is prose, not an article title
PASS_LIMIT = 20  # candidates in a row that did not fit before the filling stops
VERIFY_BATCH = 64  # documents per tokenizer call when their counts are measured
EPOCH_STREAM = 0x45504F43  # marks the epoch's entries in a draw's seed (never a length: see DistractorBuilder._rng)

CountTokens = Callable[[list[str]], list[int]]


def token_counter(tokenizer) -> CountTokens:
    """Token counts of texts under a Hugging Face tokenizer (no special tokens), batched."""
    def count(texts: list[str]) -> list[int]:
        return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]] if texts else []

    return count


def stable_key(text: str) -> int:
    """A 64-bit key of a text that is the same in every run (Python's hash() is salted)."""
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:16], 16)


def article_titles(paragraphs: Sequence[str]) -> list[str] | None:
    """Each paragraph's article (its first line) when every paragraph opens with a title line, else None.

    A title line is a first line of at most `TITLE_MAX_CHARS` characters followed by more text,
    as in NaturalQuestions' "title\\npassage" contexts. One paragraph without it means the file
    marks no articles (SQuAD contexts are single paragraphs): no grouping is guessed.
    """
    titles = []
    for text in paragraphs:
        head, newline, rest = text.partition("\n")
        if not newline or not rest.strip() or not head.strip() or len(head) > TITLE_MAX_CHARS:
            return None
        titles.append(head.strip())
    return titles if titles else None


def position_fraction(position: str, rng: np.random.Generator) -> float:
    """The share of distractor tokens before the gold paragraph for a named position (see `POSITIONS`)."""
    fixed = POSITIONS[position]
    return float(rng.random()) if fixed is None else fixed


@dataclass(frozen=True)
class Unit:
    """One gold context and the questions asked about it (the answers of all of them are kept out of distractors)."""

    context: str
    questions: tuple[QAExample, ...]

    @property
    def answers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(answer for qa in self.questions for answer in qa.answers))


def units_of(examples: Iterable[QAExample]) -> list[Unit]:
    """The questions grouped by context, in the order the contexts first appear."""
    grouped: dict[str, list[QAExample]] = {}
    for qa in examples:
        grouped.setdefault(qa.context, []).append(qa)
    return [Unit(context, tuple(questions)) for context, questions in grouped.items()]


class ParagraphPool:
    """The distinct (stripped) contexts of one file: token counts, articles, answer look-ups.

    Normalised texts for the answer check are computed on first use only: a fill visits a
    few dozen candidates, not the whole file.
    """

    def __init__(self, contexts: Iterable[str], count_tokens: CountTokens):
        self.texts = [t for t in dict.fromkeys(c.strip() for c in contexts) if t]
        if not self.texts:
            raise InputError("no non-empty context to draw paragraphs from")
        self.index = {text: i for i, text in enumerate(self.texts)}
        self.tokens = np.asarray(count_tokens(self.texts), dtype=np.int64)
        self.separator_tokens = count_tokens([SEPARATOR])[0]
        titles = article_titles(self.texts)
        self.articles: list[str | None] = titles if titles is not None else [None] * len(self.texts)
        self.members: dict[str, list[int]] = {}
        for i, title in enumerate(self.articles):
            if title is not None:
                self.members.setdefault(title, []).append(i)
        self._lower: list[str | None] = [None] * len(self.texts)
        self._normal: list[str | None] = [None] * len(self.texts)

    @property
    def grouping(self) -> str:
        """How articles are found, in words (recorded in the benchmark's header)."""
        if not self.members:
            return "none: the contexts carry no article mark, so distractors are other contexts of the file"
        return "title line: contexts whose first line (the article title) equals the gold's come first"

    def __len__(self) -> int:
        return len(self.texts)

    def contains_any(self, i: int, answers: Sequence[tuple[re.Pattern, str]]) -> bool:
        """Whether paragraph i holds one of `answers` (see `answer_keys`)."""
        if self._lower[i] is None:
            self._lower[i] = self.texts[i].lower()
            self._normal[i] = f" {normalize_answer(self.texts[i])} "
        lower, normal = self._lower[i], self._normal[i]
        return any(pattern.search(lower) or (norm and f" {norm} " in normal) for pattern, norm in answers)


def answer_keys(answers: Iterable[str]) -> list[tuple[re.Pattern, str]]:
    """What a distractor must not contain: each answer as a case-insensitive whole-word match, and normalised.

    Whole words on both sides: the answer "B" (a B cell) must not rule out every paragraph with a b in it.
    """
    keys = []
    for answer in answers:
        if answer.strip():
            keys.append((re.compile(rf"(?<!\w){re.escape(answer.strip().lower())}(?!\w)"), normalize_answer(answer)))
    return keys


@dataclass(frozen=True)
class HiddenGold:
    """A document: distractors with the gold paragraph among them (indices into a `ParagraphPool`)."""

    order: tuple[int, ...]  # pool indices in document order, the gold among them
    gold: int  # pool index of the gold paragraph
    chosen: tuple[int, ...]  # the distractors in the order they were chosen
    fraction: float  # the share of distractor tokens asked for before the gold
    same_article: int  # distractors from the gold's article
    tokens: int  # tokens of the whole document (measured, or the sum of its parts: see `documents`)
    gold_token_start: int  # tokens before the gold paragraph (sum of paragraph and separator counts)

    @property
    def gold_paragraph(self) -> int:
        return self.order.index(self.gold)

    def text(self, pool: ParagraphPool) -> str:
        return SEPARATOR.join(pool.texts[i] for i in self.order)

    def gold_char_start(self, pool: ParagraphPool) -> int:
        return sum(len(pool.texts[i]) + len(SEPARATOR) for i in self.order[: self.gold_paragraph])


class DistractorBuilder:
    """Documents of a file's units at any length and position, reproducible from (seed, unit, epoch).

    One builder serves every length and epoch of a file: its paragraphs are counted once.
    """

    def __init__(self, contexts: Iterable[str], count_tokens: CountTokens, seed: int = 0):
        self.pool = ParagraphPool(contexts, count_tokens)
        self.count_tokens = count_tokens
        self.seed = int(seed)
        self._answer_keys: dict[tuple[str, ...], list[tuple[re.Pattern, str]]] = {}

    def _rng(self, unit: Unit, *salt: int, epoch: int = 0) -> np.random.Generator:
        """The generator of one draw: (seed, unit, salt), and past epoch 0 the epoch after a marker.

        Epoch 0 keeps the seed of a one-time draw; a later epoch's seed ends in the marker and the
        (non-zero) epoch, which no salt of epoch 0 ends in (a salt ends in a length and 1, or is empty).
        """
        entropy = [self.seed, stable_key(unit.context.strip()), *salt] + ([EPOCH_STREAM, int(epoch)] if epoch else [])
        return np.random.default_rng(entropy)

    def candidates(self, unit: Unit, epoch: int = 0) -> Iterator[int]:
        """Distractor candidates of a unit: its article-mates, then the other paragraphs, each group shuffled."""
        pool = self.pool
        gold = self._gold_index(unit)
        rng = self._rng(unit, epoch=epoch)
        title = pool.articles[gold]
        mates = [i for i in pool.members.get(title, []) if i != gold] if title is not None else []
        yield from (mates[i] for i in rng.permutation(len(mates)))
        mate_set = set(mates)
        yield from (int(i) for i in rng.permutation(len(pool)) if i != gold and int(i) not in mate_set)

    def _gold_index(self, unit: Unit) -> int:
        try:
            return self.pool.index[unit.context.strip()]
        except KeyError:
            raise InputError("the unit's context is not one of the file's contexts") from None

    def choose(self, unit: Unit, length: int, epoch: int = 0) -> list[int] | None:
        """The distractors of a unit's document of at most `length` tokens, in the order chosen (None: gold too long)."""
        pool = self.pool
        gold = self._gold_index(unit)
        budget = length - int(pool.tokens[gold])
        if budget < 0:
            return None
        answers = self._answer_keys.get(unit.answers)
        if answers is None:  # compiled once per unit, whatever the lengths and epochs drawn
            answers = self._answer_keys[unit.answers] = answer_keys(unit.answers)
        chosen, misses = [], 0
        for i in self.candidates(unit, epoch):
            cost = int(pool.tokens[i]) + pool.separator_tokens
            if cost > budget:
                misses += 1
                if misses >= PASS_LIMIT:
                    break
                continue
            if pool.contains_any(i, answers):
                continue
            chosen.append(i)
            budget -= cost
            misses = 0
        return chosen

    def place(self, unit: Unit, chosen: Sequence[int], fraction: float) -> HiddenGold:
        """The gold paragraph at the boundary whose share of distractor tokens before it is nearest `fraction`."""
        pool = self.pool
        gold = self._gold_index(unit)
        costs = [int(pool.tokens[i]) + pool.separator_tokens for i in chosen]
        before = np.concatenate([[0], np.cumsum(costs)]) if costs else np.zeros(1, dtype=np.int64)
        slot = int(np.argmin(np.abs(before - fraction * before[-1])))  # first of equals: ties go earlier
        order = tuple(chosen[:slot]) + (gold,) + tuple(chosen[slot:])
        title = pool.articles[gold]
        same = sum(1 for i in chosen if title is not None and pool.articles[i] == title)
        total = int(before[-1]) + int(pool.tokens[gold])
        return HiddenGold(order, gold, tuple(chosen), float(fraction), same, total, int(before[slot]))

    def documents(
        self, units: Sequence[Unit], length: int, position: str, *, measure: bool = True, epoch: int = 0
    ) -> list[HiddenGold | None]:
        """Each unit's document of at most `length` tokens with the gold at `position` (None: gold alone too long).

        epoch: 0 for a one-time draw (benchmark, validation); training passes each epoch's
            number for new distractors and positions. Whether a unit has a document does not
            depend on it (only on its gold paragraph's length).

        measure: count the tokens of each document's whole text; where they exceed `length` (a
            tokenizer that merges across a paragraph boundary), the last-chosen distractors go.
            Without it a document's count is the sum of its paragraphs' and separators' counts,
            exact for a tokenizer that adds up across a blank line (the bundled Gemma's does,
            for stripped paragraphs) and much faster on a large train file.
        """
        if length < 1:
            raise InputError(f"a document length must be >= 1 token, got {length}")
        if position not in POSITIONS:
            raise InputError(f"unknown position {position!r}: choose from {', '.join(POSITIONS)}")
        out: list[HiddenGold | None] = []
        for unit in units:
            chosen = self.choose(unit, length, epoch)
            fraction = position_fraction(position, self._rng(unit, length, 1, epoch=epoch))
            out.append(None if chosen is None else self.place(unit, chosen, fraction))
        return self._measured(units, out, length) if measure else out

    def _measured(
        self, units: Sequence[Unit], documents: list[HiddenGold | None], length: int
    ) -> list[HiddenGold | None]:
        pending = [k for k, d in enumerate(documents) if d is not None]
        while pending:
            counts = []
            for start in range(0, len(pending), VERIFY_BATCH):
                batch = pending[start : start + VERIFY_BATCH]
                counts += self.count_tokens([documents[k].text(self.pool) for k in batch])
            over = []
            for k, count in zip(pending, counts):
                documents[k] = replace(documents[k], tokens=int(count))
                if count > length and documents[k].chosen:
                    documents[k] = self.place(units[k], documents[k].chosen[:-1], documents[k].fraction)
                    over.append(k)
                elif count > length:
                    documents[k] = None  # the gold paragraph alone is over the budget as measured
            pending = over
        return documents


def with_distractors(
    examples: Sequence[QAExample], count_tokens: CountTokens, length: int, *, position: str = "random", seed: int = 0,
    measure: bool = True, epoch: int = 0,
) -> list[QAExample]:
    """The questions again, each context replaced by its document of at most `length` tokens.

    For long-context QA training from a train file: the distractors come from the contexts of
    `examples` themselves (pass a whole file). Another `seed` or `epoch` draws new distractors
    and positions (see `hidden_questions` to draw several lengths or epochs from one builder).
    Questions whose gold context alone exceeds `length` are dropped. `measure`: see
    `DistractorBuilder.documents`.
    """
    builder = DistractorBuilder([qa.context for qa in examples], count_tokens, seed)
    return hidden_questions(builder, units_of(examples), length, position=position, measure=measure, epoch=epoch)


def hidden_questions(
    builder: DistractorBuilder, units: Sequence[Unit], length: int, *, position: str = "random", measure: bool = True,
    epoch: int = 0,
) -> list[QAExample]:
    """The units' questions, each context replaced by its document (`with_distractors`, from a builder of their file)."""
    out = []
    for unit, document in zip(units, builder.documents(units, length, position, measure=measure, epoch=epoch)):
        if document is not None:
            text = document.text(builder.pool)
            out.extend(replace(qa, context=text) for qa in unit.questions)
    return out
