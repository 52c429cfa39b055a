"""Training with --compile: the frozen passes under torch.compile give the eager step, on a tiny Gemma-3.

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
import json

import pytest
import torch

from comprexit.cli import main
from comprexit.cli import train as train_cli
from comprexit.training.compiled import compiled_backbone
from comprexit.training.config import TrainConfig
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


def test_both_passes_compile_once_for_every_width(tmp_path, corpus):
    """Graphs counted by a backend of our own (no kernels built): the encoder pass and the decoder pass
    each compile, and a batch of another width compiles nothing new (dynamic shapes)."""
    graphs = []

    def counting(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    backbone = tiny_backbone(KIND)
    trainer = Trainer(config(tmp_path, corpus), backbone=backbone)
    compiled = compiled_backbone(backbone, backend=counting)
    short, longer = two_widths(trainer)
    with torch.no_grad():
        compiled.frozen_pass([list(e.context) for e in short], all_layers=True)
    encoder = len(graphs)
    step(trainer, compiled, short)
    assert encoder > 0 and len(graphs) > encoder  # the decoder pass compiled too
    compiled_first = len(graphs)
    step(trainer, compiled, longer)
    assert len(graphs) == compiled_first
    assert backbone.body is backbone.model.base_model  # the backbone passed in stays eager


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
