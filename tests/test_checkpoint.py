"""Save/load of compressors and compressed documents, and every way a checkpoint can be wrong."""

import json

import pytest
import torch

from comprexit import BackboneIdentity, CheckpointError, ComprExIT, ComprExITConfig, ConfigError
from comprexit.compressor import CONFIG_FILE, WEIGHTS_FILE
from comprexit.document import CompressedDocument

IDENTITY = BackboneIdentity("toy", "llama", hidden_size=32, num_layers=3, vocab_size=100)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = ComprExIT(ComprExITConfig(window=16, slot_scale="embedding"), IDENTITY, embedding_rms=3.0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    model.save_pretrained(tmp_path / "c")
    return model, tmp_path / "c"


def test_round_trip_gives_identical_slots(saved):
    model, folder = saved
    loaded = ComprExIT.from_pretrained(folder, IDENTITY)
    hidden = torch.randn(2, 40, 4, 32)
    mask = torch.ones(2, 40, dtype=torch.bool)
    assert torch.equal(model(hidden, mask).slots, loaded(hidden, mask).slots)
    meta = json.loads((folder / CONFIG_FILE).read_text())
    assert meta["version"] and meta["backbone"]["hidden_size"] == 32 and meta["backbone"]["name"] == "toy"
    assert not list(folder.glob("*.tmp"))


def test_wrong_backbone_names_both(saved):
    _, folder = saved
    other = BackboneIdentity("other-model", "gemma3_text", hidden_size=640, num_layers=18, vocab_size=262144)
    with pytest.raises(CheckpointError, match=r"trained for backbone toy .* not for other-model"):
        ComprExIT.from_pretrained(folder, other)


def test_missing_folder_and_files(tmp_path, saved):
    with pytest.raises(CheckpointError, match="compressor folder not found"):
        ComprExIT.from_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a comprexit compressor folder"):
        ComprExIT.from_pretrained(tmp_path / "empty")
    _, folder = saved
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match="weights file not found"):
        ComprExIT.from_pretrained(folder)


def test_corrupt_weights(saved):
    _, folder = saved
    data = (folder / WEIGHTS_FILE).read_bytes()
    (folder / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        ComprExIT.from_pretrained(folder)


def test_corrupt_and_unknown_config(saved):
    _, folder = saved
    meta = json.loads((folder / CONFIG_FILE).read_text())
    meta["config"]["temperature"] = 2
    (folder / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="unknown ComprExIT config field"):
        ComprExIT.from_pretrained(folder)
    meta["config"] = {"ratio": -4}
    (folder / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="ratio must be"):
        ComprExIT.from_pretrained(folder)
    (folder / CONFIG_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        ComprExIT.from_pretrained(folder)


def test_nan_weights_refused(saved):
    model, folder = saved
    with torch.no_grad():
        model.projector.net[0].weight[0, 0] = float("nan")
    model.save_pretrained(folder)
    with pytest.raises(CheckpointError, match="NaN"):
        ComprExIT.from_pretrained(folder)


def test_weights_of_another_config_refused(saved):
    _, folder = saved
    meta = json.loads((folder / CONFIG_FILE).read_text())
    meta["config"]["gate_dim"] = 8
    (folder / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="has shape"):
        ComprExIT.from_pretrained(folder)


def test_document_round_trip_and_corruption(tmp_path):
    doc = CompressedDocument(
        slots=torch.randn(5, 32), mask=torch.tensor([1, 1, 1, 1, 0]).bool(), backbone=IDENTITY, context_tokens=17, ratio=4
    )
    path = doc.save(tmp_path / "d.ctx")
    back = CompressedDocument.load(path)
    assert torch.equal(back.slots, doc.slots) and torch.equal(back.mask, doc.mask)
    assert back.metadata() == doc.metadata() and back.num_slots == 4
    path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a comprexit compressed document"):
        CompressedDocument.load(path)
