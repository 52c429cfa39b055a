"""Losses of one training batch: the continuation/answer CE of the paper plus two denser signals.

* `ce`: cross-entropy of the scored target tokens read after `[BOS] + slots` (the paper).
* `kl`: KL(teacher || student) on the same tokens, the teacher being the frozen model that
  reads the full context: a whole distribution per token instead of one label.
* `ae`: autoencoding, reconstructing the context itself from `[BOS] + slots + marker`
  (as ICAE pretrains), with a learned marker vector that tells the decoder to repeat.

Every trainable method's prefix (a `ContextEncoder`'s output) is scored the same way: soft
prefixes are read as `[BOS] + prefix + targets`, key/value prefixes as `cache + [BOS] + targets`.
For ComprExIT, the encoder pass that gives the compressor its hidden states is also the
teacher pass: the frozen model reads `[BOS] + context + targets` once, and, causal as it
is, the context's states do not depend on what follows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..backbone import Backbone
from ..chunks import chunk_layout, join_chunks
from ..errors import ConfigError
from ..methods.trainable import ContextBatch
from ..prefix import KVPrefixBatch, SoftPrefixBatch
from .data import Example

LOGIT_CHUNK = 2048  # rows of vocabulary logits alive at once (262k-word vocabularies are large)


@dataclass
class LossWeights:
    ce: float = 1.0
    kl: float = 0.0
    ae: float = 0.0

    def __post_init__(self) -> None:
        for name in ("ce", "kl", "ae"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"loss weight {name} must be >= 0, got {value!r}")
        if self.ce + self.kl + self.ae == 0:
            raise ConfigError("at least one loss weight must be positive")


class AutoencodeMarker(nn.Module):
    """One learned input vector placed after the slots to ask the decoder for the context back."""

    def __init__(self, hidden_size: int, scale: float):
        super().__init__()
        self.vector = nn.Parameter(torch.randn(hidden_size) * scale)


@dataclass
class BatchLosses:
    """Token-summed losses and token counts, so means are exact across batches and processes."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    tokens: dict[str, float] = field(default_factory=dict)

    def mean(self, name: str) -> torch.Tensor:
        return self.sums[name] / max(self.tokens[name], 1)


class Timer:
    """Optional wall-clock split of a step (encoder pass, compressor, decoder); synchronises the GPU."""

    def __init__(self, enabled: bool = False):
        self.enabled = enabled
        self.seconds: dict[str, float] = {}
        self._last = None

    def mark(self, name: str | None, device: torch.device) -> None:
        if not self.enabled:
            return
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        if name is not None and self._last is not None:
            self.seconds[name] = self.seconds.get(name, 0.0) + now - self._last
        self._last = now


def _scored(examples: Sequence[Example], offsets: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rows, positions predicting each scored target, the target ids) for sequences `prefix + targets`.

    `offsets[i]` is where row i's targets start; the token at offset + j is predicted by offset + j - 1.
    """
    rows, positions, labels = [], [], []
    for i, (example, offset) in enumerate(zip(examples, offsets)):
        for j in range(example.score_from, len(example.targets)):
            rows.append(i)
            positions.append(offset + j - 1)
            labels.append(example.targets[j])
    return torch.tensor(rows), torch.tensor(positions), torch.tensor(labels)


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device`; to a GPU through pinned memory, so the copy does not wait for queued work."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def token_losses(
    backbone: Backbone, student: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Summed CE (and KL to the teacher) over rows of final hidden states, LOGIT_CHUNK rows at a time.

    Each chunk is checkpointed: its vocabulary logits are recomputed in the backward pass
    rather than kept, so memory stays bounded whatever the number of tokens.
    """

    def chunk_loss(h_student, chunk_labels, h_teacher):
        log_p = F.log_softmax(backbone.logits(h_student).float(), dim=-1)
        ce = F.nll_loss(log_p, chunk_labels, reduction="sum")
        if h_teacher is None:
            return ce, torch.zeros((), device=ce.device)
        with torch.no_grad():
            log_q = F.log_softmax(backbone.logits(h_teacher).float(), dim=-1)
        return ce, F.kl_div(log_p, log_q, log_target=True, reduction="sum")

    ce_total = student.new_zeros((), dtype=torch.float32)
    kl_total = student.new_zeros((), dtype=torch.float32)
    for start in range(0, len(labels), LOGIT_CHUNK):
        end = start + LOGIT_CHUNK
        args = (student[start:end], labels[start:end], None if teacher is None else teacher[start:end])
        if student.requires_grad:
            ce, kl = checkpoint(chunk_loss, *args, use_reentrant=False)
        else:
            ce, kl = chunk_loss(*args)
        ce_total = ce_total + ce
        kl_total = kl_total + kl
    return ce_total, (kl_total if teacher is not None else None)


def decoder_inputs(
    backbone: Backbone,
    prefix: torch.Tensor | None,
    prefix_lengths: Sequence[int],
    targets: Sequence[Sequence[int]],
    insert: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Right-padded input embeddings `[BOS] + prefix_i[:n_i] (+ insert) + embed(targets_i)` and their mask.

    prefix: (batch, P, hidden) vectors whose first `prefix_lengths[i]` of row i are real (the
        compressor's slots: its non-empty slots always come first); None for no prefix.
    insert: an optional (hidden,) vector placed right after each row's real prefix.
    Returns (embeddings, attention mask, per-row offset of the first target token); laid out by
    assembly.py in one scatter, nothing read back from the device.
    """
    inputs = _soft(backbone, prefix, prefix_lengths, len(targets)).inputs(backbone, targets, insert)
    return inputs.embeds(), inputs.attention_mask, inputs.starts[-1]


def decoder_hidden(
    backbone: Backbone,
    prefix: torch.Tensor | None,
    prefix_lengths: Sequence[int],
    targets: Sequence[Sequence[int]],
    insert: torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[int]]:
    """Final hidden states of `decoder_inputs(...)`, and the per-row offset of the first target token."""
    return _soft(backbone, prefix, prefix_lengths, len(targets)).final_states(backbone, targets, insert)


def _soft(backbone: Backbone, prefix: torch.Tensor | None, lengths: Sequence[int], rows: int) -> SoftPrefixBatch:
    return SoftPrefixBatch.empty(backbone, rows) if prefix is None else SoftPrefixBatch(prefix, [int(n) for n in lengths])


def kv_decoder_hidden(
    backbone: Backbone, prefix: KVPrefixBatch, targets: Sequence[Sequence[int]], insert: torch.Tensor | None = None
) -> tuple[torch.Tensor, list[int]]:
    """Final hidden states of `[BOS] (+ insert) + embed(targets_i)` read after row i's key/value prefix.

    Positions continue from the prefix's (`next_positions`); the returned states and offsets
    index the new positions only.
    """
    return prefix.final_states(backbone, targets, insert)


def prefix_hidden(
    backbone: Backbone,
    prefix: SoftPrefixBatch | KVPrefixBatch,
    targets: Sequence[Sequence[int]],
    insert: torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[int]]:
    """The decoder's final hidden states over `targets` read after each row's prefix, of either kind."""
    return prefix.final_states(backbone, targets, insert)


def frozen_pass(
    backbone: Backbone, examples: Sequence[Example], states: bool, teacher: bool, chunk_tokens: int | None = None
) -> tuple[ContextBatch, torch.Tensor | None, list[int]]:
    """The encoder's input batch, the teacher's final states at the scored positions (or None), and chunk counts.

    One frozen pass over `[BOS] + context (+ targets when distilling)` gives both: every
    layer's states of the context for an encoder that reads them (ComprExIT), and, causal as
    the model is, the full-context teacher. Encoders that read only token ids skip it when
    there is nothing to distil. It is `Backbone.frozen_pass`, the pass `Backbone.encode` runs at
    inference, so the compressor reads the same states in training and in use.

    chunk_tokens: contexts longer than this are cut into chunks (`chunks.split_chunks`), each
        read as `[BOS] + chunk` as `Reader` reads a long document; the batch then holds the
        chunks of example 0, then those of example 1, ... (counts[i] of example i), and the
        teacher, which reads the whole context, takes a pass of its own.
    """
    contexts = [list(e.context) for e in examples]
    chunks, counts, index = chunk_layout(contexts, chunk_tokens) if chunk_tokens else (contexts, [1] * len(contexts), None)
    chunked = max(counts) > 1
    batch = ContextBatch(chunks, chunk_index=index if chunked else None)
    together = teacher and not chunked  # one pass gives the states and the teacher
    teacher_pass = None
    if states:
        tails = [list(e.targets) for e in examples] if together else [[]] * len(chunks)
        out = backbone.frozen_pass([c + t for c, t in zip(chunks, tails)], all_layers=True)
        longest = max(len(c) for c in chunks)
        batch.hidden_states = out.layers(longest)
        lengths = torch.tensor([len(c) for c in chunks], device=backbone.device)
        batch.mask = torch.arange(longest, device=backbone.device)[None, :] < lengths[:, None]
        teacher_pass = out if together else None
    teacher_states = None
    if teacher:
        if teacher_pass is None:
            teacher_pass = backbone.frozen_pass([c + list(e.targets) for c, e in zip(contexts, examples)], all_layers=False)
        rows, positions, _ = _scored(examples, [teacher_pass.first + len(c) for c in contexts])
        teacher_states = teacher_pass.last[rows.to(backbone.device), positions.to(backbone.device)]
    return batch, teacher_states, counts


@torch.no_grad()
def encoder_teacher_states(backbone: Backbone, teacher: nn.Module, examples: Sequence[Example]) -> torch.Tensor:
    """Final states, at the scored positions, of the decoder reading a frozen teacher encoder's prefix."""
    contexts = [list(e.context) for e in examples]
    prefix = teacher(ContextBatch.of(backbone, contexts, teacher))
    final, offsets = prefix_hidden(backbone, prefix, [e.targets for e in examples])
    rows, positions, _ = _scored(examples, offsets)
    return final[_to_device(rows, backbone.device), _to_device(positions, backbone.device)]


@torch.no_grad()
def teacher_losses(backbone: Backbone, teacher: nn.Module, examples: Sequence[Example], batch_size: int) -> float:
    """Mean target CE of the decoder reading a teacher encoder's prefix: the gap's better end."""
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        states = encoder_teacher_states(backbone, teacher, batch)
        labels = torch.tensor([e.targets[j] for e in batch for j in range(e.score_from, len(e.targets))], device=states.device)
        ce, _ = token_losses(backbone, states, labels)
        total += float(ce)
        count += len(labels)
    return total / count


def batch_losses(
    backbone: Backbone,
    encoder: nn.Module,
    examples: Sequence[Example],
    weights: LossWeights,
    marker: AutoencodeMarker | None = None,
    ae_tokens: int = 512,
    timer: Timer | None = None,
    teacher_encoder: nn.Module | None = None,
    chunk_tokens: int | None = None,
) -> BatchLosses:
    """Losses of `examples` for the current context encoder (training or validation).

    `encoder` is a `ContextEncoder`, possibly wrapped for data parallelism. The KL teacher is
    the frozen model reading the full context, or, with `teacher_encoder` (a trained, frozen
    encoder such as prompt tuning over the full context), the decoder reading that encoder's prefix.
    chunk_tokens: a context longer than this is compressed chunk by chunk, and its targets are
    read after all its chunks' slots (`frozen_pass`, `chunks.join_chunks`).
    """
    timer = timer or Timer(False)
    device = backbone.device
    reads_states = getattr(encoder, "module", encoder).reads_frozen_states
    timer.mark(None, device)
    full_context_teacher = weights.kl > 0 and teacher_encoder is None
    batch, teacher, counts = frozen_pass(backbone, examples, reads_states, full_context_teacher, chunk_tokens)
    if weights.kl > 0 and teacher_encoder is not None:
        teacher = encoder_teacher_states(backbone, teacher_encoder, examples)
    timer.mark("encoder", device)

    prefix = encoder(batch)
    if max(counts) > 1:
        prefix = join_chunks(prefix, counts)
    timer.mark("compressor", device)

    result = BatchLosses()
    final, offsets = prefix_hidden(backbone, prefix, [e.targets for e in examples])
    rows_s, pos_s, labels_s = (_to_device(t, device) for t in _scored(examples, offsets))
    student = final[rows_s, pos_s]
    ce, kl = token_losses(backbone, student, labels_s, teacher)
    result.sums["ce"], result.tokens["ce"] = ce, len(labels_s)
    if kl is not None:
        result.sums["kl"], result.tokens["kl"] = kl, len(labels_s)
    if weights.ae > 0 and marker is not None:
        ae_examples = [Example(e.context[:ae_tokens], e.context[:ae_tokens], 0) for e in examples]
        final, offsets = prefix_hidden(backbone, prefix, [e.targets for e in ae_examples], insert=marker.vector)
        rows_a, pos_a, labels_a = (_to_device(t, device) for t in _scored(ae_examples, offsets))
        ae, _ = token_losses(backbone, final[rows_a, pos_a], labels_a)
        result.sums["ae"], result.tokens["ae"] = ae, len(labels_a)
    timer.mark("decoder_forward", device)
    return result


def combined_loss(losses: BatchLosses, weights: LossWeights) -> torch.Tensor:
    total = weights.ce * losses.mean("ce")
    if "kl" in losses.sums:
        total = total + weights.kl * losses.mean("kl")
    if "ae" in losses.sums:
        total = total + weights.ae * losses.mean("ae")
    return total


@torch.no_grad()
def reference_losses(backbone: Backbone, examples: Sequence[Example], batch_size: int) -> dict[str, float]:
    """Mean target CE of the frozen model with the full context and with none: the gap's two ends."""
    sums = {"full": 0.0, "none": 0.0}
    count = 0
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        out = backbone.frozen_pass([list(e.context) + list(e.targets) for e in batch], all_layers=False)
        final = out.last
        rows, pos, labels = _scored(batch, [out.first + len(e.context) for e in batch])
        ce, _ = token_losses(backbone, final[rows.to(final.device), pos.to(final.device)], labels.to(final.device))
        sums["full"] += float(ce)
        final, offsets = decoder_hidden(backbone, None, [0] * len(batch), [e.targets for e in batch])
        rows, pos, labels = _scored(batch, offsets)
        ce, _ = token_losses(backbone, final[rows.to(final.device), pos.to(final.device)], labels.to(final.device))
        sums["none"] += float(ce)
        count += len(labels)
    return {"ce_full_context": sums["full"] / count, "ce_no_context": sums["none"] / count, "tokens": count}


def gap_closed(ce_compressed: float, bounds: dict[str, float], upper: str = "ce_full_context") -> float:
    """Share of the no-context -> full-context loss gap that the compressed context closes.

    `upper`: the bound at the gap's better end, e.g. "ce_teacher" for a trained teacher's CE.
    """
    gap = bounds["ce_no_context"] - bounds[upper]
    return (bounds["ce_no_context"] - ce_compressed) / gap if gap > 0 else float("nan")
