"""Activation Beacon (Zhang et al., 2024, "Long Context Compression with Activation Beacon"):
the LLM condenses the context, window by window, into the keys and values of beacon tokens.

Layout. The context is cut into windows of `window` tokens (64; stride = window, no overlap)
and `window / ratio` beacon tokens (16 at ratio 4) are appended after each window's tokens:

    [BOS] + w_1 + b_1 + w_2 + b_2 + ... + w_n + b_n        (one right-padded row per context)

The last window may be shorter; it gets ceil(|w_n| / ratio) beacons, so a T-token context gets
ceil(T / r) beacons in all when r divides the window: the budget of ComprExIT's slots. Position
ids count the columns of this row (BOS at 0), as if the beacons were written into the text.

Attention (one pass, a block mask per layer). A token or beacon of window k attends `[BOS]`,
the beacons of windows 1..k-1 and, causally, its own window's tokens and beacons; never the
raw tokens of an earlier window. That is the paper's streaming workflow (window k is read with
the cache of all earlier beacons, then its raw tokens' keys and values are dropped) computed in
a single pass: since every entry's states depend only on what it attends to, the result is the
same, and tests/test_methods.py checks it against streaming with a cache. In sliding-window
layers (Gemma-3) an entry sees only the last `sliding_window` entries of what it attends to, as
the model would if it streamed them, and as the decoder reads the cache it is handed. `[BOS]`
stays visible to every window as an attention sink (the frozen model only ever saw text that
starts with it; Gemma's first-token activations are huge), but is not part of the cache.

Beacon projections. Beacon rows get their own query, key and value projections at every layer,
trainable copies of the frozen layer's `q_proj`, `k_proj`, `v_proj` (the paper's MHA^b; it keeps
the rest of the LLM frozen). They are attached only during the encoder pass, by swapping each
attention module's q/k/v `nn.Linear` for a `BeaconProjection` (raw rows through the frozen
Linear, beacon rows through the copy) and putting the originals back in a `finally`: the backbone
that the decoder, the KL teacher and every other method use is left as it was. The key norm and
rotary embedding of the attention module then apply to beacon rows as to any other. The last
layer's query copy is left out: it only shapes a final beacon state nobody reads. The beacons'
input vectors are learned too, one per beacon index in a window (appended beacons otherwise
differ only by position), initialised to EOS's input embedding as the authors' code does.
Gemma-3-270M: 18 x (q 640x1024 + k, v 640x256) - the last q + 16 x 640 = 17,049,600 trainable
parameters (6.4% of the backbone); the backbone's own weights never change.

Decoder. The frozen backbone, plain q/k/v, reads every beacon's keys and values at every layer
(after the key norm and the rotary embedding at their layout positions, as the cache holds them)
followed by `[BOS] + prompt` at position ids continuing the layout (1 + T + ceil(T / r)): the
`KVPrefixBatch` layout of 500xCompressor. Nothing of the raw context reaches it.

Differences from the authors' code (FlagEmbedding, Long_LLM/activation_beacon), named here so
that the comparison is read with them: it interleaves one beacon after every `ratio` tokens by
default (`beacon_pos="interleave"`) and keeps no sink by default, where this baseline, as
specified for our comparison, appends a window's beacons after it; it shares one beacon embedding; its training script's default `beacon_param`
also copies the output projection (q, k, v, o), where the ComprExIT paper trains q, k, v; it
samples the ratio during training. Gradient checkpointing recomputes the whole encoder pass in
the backward pass (the cache its pass writes is what the decoder reads, so the model's own
per-layer checkpointing, which drops caches, cannot be used).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import ClassVar, Iterator, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import DynamicCache

from ..assembly import DecoderInputs, Tokens, Vectors, assemble
from ..backbone import Backbone
from ..config import ConfigFields, is_int_at_least
from ..errors import ConfigError, InputError
from ..hf_compat import cache_argument
from ..prefix import KVPrefixBatch
from .base import register_method
from .trainable import ContextBatch, ContextEncoder, TrainableMethod, register_encoder

PROJECTIONS = ("q_proj", "k_proj", "v_proj")
SINK, PADDING = -1, -2  # window index of `[BOS]` and of padding columns
MASKED_ATTENTION = ("sdpa", "eager")  # implementations that take a 4D mask


@dataclass
class BeaconConfig(ConfigFields):
    label: ClassVar[str] = "Activation Beacon config"

    window: int = field(default=64, metadata={"help": "context tokens per window (also the stride: windows do not overlap)"})
    ratio: int = field(default=4, metadata={"help": "compression ratio r: a window of W tokens gets W / r beacons"})
    max_context_tokens: int = field(
        default=512, metadata={"help": "longest context encoded (one pass over T + T/r positions, a (T + T/r)^2 mask)"}
    )

    def _problems(self):
        for name in ("window", "ratio", "max_context_tokens"):
            if not is_int_at_least(getattr(self, name), 1):
                yield f"{name} must be an integer >= 1, got {getattr(self, name)!r}"
        if is_int_at_least(self.window, 1) and is_int_at_least(self.ratio, 1) and self.window % self.ratio:
            yield f"ratio ({self.ratio}) must divide window ({self.window})"

    @property
    def beacons_per_window(self) -> int:
        return self.window // self.ratio


# ---------------------------------------------------------------------- attaching the beacon projections
class BeaconProjection(nn.Module):
    """Stands in for one frozen q/k/v `nn.Linear` during the encoder pass.

    Every row goes through `frozen`; the beacon rows, at (`rows[j]`, `cols[j]`) of the
    (batch, S, hidden) input, are then replaced by `beacon`'s output for them.
    """

    def __init__(self, frozen: nn.Linear, beacon: nn.Linear, rows: torch.Tensor, cols: torch.Tensor):
        super().__init__()
        self.frozen, self.beacon = frozen, beacon
        self.rows, self.cols = rows, cols

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.frozen(x)
        picked = x[self.rows, self.cols]  # (beacons, hidden)
        if not torch.is_autocast_enabled(x.device.type):
            picked = picked.to(self.beacon.weight.dtype)
        return out.index_put((self.rows, self.cols), self.beacon(picked).to(out.dtype))


@contextmanager
def beacon_projections(attentions: Sequence[nn.Module], projections: nn.ModuleList, rows: torch.Tensor,
                       cols: torch.Tensor) -> Iterator[None]:
    """Route the beacon rows of every attention module through its trainable copies, for the `with` block only."""
    swapped = []
    try:
        for attention, copies in zip(attentions, projections):
            for name, beacon in copies.items():
                frozen = getattr(attention, name)
                if isinstance(frozen, BeaconProjection):
                    raise RuntimeError("beacon projections are already attached to this backbone")
                swapped.append((attention, name, frozen))
                setattr(attention, name, BeaconProjection(frozen, beacon, rows, cols))
        yield
    finally:
        for attention, name, frozen in reversed(swapped):
            setattr(attention, name, frozen)


def attention_modules(model: nn.Module, num_layers: int) -> list[nn.Module]:
    """The self-attention module of every layer: the modules holding q_proj, k_proj and v_proj Linear layers."""
    found = [m for m in model.modules() if all(isinstance(getattr(m, p, None), nn.Linear) for p in PROJECTIONS)]
    if len(found) != num_layers:
        raise ConfigError(
            f"Activation Beacon needs one attention module with {'/'.join(PROJECTIONS)} Linear layers per layer; "
            f"found {len(found)} for {num_layers} layers"
        )
    return found


# ---------------------------------------------------------------------- layout and masks
@dataclass
class WindowLayout:
    """The encoder's rows and what each column holds.

    inputs: the right-padded rows `[BOS] + w_1 + b_1 + ...` (ids, mask, position ids, segment starts).
    window: (batch, S) long, on the CPU: the window index of each column; SINK for `[BOS]`, PADDING.
    beacon: (batch, S) bool, on the CPU: True on beacon columns.
    columns: per row, its beacon columns in context order.
    """

    inputs: DecoderInputs
    window: torch.Tensor
    beacon: torch.Tensor
    columns: list[list[int]]

    @classmethod
    def of(cls, backbone: Backbone, contexts: Sequence[Sequence[int]], config: BeaconConfig,
           beacons: torch.Tensor) -> "WindowLayout":
        """beacons: (window / ratio, hidden) the beacon input vectors; beacon j of every window reads row j."""
        W = config.window
        windows = [[list(c[start : start + W]) for start in range(0, len(c), W)] for c in contexts]
        segments, kinds = [Tokens([backbone.bos_ids] * len(contexts))], [(SINK, False)]
        for k in range(max(len(w) for w in windows)):
            chunk = [w[k] if k < len(w) else [] for w in windows]
            segments += [Tokens(chunk), Vectors(beacons, [math.ceil(len(t) / config.ratio) for t in chunk])]
            kinds += [(k, False), (k, True)]
        inputs = assemble(backbone, *segments)
        columns = torch.arange(inputs.width)[None, :]
        window = torch.full((inputs.rows, inputs.width), PADDING, dtype=torch.long)
        beacon = torch.zeros(inputs.rows, inputs.width, dtype=torch.bool)
        for segment, starts, (k, is_beacon) in zip(segments, inputs.starts, kinds):
            first = torch.tensor(starts)[:, None]
            inside = (columns >= first) & (columns < first + torch.tensor(segment.lengths())[:, None])
            window[inside] = k
            if is_beacon:
                beacon |= inside
        return cls(inputs, window, beacon, [row.nonzero().flatten().tolist() for row in beacon])

    def allowed(self, device: torch.device) -> torch.Tensor:
        """(batch, S, S) bool, built on `device`: may query column q attend key column k (before any sliding window)."""
        window, beacon = torch.stack([self.window, self.beacon.long()]).to(device)  # one copy to the device
        q, k = window[:, :, None], window[:, None, :]
        visible = (k == SINK) | (k == q) | (beacon.bool()[:, None, :] & (k < q))
        real = window != PADDING
        width = window.shape[1]
        causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
        allowed = visible & causal & real[:, None, :] & real[:, :, None]
        return allowed | torch.eye(width, dtype=torch.bool, device=device)  # padding queries attend themselves


def sliding(allowed: torch.Tensor, size: int | None) -> torch.Tensor:
    """Keep, for every query, only the last `size` keys (itself included) of those it may attend."""
    if size is None:
        return allowed
    from_end = allowed.flip(-1).cumsum(-1, dtype=torch.int32).flip(-1)  # allowed keys at or after each column
    return allowed & (from_end <= size)


class LayerMasks:
    """How the backbone's layers take a custom mask: one 4D mask, or one per layer type (sliding-window models)."""

    def __init__(self, model: nn.Module, attentions: Sequence[nn.Module]):
        config = model.config
        self.implementation = getattr(config, "_attn_implementation", None) or "eager"
        if self.implementation not in MASKED_ATTENTION:
            raise ConfigError(
                f"Activation Beacon passes its own attention mask, which attn_implementation "
                f"{self.implementation!r} does not take: load the backbone with one of {MASKED_ATTENTION}"
            )
        windows = [getattr(a, "sliding_window", None) for a in attentions]
        types = getattr(config, "layer_types", None)
        self.by_type: dict[str, int | None] | None = None
        if types is None:
            if len(set(windows)) > 1:
                raise ConfigError(f"layers with different sliding windows {sorted(set(windows), key=str)} but no layer_types")
            self.window = windows[0]
        else:
            self.by_type = {}
            for layer_type, size in zip(types, windows):
                if self.by_type.setdefault(layer_type, size) != size:
                    raise ConfigError(f"layers of type {layer_type!r} have different sliding windows")

    def __call__(self, allowed: torch.Tensor, dtype: torch.dtype):
        """The model's `attention_mask` argument for these allowed (query, key) pairs."""
        if self.by_type is None:
            return self._format(sliding(allowed, self.window), dtype)
        made: dict[int | None, torch.Tensor] = {}
        for size in self.by_type.values():
            if size not in made:
                made[size] = self._format(sliding(allowed, size), dtype)
        return {layer_type: made[size] for layer_type, size in self.by_type.items()}

    def _format(self, allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(batch, 1, S, S): bool for SDPA, additive (0 / most negative) for eager attention, as transformers builds them."""
        allowed = allowed[:, None]
        if self.implementation == "sdpa":
            return allowed
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


# ---------------------------------------------------------------------- the encoder
@register_encoder("beacon")
class BeaconEncoder(ContextEncoder):
    """Prefix: every beacon's keys and values at every layer (`KVPrefixBatch`).

    Registered tensors (what trains, saves and syncs): `projections[l][name]`, the trainable
    copies of layer l's q/k/v (k, v only in the last layer), and `beacons` (window / ratio, hidden).
    """

    config_class = BeaconConfig

    def __init__(self, config: BeaconConfig, backbone: Backbone):
        super().__init__(config, backbone.identity)
        if not backbone.bos_ids:
            raise ConfigError(f"beacon reads `[BOS] + prompt` after its cache, and {backbone.identity.name} has no BOS token")
        self.backbone = backbone  # a plain object, not a submodule: its weights stay out of state dicts
        attentions = attention_modules(backbone.model, backbone.identity.num_layers)
        self.masks = LayerMasks(backbone.model, attentions)
        object.__setattr__(self, "attentions", attentions)  # deliberately not submodules
        last = len(attentions) - 1
        self.projections = nn.ModuleList(
            nn.ModuleDict({name: trainable_copy(getattr(attention, name)) for name in PROJECTIONS
                           if not (layer == last and name == "q_proj")})
            for layer, attention in enumerate(attentions)
        )
        with torch.no_grad():
            if backbone.eos_token_id is not None:
                init = backbone.embed(torch.tensor([backbone.eos_token_id])).float().expand(config.beacons_per_window, -1)
            else:
                init = torch.randn(config.beacons_per_window, backbone.hidden_size) * backbone.embedding_rms()
        self.beacons = nn.Parameter(init.clone().to(backbone.device))
        self.checkpointing = False

    @classmethod
    def for_backbone(cls, backbone: Backbone, config: BeaconConfig | None = None) -> "BeaconEncoder":
        return cls(config or cls.config_class(), backbone).to(backbone.device)

    @property
    def max_context_tokens(self) -> int:
        return self.config.max_context_tokens

    def enable_gradient_checkpointing(self) -> None:
        self.checkpointing = True

    def forward(self, batch: ContextBatch) -> KVPrefixBatch:
        contexts = batch.contexts
        if not contexts or any(len(c) == 0 for c in contexts):
            raise InputError("cannot encode an empty context")
        longest = max(len(c) for c in contexts)
        if longest > self.config.max_context_tokens:
            raise InputError(
                f"beacon was built for contexts of at most {self.config.max_context_tokens} tokens, got {longest}"
            )
        backbone = self.backbone
        layout = WindowLayout.of(backbone, contexts, self.config, self.beacons)
        inputs = layout.inputs
        mask = self.masks(layout.allowed(backbone.device), backbone.dtype)
        rows, cols = (t.to(backbone.device) for t in layout.beacon.nonzero(as_tuple=True))
        run = partial(self._encode, mask=mask, positions=inputs.position_ids, rows=rows, cols=cols, columns=layout.columns)
        embeds = inputs.embeds()  # (batch, S, hidden), beacon columns read `beacons`
        if self.checkpointing and self.training and torch.is_grad_enabled():
            states = checkpoint(run, embeds, use_reentrant=False)
        else:
            states = run(embeds)
        layers = len(states) // 2
        next_positions = [len(backbone.bos_ids) + len(c) + len(cs) for c, cs in zip(contexts, layout.columns)]
        return KVPrefixBatch(states[:layers], states[layers:], [len(cs) for cs in layout.columns], next_positions)

    def _encode(self, embeds, *, mask, positions, rows, cols, columns) -> tuple[torch.Tensor, ...]:
        """The encoder pass: per layer the beacons' keys, then per layer their values, each (batch, kv_heads, P, head_dim) left-padded."""
        cache = DynamicCache()  # without the model config it keeps every column, even in sliding-window layers
        with beacon_projections(self.attentions, self.projections, rows, cols):
            self.backbone.model.base_model(
                inputs_embeds=embeds, attention_mask=mask, position_ids=positions, **cache_argument(cache), use_cache=True
            )
        prefix = KVPrefixBatch.gather([layer.keys for layer in cache.layers], [layer.values for layer in cache.layers],
                                      columns, [0] * len(columns))
        return (*prefix.keys, *prefix.values)


def trainable_copy(linear: nn.Linear) -> nn.Linear:
    """A float32 trainable Linear with the frozen one's weights (and bias)."""
    copy = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None, device=linear.weight.device)
    with torch.no_grad():
        copy.weight.copy_(linear.weight.float())
        if linear.bias is not None:
            copy.bias.copy_(linear.bias.float())
    return copy


@register_method("beacon")
class BeaconMethod(TrainableMethod):
    """The backbone (plain q/k/v) attends to the beacons' keys and values, then reads `[BOS] + prompt`."""

    encoder_class = BeaconEncoder
