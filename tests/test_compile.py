"""Training with --compile: the frozen passes, each decoder layer compiled, give the eager step, on a tiny Gemma-3;
the graphs they compile are counted: a few, each of one layer.

The tiny model mixes sliding-window and full-attention layers as Gemma-3-270M does, with a window
(16) shorter than every batch here, so both kinds of mask are compiled. Tolerances: float32 (eps
1.2e-7); inductor fuses the norms, softmaxes and matmul epilogues and sums in another order, which
measured up to 7e-9 on the losses (of ~4.6 for CE, ~0.005 for KL, a small difference of large
log-probabilities) and ~3e-7 relative on the step's whole gradient. The tests allow 1e-6 on losses
(relative or absolute: eps times a loss of ~5) and 1e-5 relative on the gradient, 30x or more above
that, and far below what a real fault moves (a wrong mask or a missing layer's states change the
losses in their third digit). Per tensor
the absolute slack is scaled to the largest gradient: some entries are zero in exact arithmetic
(a key bias shifts every attention score alike) and hold only rounding in both runs.
"""

import argparse
import functools
import json

import pytest
import torch

from comprexit.cli import main
from comprexit.cli import train as train_cli
from comprexit.training.compiled import compiled_backbone
from comprexit.training.config import TrainConfig
from comprexit.training import trainer as trainer_module
from comprexit.training.objectives import batch_losses, combined_loss
from comprexit.training.trainer import Trainer

from tiny import save_tiny_backbone, tiny_backbone

KIND = "gemma3-hybrid"


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Compiled graphs are kept per code object across models and tests (transformers' forward wrapper is
    shared by every model), up to dynamo's recompile_limit: each test starts and leaves with none."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def config(tmp_path, corpus, **changes):
    values = dict(
        phase="ntp", data=[str(corpus)], output_dir=str(tmp_path / "run"), lr=3e-3, batch_size=4,
        context_tokens=96, continuation_tokens=32, compressor={"window": 32, "slot_scale": "embedding"},
        validation_permille=150, val_examples=8, eval_every=100, save_every=2, log_every=1, warmup_ratio=0.0,
        kl_weight=1.0, ae_weight=0.5,
    )
    values.update(changes)
    return TrainConfig(**values)


def two_widths(trainer):
    """Two micro-batches of rows of different lengths (right-padded), of two widths: the shortest pieces and
    the longest of those cut short (the full-length pieces are all alike)."""
    examples = sorted(trainer.split.train, key=lambda e: e.length)
    cut = [e for e in examples if e.length < examples[-1].length]
    return cut[:4], cut[-4:]


def step(trainer, backbone, examples):
    """The losses of one micro-batch (every objective: CE, KL to the full context, autoencoding) and
    the gradient on every trainable tensor."""
    torch.manual_seed(0)
    losses = batch_losses(backbone, trainer.encoder, examples, trainer.weights, trainer.marker,
                          trainer.config.ae_tokens, chunk_tokens=trainer.config.context_tokens)
    combined_loss(losses, trainer.weights).backward()
    trained = trainer._trainable_state()
    grads = {name: p.grad.clone() for name, p in trained.items()}
    for p in trained.values():
        p.grad = None
    return {k: float(losses.mean(k)) for k in losses.sums}, grads


def test_a_compiled_step_gives_the_eager_losses_and_gradients(tmp_path, corpus):
    backbone = tiny_backbone(KIND)
    trainer = Trainer(config(tmp_path, corpus), backbone=backbone)
    compiled = compiled_backbone(backbone)
    for examples in two_widths(trainer):  # the second width runs the graphs compiled for the first
        losses, grads = step(trainer, backbone, examples)
        losses_c, grads_c = step(trainer, compiled, examples)
        assert losses_c == pytest.approx(losses, rel=1e-6, abs=1e-6)
        flat, flat_c = (torch.cat([g.flatten() for g in gs.values()]) for gs in (grads, grads_c))
        assert float((flat_c - flat).norm() / flat.norm()) < 1e-5
        scale = float(flat.abs().max())
        for name in grads:
            torch.testing.assert_close(grads_c[name], grads[name], rtol=1e-4, atol=1e-5 * scale, msg=name)


class Graphs:
    """A torch.compile backend of our own that builds no kernels: it records each graph dynamo hands it, as the
    number of parameters it reads (one decoder layer's, where only layers are compiled) and its grad mode."""

    def __init__(self):
        self.graphs: list[tuple[int, bool]] = []

    def __call__(self, graph_module, example_inputs):
        parameters = sum(isinstance(x, torch.nn.Parameter) for x in example_inputs)
        self.graphs.append((parameters, torch.is_grad_enabled()))
        return graph_module.forward

    def __len__(self):
        return len(self.graphs)


def layer_parameters(backbone):
    return len(list(backbone.body.layers[0].parameters()))


def test_both_passes_compile_once_for_every_width(tmp_path, corpus):
    """Graphs of one decoder layer each: the encoder pass and the decoder pass each compile, and a batch of another
    width compiles nothing new (dynamic shapes)."""
    graphs = Graphs()
    backbone = tiny_backbone(KIND)
    trainer = Trainer(config(tmp_path, corpus), backbone=backbone)
    compiled = compiled_backbone(backbone, backend=graphs)
    short, longer = two_widths(trainer)
    with torch.no_grad():
        compiled.frozen_pass([list(e.context) for e in short], all_layers=True)
    encoder = len(graphs)
    step(trainer, compiled, short)
    assert encoder > 0 and len(graphs) > encoder  # the decoder pass compiled too
    compiled_first = len(graphs)
    step(trainer, compiled, longer)
    assert len(graphs) == compiled_first
    assert {parameters for parameters, _ in graphs.graphs} == {layer_parameters(backbone)}
    assert backbone.body is backbone.model.base_model  # the backbone passed in stays eager


RUN_GRAPHS = 8  # measured: 6 (a batch of one position row or of one per row, with gradients or without, with a mask or without)


def test_a_short_run_with_validation_compiles_a_few_graphs_of_one_layer(tmp_path, corpus, monkeypatch):
    """Four steps and two validations compile at most RUN_GRAPHS graphs, each of one decoder layer, shared by the
    three layers (sliding-window and full attention alike); the whole body compiled made graphs of every layer
    (~2,400 nodes each for Gemma-3-270M, and 90 s each on an H100). The backbone first runs eagerly with every
    layer's states, so transformers' output hooks are on its modules: the compiled layers must not trace them (they
    break each layer's graph in three)."""
    graphs = Graphs()
    backbone = tiny_backbone(KIND)
    backbone.frozen_pass([[5, 6, 7]], all_layers=True)  # installs transformers' hooks on the model's modules
    monkeypatch.setattr(trainer_module, "compiled_backbone", functools.partial(compiled_backbone, backend=graphs))
    Trainer(config(tmp_path, corpus, max_steps=4, eval_every=2, compile=True), backbone=backbone).train()
    assert 0 < len(graphs) <= RUN_GRAPHS, graphs.graphs
    assert {parameters for parameters, _ in graphs.graphs} == {layer_parameters(backbone)}
    assert {grad for _, grad in graphs.graphs} == {True, False}  # the decoder's pass with gradients, the others without


def test_the_view_shares_the_weights_and_leaves_the_backbone_as_it_was():
    backbone = tiny_backbone(KIND)
    compiled = compiled_backbone(backbone, backend=Graphs())
    view_layers, layers = compiled.body.body.layers, backbone.body.layers
    assert all(a is not b for a, b in zip(view_layers, layers))
    assert all(a is b for a, b in zip(compiled.body.body.parameters(), backbone.body.parameters()))
    assert all("forward" not in layer.__dict__ for layer in layers)
    ids = [[5, 6, 7, 8], [9, 10]]
    with torch.no_grad():
        eager, view = backbone.frozen_pass(ids, all_layers=True), compiled.frozen_pass(ids, all_layers=True)
    assert len(view.hidden_states) == len(eager.hidden_states) == backbone.num_hidden_states
    for state, expected in zip(view.hidden_states, eager.hidden_states):
        torch.testing.assert_close(state, expected)
    assert view.hidden_states[-1] is view.last  # the last one normed, as transformers gives it


def test_kinds_of_pass_past_dynamos_default_limit_still_compile():
    """Grad mode, mask or none, positions given per row or not and a batch of one make up to 16 graphs of the one
    layer function; dynamo's default recompile limit (8) would run the ninth kind eagerly."""
    graphs = Graphs()
    backbone = tiny_backbone(KIND)
    compiled = compiled_backbone(backbone, backend=graphs)
    assert torch._dynamo.config.recompile_limit == 8
    for grad in (False, True):
        for rows in (1, 3):
            for padded in (False, True):
                for positions in (False, True):
                    embeds = backbone.embed(torch.randint(4, 90, (rows, 40)))
                    mask = torch.ones(rows, 40, dtype=torch.long)
                    mask[0, 30:] = 0 if padded else 1
                    given = {"position_ids": torch.arange(40).expand(rows, -1)} if positions else {}
                    with torch.set_grad_enabled(grad):
                        compiled.body(inputs_embeds=embeds, attention_mask=mask if padded else None, **given)
    assert len(graphs) > 8
    assert torch._dynamo.config.recompile_limit == 8  # raised only while the view runs


def train_losses(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if r["kind"] == "train"}


def test_a_compiled_run_records_the_option_resumes_and_trains_as_the_eager_one(tmp_path, corpus):
    backbone = tiny_backbone(KIND)
    Trainer(config(tmp_path / "eager", corpus, max_steps=4), backbone=backbone).train()
    compiled = config(tmp_path / "compiled", corpus, max_steps=4, compile=True)
    first = Trainer(compiled, backbone=backbone)
    assert first.backbone.body is not backbone.body  # its passes run compiled
    assert first.train(stop_at_step=2)["status"] == "paused"
    Trainer(compiled, backbone=backbone, resume=True).train()
    saved = json.loads((tmp_path / "compiled" / "run" / "train_config.json").read_text())
    assert saved["compile"] is True
    eager, resumed = train_losses(tmp_path / "eager" / "run"), train_losses(tmp_path / "compiled" / "run")
    assert sorted(resumed) == [1, 2, 3, 4]
    # Adam turns rounding-level gradient differences into small weight differences: 1e-5, not 1e-6
    assert all(resumed[s] == pytest.approx(eager[s], rel=1e-5) for s in eager)
    assert backbone.body is backbone.model.base_model


def test_compile_is_a_session_setting_of_the_command_line(tmp_path):
    """--compile maps to the config; a resumed run may turn it on or off (it changes how, not what)."""
    parser = argparse.ArgumentParser()
    train_cli.add_parser(parser.add_subparsers())
    common = ["train", "ntp", "--data", "corpus.jsonl", "-o", str(tmp_path)]
    first = train_cli.build_config(parser.parse_args(common))
    assert first.compile is False
    (tmp_path / "train_config.json").write_text(json.dumps(first.to_dict()))
    assert train_cli.build_config(parser.parse_args(common + ["--resume", "--compile"])).compile is True
    assert train_cli.build_config(parser.parse_args(common + ["--compile"])).compile is True
    with pytest.raises(ValueError, match="compile must be true or false"):
        TrainConfig(data=["corpus.jsonl"], compile="yes")


def test_compile_is_refused_in_one_line_where_no_kernels_can_be_built(tmp_path, corpus, capsys):
    """No C++ compiler (inductor pointed at one that does not exist): exit 2, one line, before the backbone loads."""
    folder = save_tiny_backbone(KIND, tmp_path / "backbone")
    capsys.readouterr()  # the save's progress bar
    with torch._inductor.config.patch({"cpp.cxx": ("no-such-c++-compiler",)}):
        code = main(["train", "ntp", "--data", str(corpus), "-o", str(tmp_path / "run"), "--backbone", str(folder),
                     "--compile", "--max-steps", "1"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in err and len(lines) == 1, err
    assert "torch.compile cannot build kernels on cpu" in lines[0] and "no-such-c++-compiler" in lines[0]
    assert not (tmp_path / "run" / "train_config.json").exists()
