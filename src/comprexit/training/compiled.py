"""The frozen backbone's training passes under torch.compile (`TrainConfig.compile`, `comprexit train --compile`).

A training step runs the frozen model twice: the encoder pass over the contexts
(`Backbone.frozen_pass`, no gradient) and the decoder pass over `[slots; prompt; answer]`
(`Backbone.final_hidden`, gradients flowing back to the slots). Both call `Backbone.body`, the
model without its LM head. `compiled_backbone` gives a view of a backbone whose body runs under
torch.compile; the model, its weights and the caller's backbone stay as they were. The
compressor stays eager: on an H100 at the scale recipe it took 4% of a step, the encoder pass 17%
and the decoder's forward and backward 79% (results/training/2026-11-27-h100x4-scale/throughput,
after_1gpu). The library's other compiled paths do not fit here: `decoding/graph.py` compiles
decode steps and `bench/compression.py` the compressor, both with static shapes and no backward.

Shapes: training batches are bucketed by length, so the width of both passes changes from batch
to batch (and the batch size in a validation's last micro-batch). `dynamic=True` traces every
input dimension symbolically from the first call, so one graph per kind of pass serves every
width. The default (`dynamic=None`) would first compile each kind of pass for one width and
recompile it at the next; `torch._dynamo.mark_dynamic` would have to mark each input of each call
(ids or embeddings, mask and positions are new tensors per batch), and it raises where the model
specialises a marked dimension. Parameters stay static either way (dynamo's default).

Kinds of pass, each a graph of its own: the encoder pass with a mask and without one (a batch
without padding), a pass without every layer's states (the reference losses), the decoder pass with and
without gradients (validation), a batch of one row, and a batch whose two sizes happen to be
equal (dynamo's duck sizing). A short SFT run with validation made six of transformers' forward
wrapper, under dynamo's `recompile_limit` (8 per code object, shared by every model in a process);
past it a pass runs eagerly, with a warning.

Mode: torch.compile's default. "reduce-overhead" records a CUDA graph per shape, i.e. per
bucket width, each holding its own memory; the gain sought here is inductor's fusion of the
norms, activations and attention glue of a pass, not launch overhead. One limit, from
transformers: under compile its masks are always materialised (torch < 2.14 reads every traced
call as an export), so SDPA never takes its mask-free causal path there; eager runs take it
for batches without padding.
"""

from __future__ import annotations

import copy
import types
from typing import Callable

import torch

from ..backbone import Backbone
from ..errors import ConfigError


def compiled_backbone(backbone: Backbone, backend: str | Callable = "inductor") -> Backbone:
    """A view of `backbone` (same model, tokenizer and identity) whose two passes run its body compiled.

    backend: torch.compile's backend (tests count graphs with a backend of their own).
    """
    view = copy.copy(backbone)
    view.body = torch.compile(backbone.body, dynamic=True, backend=backend)
    return view


def check_compiler(device: torch.device) -> None:
    """Refuse in one line, before anything loads, where torch.compile cannot build kernels for `device`.

    Inductor needs a C++ compiler for CPU kernels and Triton for GPU kernels; without them it fails
    only at the first step, deep in a traceback. So one small function is compiled and run on the
    device here, with inductor's graph cache off, so that a kernel built earlier cannot hide a missing
    compiler (a few seconds).
    """

    def probe(x):
        return torch.sin(x) * 2 + 1

    from torch._inductor import config as inductor  # only here: importing inductor takes a while

    # a fresh code object: dynamo keeps compiled graphs per code object, and would reuse an earlier probe's
    fresh = types.FunctionType(probe.__code__.replace(), probe.__globals__, "compile_probe")
    with inductor.patch(fx_graph_cache=False):
        try:
            torch.compile(fresh, backend="inductor", dynamic=False)(torch.ones(8, device=device))
        except Exception as error:  # noqa: BLE001 - any failure means the option cannot run here; named, not hidden
            reason = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
            raise ConfigError(f"compile: torch.compile cannot build kernels on {device} here "
                              f"({type(error).__name__}: {reason}); train without --compile") from error
