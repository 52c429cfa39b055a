"""The main job: compress a document once, then answer many questions over it.

    reader = Reader.load()                       # bundled Gemma-3-270M + shipped compressor
    document = reader.compress(text)             # one encoder pass + the compressor
    document.save("doc.ctx")
    reader.ask(document, ["Who ...?", "When ...?"])
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from .backbone import Backbone
from .chunks import CHUNK_TOKENS, split_chunks
from .compressor import ComprExIT, Slots
from .config import ComprExITConfig
from .decoding import SENTENCE, Decoder, EagerDecoder, GraphDecoder, PrefixCache, get_answer_rule
from .document import CompressedDocument
from .errors import CheckpointError, InputError
from .memory import check_fits, estimate
from .prefix import SoftPrefix
from .progress import Progress, bar
from .prompting import PromptTemplate
from .weights import shipped_compressor_dir

logger = logging.getLogger(__name__)

PROMPT_RESERVE = 512  # decoder positions kept free for the question and the answer
MAX_QUESTION_TOKENS = 200  # a question's own tokens; with the prompt's ~22 and MAX_NEW_TOKENS, within PROMPT_RESERVE
MAX_NEW_TOKENS = 256  # tokens an answer may run to
ENCODE_BATCH = 8  # chunks per encoder pass
UNTRAINED_SEED = 0  # the random weights used where no trained compressor is shipped


class UntrainedCompressorWarning(UserWarning):
    """No trained weights exist for this backbone: answers from slots will be meaningless."""


class Reader:
    """A frozen backbone plus a compressor, with the QA prompt used to read the slots.

    chunk_tokens: documents longer than this are compressed chunk by chunk (each chunk is one
        encoder pass, as in training), and the chunks' slots are concatenated in order.
    decoder: how answers are decoded (decoding/): by default an `EagerDecoder`; a `StaticDecoder`
        or a `GraphDecoder` decodes through static caches, with the same answers.
    answer_rule: the registered rule that cuts a generated text into the answer (decoding/answers.py):
        "sentence" (default: the first sentence, versions, decimals, URLs and abbreviations kept
        whole) or "paper" (the evaluation protocol's first "." or newline).
    """

    def __init__(
        self,
        backbone: Backbone,
        compressor: ComprExIT,
        template: PromptTemplate | None = None,
        chunk_tokens: int = CHUNK_TOKENS,
        compressor_name: str = "",
        decoder: Decoder | None = None,
        answer_rule: str = SENTENCE,
    ):
        if chunk_tokens < 1:
            raise InputError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
        self.backbone = backbone
        self.compressor = compressor.to(backbone.device).eval()
        self.template = template or PromptTemplate()
        self.chunk_tokens = chunk_tokens
        self.compressor_name = compressor_name
        self.decoder = decoder or EagerDecoder(backbone)
        self.answer_rule = get_answer_rule(answer_rule)

    @classmethod
    def load(
        cls,
        compressor: str | Path | None = None,
        backbone: str | Path | Backbone | None = None,
        *,
        device: str | None = "auto",
        dtype: str | None = "auto",
        template: PromptTemplate | None = None,
        chunk_tokens: int = CHUNK_TOKENS,
        compile_mode: str | None = None,
        answer_rule: str = SENTENCE,
    ) -> "Reader":
        """Load a backbone (default: bundled) and a compressor folder (default: the shipped one).

        compile_mode: run the compressor through `torch.compile` in this mode ("reduce-overhead"
        on a GPU: the eager compressor is launch-bound; results/bench/h100.md measures both).
        The first compression of each new shape then pays the compilation (~15-20 s). On a GPU
        the answers are decoded by a GraphDecoder too (decoding/graph.py: compiled question
        prefill and decode steps from static caches; per question 1.9-4.1x faster than
        generate's compiled steps, results/bench/h200-2048.md and its neighbours); each new batch size, cache length (a
        power of two) and question-length bucket compiles once. On a CPU decoding stays eager,
        which is faster there.
        """
        get_answer_rule(answer_rule)  # an unknown name is refused before anything loads
        if not isinstance(backbone, Backbone):
            backbone = Backbone.load(backbone, device=device, dtype=dtype)
        if compressor is None:
            compressor = shipped_compressor_dir(backbone.identity)
        if compressor is None:
            warnings.warn(
                f"no trained compressor is shipped for {backbone.identity.name}: using UNTRAINED random "
                f"weights (seed {UNTRAINED_SEED}); answers read from slots will be meaningless. Train one with "
                "`comprexit train` and pass --compressor DIR.",
                UntrainedCompressorWarning,
                stacklevel=2,
            )
            with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
                torch.default_generator.manual_seed(UNTRAINED_SEED)  # the weights are drawn on the CPU
                model = ComprExIT.for_backbone(backbone, ComprExITConfig())
            name = "untrained"
        else:
            model, name = ComprExIT.from_pretrained(compressor, backbone), str(compressor)
        decoder: Decoder = EagerDecoder(backbone)
        if compile_mode is not None:
            model.compile(mode=compile_mode, dynamic=False)
            if backbone.device.type == "cuda":
                decoder = GraphDecoder.compiled(backbone, mode=compile_mode, reserve=PROMPT_RESERVE)
        return cls(backbone, model, template=template, chunk_tokens=chunk_tokens, compressor_name=name,
                   decoder=decoder, answer_rule=answer_rule)

    # ------------------------------------------------------------------ limits
    @property
    def max_context_tokens(self) -> int | None:
        """Longest context whose slots plus a question still fit the decoder's positions."""
        positions = self.backbone.max_positions
        if positions is None:
            return None
        return max(0, positions - PROMPT_RESERVE - self.compressor.config.reader_tokens) * self.compressor.config.ratio

    def context_ids(self, text: str) -> list[int]:
        """Token ids of a document, refusing empty and over-long ones with a clear message."""
        if not isinstance(text, str) or not text.strip():
            raise InputError("the context is empty (nothing but whitespace)")
        ids = self.backbone.tokenize(text)
        cap = self.max_context_tokens
        if cap is not None and len(ids) > cap:
            raise InputError(
                f"the context has {len(ids)} tokens; at most {cap} fit "
                f"({self.backbone.max_positions} decoder positions, ratio {self.compressor.config.ratio})"
            )
        return ids

    # ------------------------------------------------------------------ compression
    @torch.no_grad()
    def compress(self, text: str, *, progress: Progress | None = None) -> CompressedDocument:
        return self.compress_ids(self.context_ids(text), progress=progress)

    @torch.no_grad()
    def compress_ids(self, ids: Sequence[int], *, progress: Progress | None = None) -> CompressedDocument:
        """Compress a tokenised document, in chunks of `chunk_tokens` encoded `ENCODE_BATCH` at a time; the
        compressor's reader tokens, where it has them, go with the document once (read before all its slots)."""
        slots = torch.cat([out.slots[out.mask] for _, out in self.compressed_chunks(ids, progress=progress)])
        reader_tokens = self.compressor.reader_tokens
        return CompressedDocument(
            slots=slots.float().cpu(),
            mask=torch.ones(len(slots), dtype=torch.bool),
            backbone=self.backbone.identity,
            context_tokens=len(ids),
            ratio=self.compressor.config.ratio,
            compressor=self.compressor_name,
            chunk_tokens=self.chunk_tokens,
            reader_tokens=None if reader_tokens is None else reader_tokens.detach().float().cpu(),
        )

    @torch.no_grad()
    def compressed_chunks(self, ids: Sequence[int], *, diagnostics: bool = False,
                          progress: Progress | None = None) -> Iterator[tuple[list[list[int]], Slots]]:
        """(chunks, their slots) per encoder pass: `ids` cut into chunks of `chunk_tokens` tokens, encoded
        `ENCODE_BATCH` chunks at a time (bounded memory for very long documents), each batch compressed
        (with `diagnostics`, also what made the slots: comprexit/reporting reads them)."""
        if not len(ids):
            raise InputError("the context is empty")
        chunks = split_chunks(ids, self.chunk_tokens)
        with bar(progress, len(ids), "compressing", "token") as shown:
            for start in range(0, len(chunks), ENCODE_BATCH):
                batch = chunks[start : start + ENCODE_BATCH]
                index = torch.arange(start, start + len(batch))  # the chunk-position signal, where the compressor has one
                yield batch, self.compressor.compress(self.backbone.encode(batch), diagnostics=diagnostics, chunk_index=index)
                shown.update(sum(len(chunk) for chunk in batch))

    # ------------------------------------------------------------------ questions
    def _check_document(self, document: CompressedDocument) -> None:
        problems = document.backbone.mismatch(self.backbone.identity)
        if problems:
            raise CheckpointError(
                f"this document was compressed for {document.backbone.describe()}, "
                f"not for {self.backbone.identity.describe()}"
            )

    def prompt_ids(self, question: str) -> list[int]:
        return self.backbone.tokenize(self.template.render(question))

    def prompts(self, questions: str | Sequence[str], max_new_tokens: int = 20) -> list[list[int]]:
        """The prompt ids of every question, refusing, before any work, an empty question, one over
        `MAX_QUESTION_TOKENS` tokens (named by its number, never echoed) and answers too long to fit."""
        check_max_new_tokens(max_new_tokens)
        questions = [questions] if isinstance(questions, str) else list(questions)
        if not questions:
            raise InputError("no question was given")
        prompts = []
        for number, question in enumerate(questions, start=1):
            if not isinstance(question, str) or not question.strip():
                raise InputError(f"question {number} is empty")
            tokens = len(self.backbone.tokenize(question.strip()))
            if tokens > MAX_QUESTION_TOKENS:
                raise InputError(
                    f"question {number} has {tokens:,} tokens; at most {MAX_QUESTION_TOKENS} are read (ask a shorter one)"
                )
            prompt = self.prompt_ids(question)
            if len(prompt) + max_new_tokens > PROMPT_RESERVE:
                raise InputError(
                    f"question {number}'s prompt ({len(prompt)} tokens) and {max_new_tokens} new tokens exceed the "
                    f"{PROMPT_RESERVE} positions kept for a question and its answer"
                )
            prompts.append(prompt)
        return prompts

    def check_memory(self, positions: int, questions: int, batch_size: int, use_cache: bool, what: str,
                     advice: str) -> None:
        """Refuse (memory.py) reading `positions` prefix positions and answering up to `batch_size` of
        `questions` questions at once after them, where the device has not the memory it needs."""
        found = estimate(self.backbone, positions, min(questions, batch_size), PROMPT_RESERVE,
                         chunk=self.decoder.prefill_chunk if use_cache else None, cached=use_cache)
        check_fits(found, self.backbone.device, what, advice)

    def slot_cache(self, document: CompressedDocument, progress: Progress | None = None) -> PrefixCache:
        """The decoder's cache over `[BOS] + slots` (reader tokens first, where the document has them),
        computed on first use and kept on the document.

        It is kept for this reader's decoder (on the backbone's device and dtype of now): another
        decoder prefills its own, since a cache is read only by the decoder that made it.
        """
        key = (self.decoder, str(self.backbone.device), self.backbone.dtype)
        if document.decoder_cache is None or document.decoder_cache[0] != key:
            prefix = document.prefix().to(self.backbone.device)
            with bar(progress, len(prefix) + len(self.backbone.bos_ids), "reading slots", "slot") as shown:
                document.decoder_cache = (key, self.decoder.prefill(prefix, shown.update))
        return document.decoder_cache[1]

    @torch.no_grad()
    def ask(
        self,
        document: CompressedDocument | str,
        questions: str | Sequence[str],
        *,
        max_new_tokens: int = 20,
        batch_size: int = 16,
        use_cache: bool = True,
        progress: Progress | None = None,
    ) -> list[str]:
        """Answer each question from the document's slots (a text is compressed first).

        With `use_cache` the decoder reads `[BOS] + slots` once per document and every question
        only prefills itself; without, each batch re-reads the slots (same answers, slower).
        Questions are checked (`prompts`) before a text is compressed.
        """
        prompts = self.prompts(questions, max_new_tokens)
        if isinstance(document, str):
            document = self.compress(document, progress=progress)
        self._check_document(document)
        self.check_memory(document.prefix_positions + len(self.backbone.bos_ids), len(prompts), batch_size, use_cache,
                          f"reading {document.num_slots:,} slots", "ask fewer questions at once (batch_size)")
        if use_cache:
            cache = self.slot_cache(document, progress)
            return self._answer(prompts, batch_size, progress,
                                lambda batch: self.decoder.cached_answers(cache, batch, max_new_tokens))
        prefix = document.prefix().to(self.backbone.device)
        return self._answer(prompts, batch_size, progress, lambda batch: self.decoder.answers(
            [SoftPrefix(prefix)] * len(batch), batch, max_new_tokens))

    @torch.no_grad()
    def full_context_ids(self, text: str) -> list[int]:
        """Token ids of a document read uncompressed, refusing empty ones and ones the decoder cannot hold."""
        ids = self.backbone.tokenize(text) if isinstance(text, str) and text.strip() else []
        if not ids:
            raise InputError("the context is empty (nothing but whitespace)")
        positions = self.backbone.max_positions
        if positions is not None and len(ids) > positions - PROMPT_RESERVE:
            raise InputError(
                f"the context has {len(ids)} tokens; read in full, at most {positions - PROMPT_RESERVE} fit "
                f"the decoder's {positions} positions (compress it instead)"
            )
        return ids

    def ask_full_context(
        self,
        text: str | Sequence[int],
        questions: str | Sequence[str],
        *,
        max_new_tokens: int = 20,
        batch_size: int = 16,
        use_cache: bool = True,
        progress: Progress | None = None,
    ) -> list[str]:
        """Answer from the uncompressed context (the zero-shot upper bound), for comparison.

        `text` may also be the ids `full_context_ids` returned. With `use_cache` the context's
        key/value cache is computed once for all questions (prefix caching), as a serving
        system would, reading the context `decoder.prefill_chunk` positions at a time, so that
        memory grows linearly with its length (decoding/prefill.py); without, every batch reads
        it in one pass. Questions, positions and memory are checked before any of it runs.
        """
        prompts = self.prompts(questions, max_new_tokens)
        ids = self.full_context_ids(text) if isinstance(text, str) else list(text)
        positions = len(ids) + len(self.backbone.bos_ids)
        self.check_memory(positions, len(prompts), batch_size, use_cache,
                          f"reading {len(ids):,} context tokens in full", "compress the document instead (no --full-context)")
        prefix = self.backbone.embed(torch.tensor(ids, device=self.backbone.device))
        if not use_cache:
            return self._answer(prompts, batch_size, progress, lambda batch: self.decoder.answers(
                [SoftPrefix(prefix)] * len(batch), batch, max_new_tokens))
        with bar(progress, positions, "reading", "token") as shown:
            cache = self.decoder.prefill(prefix, shown.update)
        return self._answer(prompts, batch_size, progress,
                            lambda batch: self.decoder.cached_answers(cache, batch, max_new_tokens))

    def _answer(self, prompts: list[list[int]], batch_size: int, progress: Progress | None,
                decode: Callable[[list[list[int]]], list[str]]) -> list[str]:
        """The answers of `prompts`, `batch_size` at a time: `decode` gives each batch's raw texts (after a
        prefilled cache, or after `[BOS] + prefix` in left-padded rows), the answer rule cuts them."""
        answers: list[str] = []
        with bar(progress, len(prompts), "answering", "question") as shown:
            for start in range(0, len(prompts), batch_size):
                batch = prompts[start : start + batch_size]
                answers.extend(self.answer_rule(text) for text in decode(batch))
                shown.update(len(batch))
        return answers


def check_max_new_tokens(max_new_tokens: int) -> None:
    """Refuse an answer length outside 1..MAX_NEW_TOKENS (the CLI checks it before loading anything)."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise InputError(f"max_new_tokens must be an integer from 1 to {MAX_NEW_TOKENS}, got {max_new_tokens!r}")
