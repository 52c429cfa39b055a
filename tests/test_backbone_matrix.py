"""The shared test matrix: every piece of the pipeline on tiny random Llama and Gemma3 backbones."""

import pytest
import torch

from comprexit import Backbone, CheckpointError, ComprExIT, ComprExITConfig, InputError
from comprexit.document import CompressedDocument
from comprexit.assembly import LEFT
from comprexit.decoding import EagerDecoder
from comprexit.prefix import SoftPrefix, SoftPrefixBatch
from comprexit.reader import Reader

from tiny import save_tiny_backbone


def test_encode_returns_all_states_without_bos(tiny):
    encoded = tiny.encode([[5, 6, 7, 8], [9, 10]])
    assert encoded.hidden_states.shape == (2, 4, tiny.num_hidden_states, tiny.hidden_size)
    assert encoded.mask.tolist() == [[True] * 4, [True, True, False, False]]
    # right padding: a context's states do not depend on the batch it is in
    alone = tiny.encode([[9, 10]])
    torch.testing.assert_close(alone.hidden_states[0], encoded.hidden_states[1, :2])
    with pytest.raises(InputError, match="empty context"):
        tiny.encode([[]])


def test_backbone_is_frozen(tiny):
    assert not any(p.requires_grad for p in tiny.model.parameters())
    assert not tiny.model.training


def test_gradients_reach_the_compressor_and_not_the_backbone(tiny):
    torch.manual_seed(0)
    compressor = ComprExIT.for_backbone(tiny, ComprExITConfig(window=8))
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    encoded = tiny.encode([list(range(4, 30)), list(range(30, 45))])
    out = compressor.compress(encoded)
    prefixes = [SoftPrefix(row[mask]) for row, mask in zip(out.slots, out.mask)]
    batch = SoftPrefixBatch.stack(prefixes).inputs(tiny, [[5, 6, 7], [8, 9]], side=LEFT)
    logits = tiny.model(
        inputs_embeds=batch.embeds(), attention_mask=batch.attention_mask, position_ids=batch.position_ids
    ).logits
    logits[:, -1].logsumexp(-1).sum().backward()
    assert all(p.grad is not None for n, p in compressor.named_parameters() if "capacity" not in n)
    assert all(p.grad is None for p in tiny.model.parameters())
    assert all(torch.equal(before[k], v) for k, v in tiny.model.state_dict().items())


def test_left_padded_batch_decodes_like_single_rows(tiny):
    prefixes = [SoftPrefix.of_tokens(tiny, ids) for ids in ([5, 6, 7, 8, 9, 10], [], [11])]
    prompts = [[20, 21], [22, 23, 24, 25, 26], [27]]
    decoder = EagerDecoder(tiny)
    batched = decoder.answers(prefixes, prompts, max_new_tokens=6)
    single = [decoder.answers([p], [q], max_new_tokens=6)[0] for p, q in zip(prefixes, prompts)]
    assert batched == single
    batch = SoftPrefixBatch.stack(prefixes).inputs(tiny, prompts, side=LEFT)
    assert batch.attention_mask.sum(-1).tolist() == [1 + 6 + 2, 1 + 5, 1 + 1 + 1]
    assert batch.position_ids[1, -6:].tolist() == list(range(6))


def test_reader_compress_save_load_ask(tiny, tmp_path):
    torch.manual_seed(0)
    reader = Reader(tiny, ComprExIT.for_backbone(tiny, ComprExITConfig(window=16)), chunk_tokens=40)
    text = "The quick brown fox jumps over the lazy dog. " * 3  # 135 characters -> 4 chunks
    document = reader.compress(text)
    assert document.context_tokens == len(text) and document.num_slots == 10 + 10 + 10 + 4
    path = document.save(tmp_path / "doc.ctx")
    answers = reader.ask(CompressedDocument.load(path), ["What jumps?", "Who is lazy?"])
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    assert len(reader.ask_full_context(text, "What jumps?")) == 1


def test_reader_refuses_bad_input(tiny):
    reader = Reader(tiny, ComprExIT.for_backbone(tiny, ComprExITConfig(window=16)))
    with pytest.raises(InputError, match="context is empty"):
        reader.compress("   \n ")
    with pytest.raises(InputError, match="question 2 is empty"):
        reader.ask("Some text.", ["Who?", "  "])
    with pytest.raises(InputError, match="no question"):
        reader.ask("Some text.", [])
    with pytest.raises(InputError, match=r"the context has \d+ tokens; at most \d+ fit"):
        reader.compress("x" * (reader.max_context_tokens + 1))
    with pytest.raises(InputError, match=r"read in full, at most \d+ fit"):
        reader.ask_full_context("x" * tiny.max_positions, "What?")


def test_document_for_another_backbone_is_refused(tiny):
    from tiny import tiny_backbone

    other_kind = "llama" if tiny.identity.model_type != "llama" else "gemma3"
    other = tiny_backbone(other_kind)
    document = Reader(other, ComprExIT.for_backbone(other, ComprExITConfig(window=16))).compress("Some text.")
    reader = Reader(tiny, ComprExIT.for_backbone(tiny, ComprExITConfig(window=16)))
    with pytest.raises(CheckpointError, match="compressed for tiny-"):
        reader.ask(document, "What?")


@pytest.mark.parametrize("kind", ["llama"])
def test_backbone_load_from_folder_and_bad_names(kind, tmp_path):
    folder = save_tiny_backbone(kind, tmp_path / "m")
    backbone = Backbone.load(folder, device="cpu", dtype="float32", attn_implementation="eager")
    assert backbone.identity.hidden_size == 32 and backbone.model.config._attn_implementation == "eager"
    assert Backbone.load(folder, device="cpu", dtype="bfloat16").dtype == torch.bfloat16
    with pytest.raises(CheckpointError, match="no such backbone folder or file: .*missing-model"):
        Backbone.load(tmp_path / "missing-model", device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="cannot load causal LM"):
        Backbone.load(tmp_path / "empty", device="cpu")
    with pytest.raises(CheckpointError, match="GGUF file not found"):
        Backbone.load(tmp_path / "missing.gguf", device="cpu")


def test_long_documents_are_compressed_chunk_by_chunk(tiny):
    torch.manual_seed(0)
    compressor = ComprExIT.for_backbone(tiny, ComprExITConfig(window=16))
    reader = Reader(tiny, compressor, chunk_tokens=10)
    text = "abcdefghij" * 13 + "abcde"  # 14 chunks: more than one encoder batch
    document = reader.compress(text)
    assert document.num_slots == 13 * 3 + 2
    pieces = [Reader(tiny, compressor, chunk_tokens=10).compress(text[i : i + 10]).slots for i in range(0, len(text), 10)]
    torch.testing.assert_close(document.slots, torch.cat(pieces), rtol=1e-5, atol=1e-5)


def test_cached_slots_answer_like_re_prefilling(tiny):
    """(c) of the serving benchmark: reusing the slot-prefix cache gives the answers of re-reading the slots."""
    torch.manual_seed(0)
    reader = Reader(tiny, ComprExIT.for_backbone(tiny, ComprExITConfig(window=16)))
    document = reader.compress("Ada Lovelace wrote the first program in 1843. " * 2)
    questions = ["Who wrote it?", "When?", "What did she write, and in which year exactly?"]
    plain = reader.ask(document, questions, use_cache=False, max_new_tokens=12)
    first = reader.ask(document, questions, max_new_tokens=12)
    again = reader.ask(document, questions, max_new_tokens=12)  # the kept cache is reused, not consumed
    assert plain == first == again
    assert reader.ask_full_context("Ada wrote it. " * 3, questions, max_new_tokens=12) == reader.ask_full_context(
        "Ada wrote it. " * 3, questions, max_new_tokens=12, use_cache=False
    )


def test_training_and_inference_read_the_same_frozen_states(tiny):
    """One frozen encoder pass: what the compressor reads in training (objectives.frozen_pass) is what
    `Backbone.encode` gives at inference, with and without padding, and with the teacher's targets."""
    from comprexit.training.data import Example
    from comprexit.training.objectives import frozen_pass

    for contexts in ([list(range(5, 21)), list(range(21, 37))], [list(range(5, 21)), list(range(30, 37))]):
        examples = [Example(tuple(c), tuple(range(40, 44 + 3 * i)), 1) for i, c in enumerate(contexts)]
        encoded = tiny.encode(contexts)
        batch, _, _ = frozen_pass(tiny, examples, states=True, teacher=False)
        assert torch.equal(batch.hidden_states, encoded.hidden_states) and torch.equal(batch.mask, encoded.mask)
        # the teacher pass reads the targets too; causal, it gives the contexts' tokens the same states
        batch, teacher, _ = frozen_pass(tiny, examples, states=True, teacher=True)
        real = encoded.mask
        assert torch.equal(batch.mask, real)
        torch.testing.assert_close(batch.hidden_states[real], encoded.hidden_states[real], rtol=1e-5, atol=1e-5)
        assert teacher.shape == (sum(len(e.targets) - 1 for e in examples), tiny.hidden_size)


def test_loading_an_untrained_reader_leaves_the_callers_random_state(tiny):
    """Where no compressor is shipped, `Reader.load` draws seeded random weights without reseeding the caller."""
    from comprexit.reader import UntrainedCompressorWarning

    torch.manual_seed(1234)
    state = torch.get_rng_state()
    with pytest.warns(UntrainedCompressorWarning):
        first = Reader.load(backbone=tiny)
    assert torch.equal(torch.get_rng_state(), state)
    with pytest.warns(UntrainedCompressorWarning):
        second = Reader.load(backbone=tiny)
    weights = zip(first.compressor.state_dict().values(), second.compressor.state_dict().values())
    assert all(torch.equal(a, b) for a, b in weights)  # the same untrained weights every time
