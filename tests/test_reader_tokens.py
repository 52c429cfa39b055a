"""Reader tokens, a design lever beyond the paper: P trained vectors read once per document,
`[BOS] + reader tokens + slots + prompt`.

Off (the default) nothing changes, bit for bit; on, they lead every document's prefix once,
however many chunks it has, train, save and load with the weights and with a compressed
document, may be added over trained weights with `--init`, and are never counted as slots.
"""

import json

import pytest
import torch

from comprexit import ComprExIT, ComprExITConfig, ConfigError
from comprexit.chunks import join_chunks, split_chunks
from comprexit.document import CompressedDocument
from comprexit.methods.comprexit import ComprExITEncoder, ComprExITMethod
from comprexit.methods.prompt_tuning import PromptTuningConfig, PromptTuningEncoder
from comprexit.reader import Reader
from comprexit.reporting import explain_text
from comprexit.saving import CONFIG_FILE
from comprexit.training.data import Example
from comprexit.training.objectives import LossWeights, batch_losses, frozen_pass
from comprexit.training.trainer import Trainer

from tiny import cli, lever_sft_config, save_tiny_backbone, saved_without_field, tiny_backbone

CHUNK = 96
P = 5


def ids(count, first=5):
    """`count` token ids of the tiny vocabulary."""
    return tuple(first + i % 80 for i in range(count))


def compressor(backbone, seed=0, **fields):
    """A compressor whose sender capacity is not uniform, so that every slot differs."""
    torch.manual_seed(seed)
    model = ComprExIT.for_backbone(backbone, ComprExITConfig(window=32, **fields))
    with torch.no_grad():
        model.width.capacity.weight.normal_(0, 0.3)
    return model


# ------------------------------------------------------------------ off: nothing changes
def test_off_the_weights_slots_and_prefix_are_those_of_a_config_without_the_field(tiny, tmp_path):
    plain = compressor(tiny)
    saved_without_field(plain, tmp_path / "w", "reader_tokens")
    loaded = ComprExIT.from_pretrained(tmp_path / "w", tiny)
    assert loaded.reader_tokens is None and loaded.config.reader_tokens == 0
    assert loaded.state_dict().keys() == plain.state_dict().keys()
    assert loaded.parameter_count() == plain.parameter_count()

    examples = [Example(ids(150), (8, 9)), Example(ids(60, 7), (11,))]
    with torch.no_grad():
        for chunk_tokens in (None, CHUNK):
            batch, _, counts = frozen_pass(tiny, examples, states=True, teacher=False, chunk_tokens=chunk_tokens)
            a, b = ComprExITEncoder(plain)(batch), ComprExITEncoder(loaded)(batch)
            if max(counts) > 1:
                a, b = join_chunks(a, counts), join_chunks(b, counts)
            assert a.lead is None and b.lead is None and a.lengths == b.lengths and torch.equal(a.embeds, b.embeds)
            targets = [e.targets for e in examples]
            assert torch.equal(a.inputs(tiny, targets).embeds(), b.inputs(tiny, targets).embeds())


def test_on_the_other_parameters_draw_the_same_numbers_and_the_new_ones_are_counted(tiny):
    off, on = compressor(tiny), compressor(tiny, reader_tokens=P)
    state = on.state_dict()
    assert set(state) - set(off.state_dict()) == {"reader_tokens"}
    assert all(torch.equal(state[name], tensor) for name, tensor in off.state_dict().items())
    assert on.parameter_count() == off.parameter_count() + P * tiny.hidden_size


def test_reader_tokens_start_as_prompt_tunings_tokens(tiny):
    tuned = PromptTuningEncoder.for_backbone(tiny, PromptTuningConfig(virtual_tokens=P))
    torch.testing.assert_close(compressor(tiny, reader_tokens=P).reader_tokens, tuned.tokens, rtol=0, atol=0)


@pytest.mark.parametrize("value", [-1, 1.5, True])
def test_a_bad_reader_token_count_is_refused_naming_it(value):
    with pytest.raises(ConfigError, match=f"reader_tokens must be an integer >= 0, got {value!r}"):
        ComprExITConfig(reader_tokens=value)


# ------------------------------------------------------------------ on: once per document, at the front
def test_one_chunk_prefix_is_the_reader_tokens_then_the_slots(tiny):
    model = compressor(tiny, reader_tokens=P).eval()
    contexts = [list(ids(60)), list(ids(33, 9))]
    with torch.no_grad():
        slots = model.compress(tiny.encode(contexts))
        rows = ComprExITMethod(tiny, compressor=model).prepare(contexts).rows  # what evaluation reads
    for row, context in enumerate(contexts):
        n = model.num_slots(len(context))
        assert len(rows[row]) == P + n
        assert torch.equal(rows[row].embeds[:P], model.reader_tokens)
        assert torch.equal(rows[row].embeds[P:], slots.slots[row, :n])


def test_a_two_chunk_document_reads_the_reader_tokens_once_in_training_and_from_the_reader(tiny):
    model = compressor(tiny, reader_tokens=P).eval()
    examples = [Example(ids(150), (8, 9, 10)), Example(ids(60, 7), (11, 12))]
    with torch.no_grad():
        batch, _, counts = frozen_pass(tiny, examples, states=True, teacher=False, chunk_tokens=CHUNK)
        prefix = join_chunks(ComprExITEncoder(model)(batch), counts)
        slots = [model.num_slots(96) + model.num_slots(54), model.num_slots(60)]
        assert counts == [2, 1] and prefix.lengths == slots  # the lengths count slots only
        inputs = prefix.inputs(tiny, [e.targets for e in examples])
        embeds = inputs.embeds()
        assert inputs.attention_mask.sum(1).tolist() == [1 + P + slots[0] + 3, 1 + P + slots[1] + 2]
        assert inputs.starts[-1] == [1 + P + slots[0], 1 + P + slots[1]]
        for row in range(2):  # [BOS], then the reader tokens once, then every chunk's slots
            torch.testing.assert_close(embeds[row, 1 : 1 + P], model.reader_tokens, rtol=0, atol=0)
            torch.testing.assert_close(embeds[row, 1 + P : 1 + P + slots[row]], prefix.embeds[row, : slots[row]],
                                       rtol=0, atol=0)
    document = Reader(tiny, model, chunk_tokens=CHUNK).compress_ids(list(ids(150)))
    assert document.num_slots == slots[0] and f"150 tokens -> {slots[0]} slots" in repr(document)
    assert document.prefix_positions == P + slots[0]
    torch.testing.assert_close(document.prefix(), torch.cat([model.reader_tokens, prefix.embeds[0, : slots[0]]]),
                               rtol=1e-4, atol=1e-5)


def test_training_moves_the_reader_tokens():
    backbone = tiny_backbone("gemma3")
    encoder = ComprExITEncoder(compressor(backbone, reader_tokens=P))
    examples = [Example(ids(150), (8, 9, 10)), Example(ids(60, 7), (11, 12))]
    for chunk_tokens in (None, CHUNK):
        encoder.zero_grad()
        losses = batch_losses(backbone, encoder, examples, LossWeights(ce=1.0, kl=0.5), chunk_tokens=chunk_tokens)
        losses.mean("ce").backward()
        assert encoder.compressor.reader_tokens.grad.abs().sum() > 0


# ------------------------------------------------------------------ saving: weights and documents
def test_reader_tokens_are_saved_and_loaded_with_the_weights_and_with_a_document(tmp_path):
    backbone = tiny_backbone("llama")
    model = compressor(backbone, reader_tokens=P)
    with torch.no_grad():
        model.reader_tokens.normal_()  # as if trained
    model.save_pretrained(tmp_path / "w")
    meta = json.loads((tmp_path / "w" / CONFIG_FILE).read_text())
    assert meta["config"]["reader_tokens"] == P and meta["parameters"] == model.parameter_count()
    loaded = ComprExIT.from_pretrained(tmp_path / "w", backbone)
    assert torch.equal(loaded.reader_tokens, model.reader_tokens)

    reader = Reader(backbone, loaded, chunk_tokens=CHUNK)
    document = reader.compress_ids(list(ids(150)))
    document.save(tmp_path / "doc.ctx")
    again = CompressedDocument.load(tmp_path / "doc.ctx")
    assert torch.equal(again.reader_tokens, model.reader_tokens) and torch.equal(again.prefix(), document.prefix())
    question = ["Who wrote it?"]
    cached = reader.ask(again, question, max_new_tokens=4)
    assert cached == reader.ask(document, question, max_new_tokens=4, use_cache=False)
    plain = Reader(backbone, compressor(backbone), chunk_tokens=CHUNK).compress_ids(list(ids(150)))
    plain.save(tmp_path / "plain.ctx")  # a document without reader tokens keeps the format it had
    assert CompressedDocument.load(tmp_path / "plain.ctx").reader_tokens is None


# ------------------------------------------------------------------ --init: added over trained weights


def test_added_over_trained_weights_every_loaded_tensor_is_kept_and_the_new_ones_train(tmp_path, qa_file):
    backbone = tiny_backbone("llama")  # (the tiny Gemma's default draw reads every SFT input alike: no gradient)
    trained = compressor(backbone, embedding_skip=True)
    trained.save_pretrained(tmp_path / "ntp")
    cfg = lever_sft_config(tmp_path, qa_file, tmp_path / "ntp", compressor={"reader_tokens": P, "chunk_positions": 2})
    trainer = Trainer(cfg, backbone=backbone)
    started = trainer.unwrapped.compressor
    assert started.config.embedding_skip and started.config.reader_tokens == P  # the init's config, plus the lever
    state = started.state_dict()
    assert set(state) - set(trained.state_dict()) == {"reader_tokens", "chunk_position.weight"}
    assert all(torch.equal(state[name], tensor) for name, tensor in trained.state_dict().items())
    assert torch.equal(started.reader_tokens, compressor(backbone, reader_tokens=P).reader_tokens)
    assert not started.chunk_position.weight.any()
    fresh = started.reader_tokens.detach().clone()
    assert trainer.train()["status"] == "finished"
    final = ComprExIT.from_pretrained(tmp_path / "sft" / "final", backbone)
    assert final.config.reader_tokens == P and final.config.chunk_positions == 2
    assert not torch.equal(final.reader_tokens, fresh)


def test_with_init_any_other_method_config_field_is_refused(tmp_path, qa_file):
    for fields in ({"ratio": 8}, {"reader_tokens": P, "window": 64}):
        with pytest.raises(ConfigError, match=r"init \(trained weights, whose config is fixed\) takes method config "
                                              r"fields only chunk_positions, reader_tokens"):
            lever_sft_config(tmp_path, qa_file, tmp_path, compressor=fields)
    with pytest.raises(ConfigError, match="takes method config fields none"):
        lever_sft_config(tmp_path, qa_file, tmp_path, method="prompt-tuning", compressor={"reader_tokens": P})
    with pytest.raises(ConfigError, match="give either init .* or an ablation"):
        lever_sft_config(tmp_path, qa_file, tmp_path, ablation="last-layer")
    on = ComprExITConfig(window=32, chunk_positions=3, reader_tokens=4)
    assert on.with_additions({"reader_tokens": 4, "chunk_positions": 3}) == on  # already on at that value: nothing new
    with pytest.raises(ConfigError, match="already have reader_tokens=4; cannot change to reader_tokens=8"):
        on.with_additions({"reader_tokens": 8})


def test_the_command_line_adds_reader_tokens_over_init_and_refuses_other_fields_in_one_line(tmp_path, qa_file, capsys):
    backbone = save_tiny_backbone("llama", tmp_path / "backbone")
    compressor(tiny_backbone("llama")).save_pretrained(tmp_path / "ntp")
    capsys.readouterr()  # what saving the backbone printed
    train = ["train", "sft", "--backbone", backbone, "--init", tmp_path / "ntp", "--data", qa_file, "--max-steps", "1",
             "--batch-size", "4", "--validation-permille", "200", "--val-questions", "4", "--eval-every", "100"]
    code, _, err = cli(capsys, *train, "--compressor-config", '{"ratio": 8}', "-o", tmp_path / "refused")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err and "got ['ratio']" in lines[0], err
    assert not (tmp_path / "refused").exists()
    code, _, err = cli(capsys, *train, "--compressor-config", json.dumps({"reader_tokens": P}), "-o", tmp_path / "sft")
    assert code == 0, err
    meta = json.loads((tmp_path / "sft" / "final" / CONFIG_FILE).read_text())
    assert meta["config"]["reader_tokens"] == P and meta["config"]["window"] == 32


# ------------------------------------------------------------------ slots are counted as slots
def test_explain_and_status_lines_count_slots_only(tmp_path, capsys):
    backbone = tiny_backbone("llama")
    reader = Reader(backbone, compressor(backbone, reader_tokens=P).eval(), chunk_tokens=40)
    text = "Ada Lovelace wrote the first program in 1843.\n" * 3
    explanation, document = explain_text(reader, text), reader.compress(text)
    chunks = [len(chunk) for chunk in split_chunks(reader.context_ids(text), 40)]  # 138 tokens: 40, 40, 40, 18
    assert explanation.num_slots == document.num_slots == sum(reader.compressor.num_slots(n) for n in chunks)

    folder = save_tiny_backbone("llama", tmp_path / "backbone")
    compressor(backbone, reader_tokens=P).save_pretrained(tmp_path / "w")
    capsys.readouterr()  # what saving the backbone printed
    (tmp_path / "doc.txt").write_text(text)
    models = ["--backbone", folder, "--compressor", tmp_path / "w", "--device", "cpu"]
    slots = reader.compressor.num_slots(len(text))
    code, _, err = cli(capsys, "explain", tmp_path / "doc.txt", "-o", tmp_path / "plan.html", *models)
    assert code == 0 and f"{len(text)} tokens -> {slots} slots" in err, err
    code, _, err = cli(capsys, "compress", tmp_path / "doc.txt", "-o", tmp_path / "doc.ctx", *models)
    assert code == 0 and f"{len(text)} tokens -> {slots} slots" in err, err
