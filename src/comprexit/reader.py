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
from typing import Sequence

import torch

from .backbone import Backbone
from .compressor import ComprExIT
from .config import ComprExITConfig
from .decoding import PAPER, Decoder, EagerDecoder, GraphDecoder, PrefixCache, get_answer_rule
from .document import CompressedDocument
from .errors import CheckpointError, InputError
from .prefix import SoftPrefix
from .prompting import PromptTemplate
from .weights import shipped_compressor_dir

logger = logging.getLogger(__name__)

CHUNK_TOKENS = 512  # context tokens per encoder pass: the context length the compressors are trained on
PROMPT_RESERVE = 512  # decoder positions kept free for the question and the answer
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
    answer_rule: the registered rule that cuts a generated text into the answer (decoding/answers.py).
    """

    def __init__(
        self,
        backbone: Backbone,
        compressor: ComprExIT,
        template: PromptTemplate | None = None,
        chunk_tokens: int = CHUNK_TOKENS,
        compressor_name: str = "",
        decoder: Decoder | None = None,
        answer_rule: str = PAPER,
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
                   decoder=decoder)

    # ------------------------------------------------------------------ limits
    @property
    def max_context_tokens(self) -> int | None:
        """Longest context whose slots plus a question still fit the decoder's positions."""
        positions = self.backbone.max_positions
        if positions is None:
            return None
        return max(0, positions - PROMPT_RESERVE) * self.compressor.config.ratio

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
    def compress(self, text: str) -> CompressedDocument:
        return self.compress_ids(self.context_ids(text))

    @torch.no_grad()
    def compress_ids(self, ids: Sequence[int]) -> CompressedDocument:
        """Compress a tokenised document, in chunks of `chunk_tokens` encoded as one batch."""
        if not len(ids):
            raise InputError("the context is empty")
        chunks = [list(ids[i : i + self.chunk_tokens]) for i in range(0, len(ids), self.chunk_tokens)]
        pieces = []
        for start in range(0, len(chunks), ENCODE_BATCH):  # bounded memory for very long documents
            out = self.compressor.compress(self.backbone.encode(chunks[start : start + ENCODE_BATCH]))
            pieces.append(out.slots[out.mask])
        slots = torch.cat(pieces)
        return CompressedDocument(
            slots=slots.float().cpu(),
            mask=torch.ones(len(slots), dtype=torch.bool),
            backbone=self.backbone.identity,
            context_tokens=len(ids),
            ratio=self.compressor.config.ratio,
            compressor=self.compressor_name,
            chunk_tokens=self.chunk_tokens,
        )

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

    def slot_cache(self, document: CompressedDocument) -> PrefixCache:
        """The decoder's cache over `[BOS] + slots`, computed on first use and kept on the document.

        It is kept for this reader's decoder (on the backbone's device and dtype of now): another
        decoder prefills its own, since a cache is read only by the decoder that made it.
        """
        key = (self.decoder, str(self.backbone.device), self.backbone.dtype)
        if document.decoder_cache is None or document.decoder_cache[0] != key:
            prefix = document.prefix().to(self.backbone.device)
            document.decoder_cache = (key, self.decoder.prefill(prefix))
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
    ) -> list[str]:
        """Answer each question from the document's slots (a text is compressed first).

        With `use_cache` the decoder reads `[BOS] + slots` once per document and every question
        only prefills itself; without, each batch re-reads the slots (same answers, slower).
        """
        if isinstance(document, str):
            document = self.compress(document)
        self._check_document(document)
        if use_cache:
            return self._answer_cached(self.slot_cache(document), questions, max_new_tokens, batch_size)
        prefix = document.prefix().to(self.backbone.device)
        return self._answer(prefix, questions, max_new_tokens, batch_size)

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
    ) -> list[str]:
        """Answer from the uncompressed context (the zero-shot upper bound), for comparison.

        `text` may also be the ids `full_context_ids` returned. With `use_cache` the context's
        key/value cache is computed once for all questions (prefix caching), as a serving
        system would.
        """
        ids = self.full_context_ids(text) if isinstance(text, str) else list(text)
        prefix = self.backbone.embed(torch.tensor(ids, device=self.backbone.device))
        if use_cache:
            return self._answer_cached(self.decoder.prefill(prefix), questions, max_new_tokens, batch_size)
        return self._answer(prefix, questions, max_new_tokens, batch_size)

    def _prompts(self, questions) -> list[list[int]]:
        questions = [questions] if isinstance(questions, str) else list(questions)
        if not questions:
            raise InputError("no question was given")
        return [self.prompt_ids(q) for q in questions]

    def _answer(self, prefix: torch.Tensor, questions, max_new_tokens, batch_size) -> list[str]:
        """Every question read after `[BOS] + prefix` in left-padded batches; prefix: (positions, hidden)."""
        prompts = self._prompts(questions)
        answers: list[str] = []
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            raw = self.decoder.answers([SoftPrefix(prefix)] * len(chunk), chunk, max_new_tokens)
            answers.extend(self.answer_rule(text) for text in raw)
        return answers

    def _answer_cached(self, cache: PrefixCache, questions, max_new_tokens, batch_size) -> list[str]:
        prompts = self._prompts(questions)
        answers: list[str] = []
        for start in range(0, len(prompts), batch_size):
            raw = self.decoder.cached_answers(cache, prompts[start : start + batch_size], max_new_tokens)
            answers.extend(self.answer_rule(text) for text in raw)
        return answers
