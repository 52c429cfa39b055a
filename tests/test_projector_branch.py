"""A wider projector, a design lever beyond the paper: a residual branch Linear(H, W) -> GELU -> Linear(W, H)
beside the projector, its output added to the projector's before any slot scaling.

Off (the default) nothing changes, bit for bit; on, its output layer starts at zero, so the slots are
those of the compressor without it until it trains, also when it is added over trained weights with
`--init`; it trains, saves and loads with the weights, and is counted in the trainable parameters.
"""

import json
from dataclasses import replace

import pytest
import torch

from comprexit import ComprExIT, ComprExITConfig, ConfigError
from comprexit.methods.comprexit import ComprExITEncoder
from comprexit.saving import CONFIG_FILE
from comprexit.training.data import Example
from comprexit.training.objectives import LossWeights, batch_losses
from comprexit.training.trainer import Trainer
from comprexit.weights import SHIPPED, WEIGHTS_DIR

from tiny import cli, lever_sft_config, save_tiny_backbone, saved_without_field, tiny_backbone

W = 48
GEMMA_PARAMETERS = 268_098_176  # Gemma-3-270M, as `comprexit info` reports it


def ids(count, first=5):
    """`count` token ids of the tiny vocabulary."""
    return tuple(first + i % 80 for i in range(count))


def compressor(backbone, seed=0, **fields):
    """A compressor whose sender capacity is not uniform, so that every slot differs."""
    torch.manual_seed(seed)
    model = ComprExIT.for_backbone(backbone, ComprExITConfig(window=32, **fields))
    torch.manual_seed(seed + 1)  # the same capacity with or without the branch, which draws numbers of its own
    with torch.no_grad():
        model.width.capacity.weight.normal_(0, 0.3)
    return model


CONTEXTS = (ids(60), ids(33, 9))


def slots_of(model, backbone):
    """(2, slots, hidden) the slots of two contexts, one padded."""
    with torch.no_grad():
        return model.eval().compress(backbone.encode([list(c) for c in CONTEXTS])).slots


def as_if_trained(branch):
    with torch.no_grad():
        for parameter in branch.parameters():
            parameter.normal_(0, 0.05)


# ------------------------------------------------------------------ off: nothing changes
def test_off_the_weights_slots_and_count_are_those_of_a_config_without_the_field(tiny, tmp_path):
    plain = compressor(tiny)
    saved = saved_without_field(plain, tmp_path / "w", "projector_branch")
    loaded = ComprExIT.from_pretrained(tmp_path / "w", tiny)
    assert loaded.projector_branch is None and loaded.config.projector_branch == 0
    assert list(loaded.state_dict()) == list(plain.state_dict())
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in plain.state_dict().items())
    assert loaded.parameter_count() == plain.parameter_count() == saved["parameters"]
    assert torch.equal(slots_of(loaded, tiny), slots_of(plain, tiny))


# ------------------------------------------------------------------ on: silent at the start, then trained
@pytest.mark.parametrize("fields", [{}, {"embedding_skip": True, "slot_scale": "embedding"}])
def test_on_the_slots_start_unchanged_and_the_other_parameters_draw_the_same_numbers(tiny, fields):
    off, on = compressor(tiny, **fields), compressor(tiny, projector_branch=W, **fields)
    state = on.state_dict()
    new = {f"projector_branch.net.{layer}.{kind}" for layer in (0, 2) for kind in ("weight", "bias")}
    assert set(state) - set(off.state_dict()) == new
    assert all(torch.equal(state[name], tensor) for name, tensor in off.state_dict().items())
    hidden = tiny.hidden_size
    assert on.parameter_count() == off.parameter_count() + 2 * hidden * W + hidden + W
    assert on.projector_branch.net[0].weight.abs().sum() > 0 and not on.projector_branch.net[2].weight.any()
    slots = slots_of(on, tiny)
    assert slots.shape == slots_of(off, tiny).shape and torch.isfinite(slots).all()
    assert torch.equal(slots, slots_of(off, tiny))  # the zero output layer adds exactly nothing
    as_if_trained(on.projector_branch)
    moved = slots_of(on, tiny)
    assert moved.shape == slots.shape and torch.isfinite(moved).all() and not torch.equal(moved, slots)


@pytest.mark.parametrize("value", [-1, 1.5, True, "2048"])
def test_a_bad_branch_width_is_refused_naming_it(value):
    with pytest.raises(ConfigError, match=f"projector_branch must be an integer >= 0, got {value!r}") as refused:
        ComprExITConfig(projector_branch=value)
    assert "\n" not in str(refused.value)


def test_training_moves_the_branch():
    backbone = tiny_backbone("llama")
    encoder = ComprExITEncoder(compressor(backbone, projector_branch=W))
    branch = encoder.compressor.projector_branch
    examples = [Example(ids(150), (8, 9, 10)), Example(ids(60, 7), (11, 12))]
    optimizer = torch.optim.SGD(encoder.parameters(), lr=0.5)
    start = {name: p.detach().clone() for name, p in branch.named_parameters()}
    for step in range(2):  # the zero output layer first learns, then passes a gradient to the input layer
        optimizer.zero_grad()
        batch_losses(backbone, encoder, examples, LossWeights(ce=1.0, kl=0.0)).mean("ce").backward()
        assert branch.net[2].weight.grad.abs().sum() > 0
        assert (branch.net[0].weight.grad.abs().sum() > 0) == (step > 0)
        optimizer.step()
    assert all(not torch.equal(p, start[name]) for name, p in branch.named_parameters())


# ------------------------------------------------------------------ saving
def test_a_saved_branch_loads_back_with_the_same_slots(tmp_path):
    backbone = tiny_backbone("llama")
    model = compressor(backbone, projector_branch=W)
    as_if_trained(model.projector_branch)
    model.save_pretrained(tmp_path / "w")
    meta = json.loads((tmp_path / "w" / CONFIG_FILE).read_text())
    assert meta["config"]["projector_branch"] == W and meta["parameters"] == model.parameter_count()
    loaded = ComprExIT.from_pretrained(tmp_path / "w", backbone)
    assert loaded.config == model.config
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    assert torch.equal(slots_of(loaded, backbone), slots_of(model, backbone))


def test_the_shipped_weights_carry_the_branch_at_under_two_percent_of_gemma_and_it_starts_at_their_slots(tmp_path):
    """The shipped weights were trained with a 2048-wide branch (results/training/2026-12-07-eighth): it adds
    2,624,128 parameters, the whole compressor stays under 2% of Gemma-3-270M, and added afresh over the
    shipped weights without theirs it leaves the slots as they were, at the real model's shapes."""
    folder = WEIGHTS_DIR / SHIPPED["gemma-3-270m"]
    shipped = ComprExIT.from_pretrained(folder)
    assert shipped.config.projector_branch == 2048
    assert shipped.parameter_count() == json.loads((folder / CONFIG_FILE).read_text())["parameters"]
    narrow = ComprExIT(replace(shipped.config, projector_branch=0), shipped.identity, shipped.embedding_rms)
    narrow.load_state_dict({k: v for k, v in shipped.state_dict().items() if not k.startswith("projector_branch.")})
    assert shipped.parameter_count() - narrow.parameter_count() == 2 * 640 * 2048 + 640 + 2048  # 2,624,128
    assert shipped.parameter_count() < 0.02 * GEMMA_PARAMETERS
    wide = ComprExIT.from_pretrained(narrow.save_pretrained(tmp_path / "narrow"), added={"projector_branch": 2048})
    torch.manual_seed(0)  # the real model's shape: 19 hidden states of width 640; RMS-normalised before mixing
    states, mask = torch.randn(2, 40, 19, 640), torch.ones(2, 40, dtype=torch.bool)
    mask[1, 25:] = False
    with torch.no_grad():
        assert torch.equal(wide.eval()(states, mask).slots, narrow.eval()(states, mask).slots)


# ------------------------------------------------------------------ --init: added over trained weights
def sft_config(tmp_path, qa_file, init, **changes):
    return lever_sft_config(tmp_path, qa_file, init, **{"max_steps": 2, **changes})


def test_added_over_trained_weights_the_slots_start_identical_and_the_branch_trains(tmp_path, qa_file):
    backbone = tiny_backbone("llama")
    trained = compressor(backbone, embedding_skip=True)
    with torch.no_grad():  # as if trained: the skip's zero output layer would hide the projector
        trained.projector.net[2].weight.normal_(0, 0.05)
    trained.save_pretrained(tmp_path / "ntp")
    config = sft_config(tmp_path, qa_file, tmp_path / "ntp", compressor={"projector_branch": W})
    trainer = Trainer(config, backbone=backbone)
    started = trainer.unwrapped.compressor
    assert started.config.embedding_skip and started.config.projector_branch == W  # the init's config, plus the lever
    assert all(torch.equal(started.state_dict()[name], t) for name, t in trained.state_dict().items())
    assert torch.equal(slots_of(started, backbone), slots_of(trained, backbone))
    started.train()
    hidden = backbone.hidden_size
    assert trainer.trainable_parameters == trained.parameter_count() + 2 * hidden * W + hidden + W
    assert trainer.train()["status"] == "finished"
    final = ComprExIT.from_pretrained(tmp_path / "sft" / "final", backbone)
    assert final.config.projector_branch == W and final.projector_branch.net[2].weight.any()

    wide = ComprExITConfig(window=32, projector_branch=W)
    assert wide.with_additions({"projector_branch": W}) == wide  # already on at that value: nothing new
    with pytest.raises(ConfigError, match=f"already have projector_branch={W}; cannot change to projector_branch=8"):
        wide.with_additions({"projector_branch": 8})


def test_the_command_line_adds_the_branch_over_init_reports_it_and_refuses_a_bad_width_in_one_line(
        tmp_path, qa_file, capsys):
    backbone = save_tiny_backbone("llama", tmp_path / "backbone")
    compressor(tiny_backbone("llama")).save_pretrained(tmp_path / "ntp")
    capsys.readouterr()  # what saving the backbone printed
    train = ["train", "sft", "--backbone", backbone, "--init", tmp_path / "ntp", "--data", qa_file, "--max-steps", "1",
             "--batch-size", "4", "--validation-permille", "200", "--val-questions", "4", "--eval-every", "100"]
    for bad in ('{"projector_branch": -1}', '{"projector_branch": 1.5}'):
        code, _, err = cli(capsys, *train, "--compressor-config", bad, "-o", tmp_path / "refused")
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
        assert "projector_branch must be an integer >= 0" in lines[0], err
        assert not (tmp_path / "refused").exists()
    added = json.dumps({"projector_branch": W})
    code, _, err = cli(capsys, *train, "--compressor-config", added, "-o", tmp_path / "sft")
    assert code == 0, err
    meta = json.loads((tmp_path / "sft" / "final" / CONFIG_FILE).read_text())
    assert meta["config"]["projector_branch"] == W and meta["config"]["window"] == 32
    code, out, err = cli(capsys, "info", "--json", "--backbone", backbone, "--compressor", tmp_path / "sft" / "final",
                         "--device", "cpu")
    assert code == 0, err
    report = json.loads(out)
    assert report["compressor_config"]["projector_branch"] == W
    assert report["compressor_parameters"] == meta["parameters"] == ComprExIT.from_pretrained(
        tmp_path / "sft" / "final").parameter_count()
