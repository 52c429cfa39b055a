"""The frozen causal LM that both compresses (encoder pass) and reads (decoder pass).

`Backbone` wraps any Hugging Face causal LM through its public interface only and offers its
views: token ids in, every layer's hidden states out (`frozen_pass`, `encode`); input
embeddings in, final states out (`final_hidden`); LM-head logits; the tokenizer. Its weights
never train. How it is decoded greedily is the `decoding` package's business, not its own.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch

from . import bundled
from .assembly import RIGHT, Tokens, assemble
from .errors import CheckpointError, ConfigError, InputError
from .hf_compat import cache_argument
from .hub import hub_source

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ATTENTIONS = ("sdpa", "eager")


@dataclass(frozen=True)
class BackboneIdentity:
    """What a compressor checkpoint must match: it was trained on exactly these hidden states."""

    name: str
    model_type: str
    hidden_size: int
    num_layers: int
    vocab_size: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "BackboneIdentity":
        try:
            return cls(**{k: values[k] for k in ("name", "model_type", "hidden_size", "num_layers", "vocab_size")})
        except (KeyError, TypeError) as error:
            raise CheckpointError(f"backbone identity is incomplete: {values!r}") from error

    def mismatch(self, other: "BackboneIdentity") -> list[str]:
        """Structural differences (name differences alone are tolerated: one model, many paths)."""
        fields = ("model_type", "hidden_size", "num_layers", "vocab_size")
        return [f"{f} {getattr(self, f)} != {getattr(other, f)}" for f in fields if getattr(self, f) != getattr(other, f)]

    def describe(self) -> str:
        return (
            f"{self.name} ({self.model_type}, hidden {self.hidden_size}, {self.num_layers} layers, "
            f"vocab {self.vocab_size})"
        )


@dataclass
class EncodedContexts:
    """All hidden states of a batch of contexts, right-padded.

    hidden_states: (batch, tokens, layers + 1, hidden); index 0 is the embedding output.
    mask: (batch, tokens) bool, True on real tokens.
    """

    hidden_states: torch.Tensor
    mask: torch.Tensor


DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The torch device of `device` ("auto": the GPU if there is one), refusing in one line a name torch
    does not know (device names are lower case: "CPU" is refused), one no model runs on here, or a GPU
    that is not there."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as error:  # torch.device("tpu"): "Expected one of cpu, cuda, ..."
        raise InputError(f"unknown device {device!r} (use cpu, cuda, cuda:N or auto)") from error
    if parsed.type not in DEVICE_TYPES:
        raise InputError(f"unknown device {device!r} (use cpu, cuda, cuda:N or auto)")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {device} was asked for, but no CUDA GPU is available")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise InputError(f"device {device} was asked for, but there are {torch.cuda.device_count()} CUDA GPU(s)")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {device} was asked for, but MPS is not available")
    if parsed.type == "xpu" and not (hasattr(torch, "xpu") and torch.xpu.is_available()):
        raise InputError(f"device {device} was asked for, but no XPU is available")
    return parsed


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {sorted(DTYPES)} or 'auto', got {dtype!r}")
    return DTYPES[dtype]


class Backbone:
    """A frozen causal LM with its tokenizer.

    Load one with `Backbone.load()` (the bundled Gemma-3-270M), `Backbone.load("org/model")`
    (a hub id or a local folder) or `Backbone.load("file.gguf")`.
    """

    def __init__(self, model, tokenizer, name: str):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        # the module both passes run (`frozen_pass`, `final_hidden`): the model without its LM head;
        # `training.compiled.compiled_backbone` gives a view whose body is compiled
        self.body = model.base_model
        model.eval()
        model.requires_grad_(False)
        config = model.config
        self.config = config
        self.identity = BackboneIdentity(
            name=name,
            model_type=str(getattr(config, "model_type", "unknown")),
            hidden_size=int(config.hidden_size),
            num_layers=int(config.num_hidden_layers),
            vocab_size=int(model.get_input_embeddings().num_embeddings),
        )
        self.bos_token_id = tokenizer.bos_token_id
        self.eos_token_ids = _eos_ids(tokenizer, model)
        self.eos_token_id = self.eos_token_ids[0] if self.eos_token_ids else None
        pad = tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else (self.eos_token_id if self.eos_token_id is not None else 0)
        self.max_positions = getattr(config, "max_position_embeddings", None)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        name_or_path: str | Path | None = None,
        *,
        device: str | torch.device | None = "auto",
        dtype: str | torch.dtype | None = "auto",
        attn_implementation: str = "sdpa",
        gguf_file: str | None = None,
    ) -> "Backbone":
        """Load a causal LM frozen, in eval mode, on `device` in `dtype`.

        `name_or_path` None (or "gemma-3-270m") gives the bundled default; a `.gguf` path or
        `gguf_file=` loads a GGUF checkpoint dequantised to a plain dense model.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if attn_implementation not in ATTENTIONS:
            raise ConfigError(f"attn_implementation must be one of {ATTENTIONS}, got {attn_implementation!r}")
        device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, device)
        if name_or_path is None or str(name_or_path) in bundled.BUNDLED_ALIASES:
            folder, name = bundled.ensure_dense_copy(), bundled.BUNDLED_NAME
            with _no_weight_loading_bar():
                model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype,
                                                             attn_implementation=attn_implementation)
            tokenizer = AutoTokenizer.from_pretrained(folder)
        elif gguf_file is not None or str(name_or_path).endswith(".gguf"):
            path = Path(name_or_path) / gguf_file if gguf_file else Path(name_or_path)
            model, tokenizer = bundled.load_gguf(path, dtype=torch_dtype)
            model.set_attn_implementation(attn_implementation)
            name = path.name
        else:
            name = str(name_or_path)
            source = hub_source(name)  # fails fast where transformers would retry an unreachable Hub
            try:
                with _no_weight_loading_bar():
                    model = AutoModelForCausalLM.from_pretrained(name, dtype=torch_dtype,
                                                                 attn_implementation=attn_implementation, **source)
                tokenizer = AutoTokenizer.from_pretrained(name, **source)
            except (OSError, ValueError) as error:
                raise CheckpointError(f"cannot load causal LM {name!r}: {str(error).splitlines()[0]}") from error
        return cls(model.to(device), tokenizer, name)

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    @property
    def hidden_size(self) -> int:
        return self.identity.hidden_size

    @property
    def num_hidden_states(self) -> int:
        """L + 1: the embedding output plus one state per layer."""
        return self.identity.num_layers + 1

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    # ------------------------------------------------------------------ tokens and embeddings
    def tokenize(self, text: str) -> list[int]:
        """Token ids of `text` without special tokens."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    @property
    def bos_ids(self) -> list[int]:
        """[BOS] where the model has one (Gemma and Llama do; some models have none)."""
        return [self.bos_token_id] if self.bos_token_id is not None else []

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings exactly as the model computes them (Gemma's sqrt(H) scale included)."""
        return self.model.get_input_embeddings()(input_ids.to(self.device))

    @torch.no_grad()
    def embedding_rms(self, sample: int = 4096) -> float:
        """Root-mean-square entry of the decoder's input embeddings over a spread of the vocabulary."""
        vocab = self.identity.vocab_size
        ids = torch.linspace(0, vocab - 1, steps=min(sample, vocab), device=self.device).long()
        return float(self.embed(ids).float().pow(2).mean().sqrt())

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """LM-head logits for final hidden states (with the model's logit soft-capping, if any)."""
        logits = self.model.get_output_embeddings()(hidden)
        cap = getattr(self.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    def final_hidden(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past_key_values=None,
    ) -> torch.Tensor:
        """Last (normed) hidden states of a decoder pass over input embeddings, without the LM head.

        With `past_key_values` (a cache the decoder attends to first), `attention_mask` covers
        the cached positions and then the new ones; only the new positions' states are returned.
        """
        cache = cache_argument(past_key_values) if past_key_values is not None else {}
        return self.body(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids, use_cache=False,
            **cache,
        ).last_hidden_state

    # ------------------------------------------------------------------ encoder pass
    @torch.no_grad()
    def frozen_pass(self, rows: Sequence[Sequence[int]], all_layers: bool) -> "FrozenPass":
        """Run the frozen model (without its LM head) over `[BOS] + row` for every row, right-padded.

        The one encoder pass of the library: the compressor's inputs at inference (`encode`) and
        in training, the teacher's states and the reference losses all come from it, so they
        are computed alike. Without padding no mask is passed, so attention takes its causal
        fast path (and transformers need not check the mask on the device).
        all_layers: keep every layer's states (what a compressor reads), not only the last.
        """
        inputs = assemble(self, Tokens([self.bos_ids + list(row) for row in rows]), side=RIGHT)
        padded = len({len(row) for row in rows}) > 1
        out = self.body(
            input_ids=inputs.input_ids,
            attention_mask=inputs.attention_mask if padded else None,
            output_hidden_states=all_layers,
            use_cache=False,
        )
        return FrozenPass(out.hidden_states if all_layers else None, out.last_hidden_state,
                          inputs.attention_mask.bool(), len(self.bos_ids))

    def encode(self, contexts: Sequence[Sequence[int]]) -> EncodedContexts:
        """Every layer's states of each context, read as `[BOS] + context`, right-padded.

        The BOS position is dropped (it is not part of the context), so token t of every
        context sits at position t.
        """
        if not contexts or any(len(c) == 0 for c in contexts):
            raise InputError("cannot encode an empty context")
        out = self.frozen_pass(contexts, all_layers=True)
        return EncodedContexts(hidden_states=out.layers(), mask=out.mask[:, out.first :])


@dataclass
class FrozenPass:
    """What one frozen pass over `[BOS] + row` (right-padded) gives.

    hidden_states: per hidden state (embedding output, then every layer) a (batch, width, hidden)
        tensor, or None when only the last was kept.
    last: (batch, width, hidden) final (normed) states.
    mask: (batch, width) bool, True on real positions.
    first: column of each row's first token after BOS.
    """

    hidden_states: tuple[torch.Tensor, ...] | None
    last: torch.Tensor
    mask: torch.Tensor
    first: int

    def layers(self, tokens: int | None = None) -> torch.Tensor:
        """(batch, tokens, layers + 1, hidden): every layer's states of the first `tokens` tokens after BOS (all by default)."""
        stop = None if tokens is None else self.first + tokens
        return torch.stack([h[:, self.first : stop] for h in self.hidden_states], dim=2)


@contextmanager
def _no_weight_loading_bar() -> Iterator[None]:
    """Hide the "Loading weights" bar transformers draws on every load of a dense checkpoint (an
    instant here, noise on every API call), leaving download bars (huggingface_hub's own) alone:
    transformers' bars made meanwhile are created disabled, through its public tqdm hook."""
    from transformers.utils import logging as hf_logging

    def disabled(factory, args, kwargs):
        return factory(*args, **{**kwargs, "disable": True})

    previous = hf_logging.set_tqdm_hook(disabled)
    try:
        yield
    finally:
        hf_logging.set_tqdm_hook(previous)


def _eos_ids(tokenizer, model) -> list[int]:
    """End-of-sequence ids: the tokenizer's EOS first, then any other id the generation config names."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for token in configured if isinstance(configured, (list, tuple)) else [configured]:
        if token is not None and int(token) not in ids:
            ids.append(int(token))
    return ids

