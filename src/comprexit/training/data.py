"""Training examples for the two phases, the held-out validation slice, and length-bucketed batches.

Every example is the same shape: a context to compress, the `targets` the decoder reads
after the slots, and `score_from`, the first target index whose token is scored.
  NTP: context = a span of text, targets = the next tokens, all scored.
  SFT: context = a QA context (tail kept), targets = prompt + answer + EOS, answer and EOS scored.

Each data file is one *source*; `ExampleSet` concatenates the sources' examples without
materialising them (NTP pieces are cut from the memory-mapped token cache on demand), and
`data.mixture` decides how often each source is drawn. A source may be drawn anew each epoch
(`RedrawnSource`: distractor layouts); `ExampleSet.at_epoch` gives an epoch's examples.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..data.long_context import (
    CHUNK_SEPARATOR,
    Article,
    corpus_articles,
    held_out_articles,
    joined_tokens,
    segment_lengths,
    span_splits,
)
from ..data.distractors import DistractorBuilder, Unit, hidden_questions, token_counter, units_of, with_distractors
from ..data.qa import QAExample, keep_tail, load_qa
from ..data.token_cache import TokenizedCorpus, is_held_out, parallel_tokenizer, tokenized_corpus
from ..errors import DataError
from ..prompting import PromptTemplate

MIN_CONTEXT, MIN_CONTINUATION = 32, 16  # the shortest remainder of a document still worth a piece
LONG_VALIDATION_SPANS = 32  # long NTP validation spans per length (fewer when val_examples is smaller)


@dataclass(frozen=True)
class Example:
    context: tuple[int, ...]
    targets: tuple[int, ...]
    score_from: int = 0

    @property
    def length(self) -> int:
        return len(self.context) + len(self.targets)

    @property
    def scored(self) -> int:
        """Target tokens that count in the loss."""
        return len(self.targets) - self.score_from


class ListSource(Sequence):
    """Examples held in memory (SFT questions, QA contexts as NTP text)."""

    def __init__(self, name: str, examples: list[Example]):
        self.name = name
        self.examples = examples
        self.lengths = np.fromiter((e.length for e in examples), dtype=np.int64, count=len(examples))

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> Example:
        return self.examples[index]


class RedrawnSource(ListSource):
    """Examples drawn anew each epoch: `draw(epoch)` gives an epoch's examples, as many every epoch.

    The examples held are those of `epoch`; `at_epoch` draws another epoch's (deterministic, so a
    run resumed mid-epoch sees the same examples as one that was not interrupted).
    """

    def __init__(self, name: str, draw: Callable[[int], list[Example]], epoch: int = 0):
        super().__init__(name, draw(epoch))
        self.draw, self.epoch = draw, int(epoch)

    def at_epoch(self, epoch: int) -> "RedrawnSource":
        if epoch == self.epoch:
            return self
        drawn = RedrawnSource(self.name, self.draw, epoch)
        if len(drawn) != len(self):
            raise DataError(f"{self.name}: epoch {epoch} drew {len(drawn)} examples, epoch {self.epoch} {len(self)}")
        return drawn


class CorpusPieces(Sequence):
    """NTP pieces of a tokenised corpus, cut on demand from its memory-mapped ids.

    Each document is cut into consecutive pieces of `context + continuation` tokens; a shorter
    remainder still counts when it gives at least 32 context and 16 continuation tokens, its
    continuation being a quarter of it (at most `continuation`).
    """

    def __init__(self, name: str, corpus: TokenizedCorpus, documents: np.ndarray, context: int, continuation: int):
        self.name = name
        self.corpus = corpus
        piece = context + continuation
        lengths = corpus.lengths[documents]
        counts = -(-lengths // piece)
        doc = np.repeat(documents, counts)
        index_in_doc = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        start = corpus.offsets[doc] + index_in_doc * piece
        size = np.minimum(piece, corpus.offsets[doc + 1] - start)
        cont = np.where(size == piece, continuation, np.minimum(continuation, size // 4))
        keep = (size - cont >= MIN_CONTEXT) & (cont >= MIN_CONTINUATION)
        self.start, self.context_length, self.continuation = start[keep], (size - cont)[keep], cont[keep]
        self.lengths = (self.context_length + self.continuation).astype(np.int64)

    def __len__(self) -> int:
        return len(self.start)

    def __getitem__(self, index: int) -> Example:
        start, split = int(self.start[index]), int(self.start[index] + self.context_length[index])
        end = split + int(self.continuation[index])
        tokens = self.corpus.tokens
        return Example(tuple(tokens[start:split].tolist()), tuple(tokens[split:end].tolist()))


class SubsetSource(Sequence):
    """Some examples of another source (a data-size ablation's share), drawn once, kept in their order."""

    def __init__(self, source, indices: np.ndarray):
        self.name = source.name
        self.source = source
        self.indices = np.asarray(indices, dtype=np.int64)
        self.lengths = source.lengths[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Example:
        return self.source[int(self.indices[index])]


class LongSpans(Sequence):
    """NTP examples of whole articles: `context` tokens (several chunks' worth) and the `continuation` after them.

    The spans' places come from `data.long_context` (article grouping, repeated title lines,
    continuations kept inside one chunk); the ids are cut from the memory-mapped cache on demand.
    Articles shorter than one span give none.
    """

    def __init__(self, name: str, corpus: TokenizedCorpus, articles: Sequence[Article], context: int,
                 continuation: int, separator_ids: Sequence[int]):
        self.name = name
        self.corpus, self.articles, self.separator_ids = corpus, list(articles), list(separator_ids)
        self.context, self.continuation = int(context), int(continuation)
        owner, split = [], []
        for index, article in enumerate(self.articles):
            lengths = segment_lengths(corpus, article)
            found = span_splits(lengths, len(self.separator_ids), self.context, self.continuation)
            owner.extend([index] * len(found))
            split.extend(found)
        self.owner, self.split = np.asarray(owner, dtype=np.int64), np.asarray(split, dtype=np.int64)
        self.lengths = np.full(len(self.split), self.context + self.continuation, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> Example:
        tokens = joined_tokens(self.corpus, self.articles[int(self.owner[index])], self.separator_ids)
        split = int(self.split[index])
        return Example(tuple(tokens[split - self.context : split].tolist()),
                       tuple(tokens[split : split + self.continuation].tolist()))


class ExampleSet(Sequence):
    """Several sources' examples concatenated: index i of source k is `offsets[k] + i`."""

    def __init__(self, sources: Sequence[Sequence[Example]]):
        self.sources = [s for s in sources]
        self.sizes = [len(s) for s in self.sources]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        self.lengths = np.concatenate([s.lengths for s in self.sources]) if self.sources else np.zeros(0, np.int64)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sources]

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not 0 <= index < len(self):
            raise IndexError(index)
        k = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.sources[k][index - int(self.offsets[k])]

    def fractions(self, shares: Sequence[float], seed: int) -> "ExampleSet":
        """A random share of each source's examples (1.0 keeps a source whole): data-size ablations."""
        rng = np.random.default_rng([seed, 104729])
        kept = []
        for source, share in zip(self.sources, shares):
            if share >= 1:
                kept.append(source)
                continue
            count = max(1, round(share * len(source)))
            kept.append(SubsetSource(source, np.sort(rng.choice(len(source), count, replace=False))))
        return ExampleSet(kept)

    def at_epoch(self, epoch: int) -> "ExampleSet":
        """The examples of an epoch: each `RedrawnSource` drawn for it, the other sources as they are (self if none changes)."""
        if all(not isinstance(s, RedrawnSource) or s.epoch == epoch for s in self.sources):
            return self
        return ExampleSet([s.at_epoch(epoch) if isinstance(s, RedrawnSource) else s for s in self.sources])

    def head(self, count: int) -> "ExampleSet":
        """Only the first `count` examples (quick runs, overfit checks)."""
        kept, left = [], count
        for source in self.sources:
            take = min(left, len(source))
            if take:
                kept.append(ListSource(source.name, [source[i] for i in range(take)]))
            left -= take
        return ExampleSet(kept)


@dataclass
class Split:
    """train: its last `long_sources` sources are long-context ones (several chunks per context).

    long_validation: a long NTP run's held-out spans at each length (`long_ntp_data`).
    """

    train: ExampleSet
    validation: list[Example]
    held_out_questions: list[QAExample] = field(default_factory=list)
    long_sources: int = 0
    long_validation: dict[int, list[Example]] = field(default_factory=dict)


def interleave(groups: Sequence[Sequence], limit: int) -> list:
    """Up to `limit` items taken round-robin from each group, so that every source is validated."""
    out, position = [], 0
    while len(out) < limit and any(position < len(g) for g in groups):
        out.extend(g[position] for g in groups if position < len(g))
        position += 1
    return out[:limit]


# ---------------------------------------------------------------------------- NTP
def ntp_examples(token_lists, context_tokens: int = 512, continuation_tokens: int = 128) -> list[Example]:
    """Cut in-memory token lists into NTP pieces (the same rule as `CorpusPieces`)."""
    examples = []
    piece = context_tokens + continuation_tokens
    for ids in token_lists:
        for start in range(0, len(ids), piece):
            chunk = tuple(ids[start : start + piece])
            cont = continuation_tokens if len(chunk) == piece else min(continuation_tokens, len(chunk) // 4)
            if len(chunk) - cont >= MIN_CONTEXT and cont >= MIN_CONTINUATION:
                examples.append(Example(chunk[: len(chunk) - cont], chunk[len(chunk) - cont :]))
    return examples


def load_ntp(
    backbone,
    files: Sequence[str],
    *,
    context_tokens: int = 512,
    continuation_tokens: int = 128,
    validation_permille: int = 20,
    extra_qa: Sequence[str] = (),
    val_examples: int = 256,
    max_documents: int | None = None,
    show_progress: bool = True,
    apart: Sequence[np.ndarray] | None = None,
) -> Split:
    """NTP pieces of corpora (one source each, tokenised once into the token cache), split by document.

    files: corpus files or `hf:NAME[:SPLIT]` datasets (streamed into the cache; `max_documents`
        keeps the first N documents of each). `extra_qa`: QA files whose training-side
        contexts join as one more source.
    apart: per file, (documents,) bool: documents also kept out of training, beside the
        validation slice (a long NTP run's validation articles, `LongNTP.held`); the
        validation pieces are the same with or without it.
    """
    train, validation = [], []
    for k, spec in enumerate(files):
        corpus = tokenized_corpus(spec, backbone.tokenizer, max_documents=max_documents, show_progress=show_progress)
        held = corpus.held_out(validation_permille)
        name = str(spec).rsplit("/", 1)[-1]
        training = ~held if apart is None else ~held & ~apart[k]
        train.append(CorpusPieces(name, corpus, np.flatnonzero(training), context_tokens, continuation_tokens))
        validation.append(CorpusPieces(name, corpus, np.flatnonzero(held), context_tokens, continuation_tokens))
    if extra_qa:
        contexts = sorted({qa.context for spec in extra_qa for qa in load_qa(str(spec))
                           if not is_held_out(qa.context, validation_permille)})
        ids = backbone.tokenizer(contexts, add_special_tokens=False)["input_ids"] if contexts else []
        train.append(ListSource("extra-ntp", ntp_examples(ids, context_tokens, continuation_tokens)))
    return Split(ExampleSet(train), interleave(validation, val_examples))


def long_spans(
    tokenizer,
    spec: str,
    *,
    context_tokens: int,
    continuation_tokens: int = 128,
    validation_permille: int = 20,
    max_documents: int | None = None,
    show_progress: bool = True,
    apart_from_pieces: bool = False,
) -> tuple[LongSpans, LongSpans]:
    """(train, validation) long NTP spans of one corpus file, held out by article (see `data.long_context`).

    apart_from_pieces: also keep out of training every article holding a document that
        `load_ntp` holds out (by document) for the validation of its short pieces, so that
        training beside those pieces never reads their validation text.
    """
    sides = ArticleSides.of(tokenizer, spec, validation_permille=validation_permille, max_documents=max_documents,
                            show_progress=show_progress, apart_from_pieces=apart_from_pieces)
    return sides.spans(0, context_tokens, continuation_tokens), sides.spans(1, context_tokens, continuation_tokens)


@dataclass
class ArticleSides:
    """The articles of one corpus file and the side of each: 0 training, 1 validation, -1 neither."""

    name: str
    corpus: TokenizedCorpus
    articles: list[Article]
    side: np.ndarray  # int8 (articles,)
    separator_ids: list[int]

    @classmethod
    def of(cls, tokenizer, spec: str, *, validation_permille: int, max_documents: int | None = None,
           show_progress: bool = True, apart_from_pieces: bool = False) -> "ArticleSides":
        """Articles held out by a hash of their key (`long_spans` says what `apart_from_pieces` adds)."""
        corpus = tokenized_corpus(spec, tokenizer, max_documents=max_documents, show_progress=show_progress)
        articles = corpus_articles(spec, corpus, tokenizer)
        side = held_out_articles(articles, validation_permille).astype(np.int8)
        if apart_from_pieces:
            piece_held = corpus.held_out(validation_permille)
            touched = [s == 0 and bool(piece_held[a.documents].any()) for a, s in zip(articles, side)]
            side[np.asarray(touched, dtype=bool)] = -1
        separator = tokenizer(CHUNK_SEPARATOR, add_special_tokens=False)["input_ids"]
        return cls(str(spec).rsplit("/", 1)[-1], corpus, articles, side, separator)

    def spans(self, side: int, context_tokens: int, continuation_tokens: int) -> LongSpans:
        """The spans of the articles of one side at one length."""
        return LongSpans(f"{self.name}@{context_tokens}", self.corpus,
                         [a for a, s in zip(self.articles, self.side) if s == side], context_tokens,
                         continuation_tokens, self.separator_ids)

    def documents(self, side: int) -> np.ndarray:
        """(documents,) bool: the documents of the articles of one side."""
        mask = np.zeros(len(self.corpus), dtype=bool)
        for article, s in zip(self.articles, self.side):
            if s == side:
                mask[article.documents] = True
        return mask


# ---------------------------------------------------------------------------- SFT
def load_sft(
    backbone,
    files: Sequence[str],
    *,
    template: PromptTemplate | None = None,
    context_budget: int = 512,
    validation_permille: int = 50,
    val_examples: int = 256,
    val_questions: int = 300,
    skip_malformed: bool = False,
) -> Split:
    """SFT examples from QA files (one source each), held out by context.

    The held-out questions (for validation F1) and examples (for validation loss) are taken
    round-robin over the files, so a small file is validated as much as a large one.
    """
    template = template or PromptTemplate()
    train, validation, questions = [], [], []
    for spec in files:
        qas = list(load_qa(str(spec), skip_malformed=skip_malformed))
        examples = sft_examples(backbone, qas, template, context_budget)
        source_train, source_val, source_questions = [], [], []
        for qa, example in zip(qas, examples):
            if is_held_out(qa.context, validation_permille):
                source_val.append(example)
                source_questions.append(qa)
            else:
                source_train.append(example)
        train.append(ListSource(str(spec).rsplit("/", 1)[-1], source_train))
        validation.append(source_val)
        questions.append(source_questions)
    if not any(len(s) for s in train):
        raise DataError(f"no SFT training examples in {list(files)}")
    return Split(ExampleSet(train), interleave(validation, val_examples), interleave(questions, val_questions))


def sft_examples(backbone, qas: Sequence[QAExample], template: PromptTemplate, context_budget: int) -> list[Example]:
    """One example per question: its context's last `context_budget` tokens, then prompt + answer + EOS (answer and EOS scored)."""
    eos = [backbone.eos_token_id] if backbone.eos_token_id is not None else []
    tokenize = lambda texts: backbone.tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []  # noqa: E731
    unique = list(dict.fromkeys(qa.context for qa in qas))
    contexts = {c: tuple(keep_tail(ids, context_budget)[0]) for c, ids in zip(unique, tokenize(unique))}
    prompts = tokenize([template.render(qa.question) for qa in qas])
    answers = tokenize([" " + qa.answers[0].strip() for qa in qas])
    return [Example(contexts[qa.context], tuple(prompt + answer + eos), score_from=len(prompt))
            for qa, prompt, answer in zip(qas, prompts, answers)]


# ---------------------------------------------------------------------------- long contexts
@dataclass
class LongNTP:
    """A long NTP run's spans: its training sources, its fixed validation spans, and the documents these hold out.

    train: one source per (file, length), file-major.
    validation: per length, the held-out spans scored at every validation (lengths in `too_short` absent).
    held: per file, (documents,) bool: the documents of its validation articles; `load_ntp(apart=...)`
        keeps them out of the short training pieces too, so no training example reads them.
    too_short: the lengths at which no held-out article is long enough for a span.
    """

    train: list[LongSpans]
    validation: dict[int, list[Example]]
    held: list[np.ndarray]
    too_short: list[int]


def long_ntp_data(backbone, files: Sequence[str], lengths: Sequence[int], *, continuation_tokens: int,
                  validation_permille: int, seed: int, validation_spans: int = LONG_VALIDATION_SPANS,
                  max_documents: int | None = None, show_progress: bool = True) -> LongNTP:
    """Long NTP spans of each corpus at each length, for training and for validation, apart from each other.

    Articles are held out whole, by a hash of their key (`data.long_context.held_out_articles`):
    training spans come only from the other articles, less any holding a document of the short
    pieces' validation slice (`long_spans`, apart_from_pieces); validation spans only from the
    held-out articles, whose documents (`held`) no training piece reads either. The validation
    spans of a length are `validation_spans` of them, taken round-robin over the files, each
    file's in an order drawn once from `seed`: the same set at every validation and epoch.
    """
    train, held, found = [], [], {length: [] for length in lengths}
    for index, spec in enumerate(files):
        sides = ArticleSides.of(backbone.tokenizer, str(spec), validation_permille=validation_permille,
                                max_documents=max_documents, show_progress=show_progress, apart_from_pieces=True)
        held.append(sides.documents(1))
        for length in lengths:
            train.append(sides.spans(0, length, continuation_tokens))
            spans = sides.spans(1, length, continuation_tokens)
            order = np.random.default_rng([seed, length, index, 6151]).permutation(len(spans))
            found[length].append(SubsetSource(spans, order))
    validation = {length: interleave(groups, validation_spans) for length, groups in found.items()}
    too_short = [length for length in lengths if not validation[length]]
    return LongNTP(train, {k: v for k, v in validation.items() if v}, held, too_short)


def distractor_sources(backbone, files: Sequence[str], lengths: Sequence[int], *, validation_permille: int, seed: int,
                       template: PromptTemplate | None = None, max_questions: int | None = None) -> list[RedrawnSource]:
    """SFT examples whose contexts hide the gold paragraph among distractors, one source per (file, length).

    max_questions: per file, only the units (a paragraph and its questions) of a seeded sample holding
    at most this many questions get documents; the distractors still come from every training paragraph.

    Only a file's training-side questions are used, and their contexts are the only
    distractors: no held-out (validation) paragraph enters a training document, in any epoch.
    Positions and distractors are drawn anew each epoch from (seed, epoch) (`RedrawnSource`,
    `data.distractors.DistractorBuilder`); epoch 0 draws those of `with_distractors(seed=seed)`.
    """
    template = template or PromptTemplate()
    count = token_counter(backbone.tokenizer)
    sources = []
    for spec in files:
        qas = [qa for qa in load_qa(str(spec)) if not is_held_out(qa.context, validation_permille)]
        with parallel_tokenizer():  # tokenising the documents is most of a draw's time: on every core
            builder = DistractorBuilder([qa.context for qa in qas], count, seed)  # one count of the paragraphs
        units = units_of(qas) if max_questions is None else sampled_units(units_of(qas), max_questions, seed)
        for length in lengths:
            def draw(epoch: int, length: int = length, builder: DistractorBuilder = builder, units=units) -> list[Example]:
                hidden = hidden_questions(builder, units, length, measure=False, epoch=epoch)
                with parallel_tokenizer():
                    return sft_examples(backbone, hidden, template, length)

            sources.append(RedrawnSource(f"{str(spec).rsplit('/', 1)[-1]}@{length}", draw))
    return sources


def sampled_units(units: Sequence[Unit], max_questions: int, seed: int) -> list[Unit]:
    """Units in a seeded order, taken while their questions fit in `max_questions`, then in file order again."""
    order = np.random.default_rng([seed, max_questions]).permutation(len(units))
    kept, questions = [], 0
    for index in order:
        if questions + len(units[index].questions) <= max_questions:
            kept.append(int(index))
            questions += len(units[index].questions)
    return [units[i] for i in sorted(kept)]


def long_validation_questions(backbone, questions: Sequence[QAExample], lengths: Sequence[int], *,
                              seed: int) -> dict[int, list[QAExample]]:
    """The held-out questions again at each length, their gold paragraph among the other held-out paragraphs.

    Validation for a run that trains on distractors: F1 where it is meant to help, from held-out
    paragraphs only (the training documents never hold one), drawn as training draws them.
    """
    count = token_counter(backbone.tokenizer)
    return {length: with_distractors(list(questions), count, length, seed=seed, measure=False) for length in lengths}


# ---------------------------------------------------------------------------- batching
def bucketed_batches(indices: Sequence[int], lengths: np.ndarray, batch_size: int, seed: int, pool: int = 64) -> list[list[int]]:
    """Shuffled full batches of similar-length examples (entries of `indices`, which may repeat).

    The indices are shuffled, cut into pools of `pool * batch_size`, sorted by length inside a
    pool and batched; the batches are then shuffled. A last batch short of `batch_size` is
    dropped (every step then sees the same number of examples). Deterministic for a seed.
    """
    rng = random.Random(seed)
    order = [int(i) for i in indices]
    rng.shuffle(order)
    batches = []
    size = pool * batch_size
    for start in range(0, len(order), size):
        chunk = sorted(order[start : start + size], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    batches = [b for b in batches if len(b) == batch_size]
    rng.shuffle(batches)
    return batches
