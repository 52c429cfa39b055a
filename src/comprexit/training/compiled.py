"""The frozen backbone's training passes with its decoder layers under torch.compile (`TrainConfig.compile`,
`comprexit train --compile`).

A training step runs the frozen model twice: the encoder pass over the contexts
(`Backbone.frozen_pass`, no gradient) and the decoder pass over `[slots; prompt; answer]`
(`Backbone.final_hidden`, gradients flowing back to the slots). Both call `Backbone.body`, the
model without its LM head. `compiled_backbone` gives a view of a backbone whose body runs each
decoder layer compiled; the model, its weights and the caller's backbone stay as they were. The
compressor stays eager: on an H100 at the scale recipe it took 4% of a step, the encoder pass 17%
and the decoder's forward and backward 79% (results/training/2026-11-27-h100x4-scale/throughput,
after_1gpu). The library's other compiled paths do not fit here: `decoding/graph.py` compiles
decode steps and `bench/compression.py` the compressor, both with static shapes and no backward.

Why layers, not the body (regional compilation, PyTorch's recipe of that name): the whole body
compiled made a graph of all 18 layers per kind of pass, ~90 s each on an H100, and a 48-step SFT run
(63 s eager) had not reached its 4th step after 6.5 minutes. One decoder layer is one small graph that
every layer runs: dynamo passes a module's parameters to the graph as inputs (inbuilt nn modules are
inlined, torch >= 2.5), so the layers share it, sliding-window and full attention alike (their masks
differ, not their code). Measured cold on a 2-core CPU, float32 (scripts/results/compile_cost.py,
results/compile/2026-11-28-cpu), a first step's backbone work (encoder pass, decoder pass and its
backward, validation's decoder pass): Gemma-3-270M at 2 x 128 tokens 270 s whole (6 graphs of ~2,400
nodes) against 41 s by layer (5 graphs of 139 nodes), eager 1.9 s; the tiny 3-layer Gemma-3 of the
tests 77 s against 41 s. By layer the cost no longer grows with depth. Warm, the CPU step took 1.49 s
whole, 1.64 s by layer, 1.70 s eager; how much of the GPU gain layers keep is to be measured there.

How the view is built. `layer.compile()` would change the caller's layers in place. Wrappers around the
original layers meet transformers' output hooks: to return every layer's states it hooks, once per model
object, every module of its decoder-layer and attention classes, so hooks that a view's model installed
on shared modules would run twice once the caller's model installed its own; and the attention's hook
runs inside the compiled layer, where dynamo cannot trace the `ContextVar` it reads, so each layer's
graph breaks in three (a prototype on the same CPU: 76 s instead of 48 s for a first Gemma-3-270M step).
So `RegionalBody` runs a copy of the body's module tree, each module a new object over the same
parameters and buffers and without hooks, whose layers' `forward` is one compiled function (an attribute
of the copy's layer, over a code object of its own), and gathers every layer's states itself, as
transformers gives them (the embedding output, each layer's, the last one normed). Embeddings, rotary
tables, masks and the final norm run eagerly, as before compile.

Shapes: training batches are bucketed by length, so the width of both passes changes from batch
to batch (and the batch size in a validation's last micro-batch). `dynamic=True` traces every
input dimension symbolically from the first call, so one graph per kind of pass serves every
width. The default (`dynamic=None`) would first compile each kind of pass for one width and
recompile it at the next; `torch._dynamo.mark_dynamic` would have to mark each input of each call
(hidden states, mask and rotary tables are new tensors per layer call), and it raises where the model
specialises a marked dimension. Parameters stay static either way (dynamo's default).

Kinds of pass, each a graph of the one layer function: with and without gradients (the decoder pass
in training, every other pass and validation), with a mask and without one (transformers builds none
for a batch without padding, so SDPA takes its causal path; the full-attention mask can be absent
where the sliding one is not), rotary tables of one row (positions left to the model: the encoder
pass) or of every row (the decoder's positions), a batch of one row, and a batch whose two sizes
happen to be equal (dynamo's duck sizing). A 4-step NTP run with two validations made 6 (its test in
tests/test_compile.py allows 8), a 4-step SFT run 5. Up to 16 kinds can meet in one run, past dynamo's `recompile_limit` (8
per code object), beyond which a pass would run eagerly with a warning; the view raises the limit to
`RECOMPILE_LIMIT` while it runs.

Mode: torch.compile's default. "reduce-overhead" records a CUDA graph per shape, i.e. per
bucket width, each holding its own memory; the gain sought here is inductor's fusion of the
norms, activations and attention glue of a layer, not launch overhead.
"""

from __future__ import annotations

import copy
import types
from typing import Callable

import torch
from torch import nn

from ..backbone import Backbone
from ..errors import ConfigError

RECOMPILE_LIMIT = 16  # graphs of the one layer function: every kind of pass (module docstring)
# dynamo's name for it (torch < 2.7 called it cache_size_limit)
_LIMIT = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"


def compiled_backbone(backbone: Backbone, backend: str | Callable = "inductor") -> Backbone:
    """A view of `backbone` (same weights, tokenizer and identity) whose two passes run each decoder layer compiled.

    backend: torch.compile's backend (tests count graphs with a backend of their own).
    """
    view = copy.copy(backbone)
    view.body = RegionalBody(backbone.body, backend)
    return view


class RegionalBody:
    """Called as a backbone's body is (`input_ids` or `inputs_embeds`, mask, positions, `output_hidden_states`),
    over a copy of its module tree that shares every parameter and buffer, whose decoder layers run one compiled
    function; embeddings, masks, rotary tables and the final norm run eagerly.

    Every layer's states (`output_hidden_states=True`) are gathered here, not by transformers: its hooks would be
    installed on the attention modules too, inside the compiled layer, where they break the graph.
    """

    def __init__(self, body: nn.Module, backend: str | Callable):
        self.body = _without_hooks(body)
        layers = _decoder_layers(self.body)
        self.compiled = torch.compile(_fresh(type(layers[0]).forward), dynamic=True, backend=backend)
        self._states: list[torch.Tensor] | None = None  # the pass's states while one that keeps them runs
        for layer in layers:  # an attribute of the copy shadows the class's forward; the caller's layers keep theirs
            layer.forward = types.MethodType(self._layer, layer)

    def _layer(self, layer: nn.Module, hidden: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """One decoder layer, compiled. hidden: (batch, width, hidden) in and out."""
        if self._states is not None and not self._states:
            self._states.append(hidden)  # the embedding output, as transformers counts it
        out = self.compiled(layer, hidden, *args, **kwargs)
        if self._states is not None:
            self._states.append(out)
        return out

    def __call__(self, *, output_hidden_states: bool = False, **kwargs):
        """The body's output; with `output_hidden_states`, `hidden_states` as transformers gives them: the
        embedding output, then every layer's, the last one normed (its `last_hidden_state`)."""
        self._states = [] if output_hidden_states else None
        try:
            with torch._dynamo.config.patch(**{_LIMIT: RECOMPILE_LIMIT}):
                out = self.body(output_hidden_states=False, **kwargs)
            states = self._states
        finally:
            self._states = None
        if states is not None:
            out["hidden_states"] = (*states[:-1], out.last_hidden_state)
        return out


def _without_hooks(module: nn.Module) -> nn.Module:
    """The module tree again: each module a new object over the same parameters, buffers and attributes, with
    none of the original's hooks (a hook added to either later stays its own)."""
    clone = module.__class__.__new__(module.__class__)
    no_hooks = {name: value for name, value in nn.Module().__dict__.items() if "hook" in name}
    clone.__dict__ = {**module.__dict__, **no_hooks}
    clone._modules = {name: _without_hooks(child) for name, child in module._modules.items()}
    return clone


def _decoder_layers(body: nn.Module) -> nn.ModuleList:
    """The body's repeated block: the child list of `num_hidden_layers` modules of one class."""
    count = body.config.num_hidden_layers
    for child in body.children():
        if isinstance(child, nn.ModuleList) and len(child) == count and len({type(m) for m in child}) == 1:
            return child
    raise ConfigError(f"compile: {type(body).__name__} has no list of {count} decoder layers of one class to compile; "
                      f"train without --compile")


def _fresh(function: Callable) -> Callable:
    """`function` over a code object of its own: dynamo keeps graphs and counts recompiles per code object, and
    transformers wraps every layer's forward in one function (`GradientCheckpointingLayer`)."""
    return types.FunctionType(function.__code__.replace(), function.__globals__, function.__name__,
                              function.__defaults__, function.__closure__)


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
