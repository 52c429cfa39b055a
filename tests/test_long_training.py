"""Long-context training (issue "Long documents"): contexts of several chunks, compressed chunk by chunk.

Tiny random backbones with a character tokenizer: a chunk is `context_tokens` characters.
"""

import json

import numpy as np
import pytest
import torch

from comprexit import ConfigError
from comprexit.compressor import ComprExIT
from comprexit.config import ComprExITConfig
from comprexit.data.qa import load_qa
from comprexit.data.token_cache import is_held_out
from comprexit.methods.comprexit import ComprExITEncoder
from comprexit.training.config import TrainConfig
from comprexit.training.data import Example
from comprexit.training.objectives import LossWeights, batch_losses, decoder_inputs, frozen_pass
from comprexit.training.trainer import Trainer
from comprexit.chunks import join_chunks

from conftest import write_corpus
from tiny import tiny_backbone

CHUNK = 96


@pytest.fixture(scope="module")
def long_corpus(tmp_path_factory):
    """Documents of ~500 characters (tokens): each gives a 96-token piece and long spans of 192 and 288 tokens."""
    return write_corpus(tmp_path_factory.mktemp("long") / "long_corpus.jsonl.gz", documents=60, words=90, seed=2)


def config(tmp_path, data, **changes):
    values = dict(
        phase="ntp", data=[str(data)], output_dir=str(tmp_path / "run"), lr=3e-3, batch_size=4,
        context_tokens=CHUNK, continuation_tokens=32, compressor={"window": 32, "slot_scale": "embedding"},
        validation_permille=150, val_examples=8, eval_every=100, save_every=100, log_every=1, warmup_ratio=0.0,
    )
    values.update(changes)
    return TrainConfig(**values)


def ids(count, first=5):
    """`count` token ids of the tiny vocabulary."""
    return tuple(first + i % 80 for i in range(count))


def epoch_contexts(trainer, epoch=0):
    return [[len(trainer.split.train[i].context) for i in batch] for batch in trainer._epoch_batches(epoch)]


# ------------------------------------------------------------------ configuration
@pytest.mark.parametrize("changes, message", [
    (dict(long_context_tokens=[150]), "long_context_tokens must be multiples of context_tokens (96) above it, got [150]"),
    (dict(long_context_tokens=[96]), "long_context_tokens must be multiples of context_tokens (96) above it, got [96]"),
    (dict(long_context_tokens=[192], long_share=0.0), "long_share must be in (0, 1], got 0.0"),
    (dict(distractor_tokens=[192]), "distractor_tokens applies to the sft phase only"),
    (dict(phase="sft", long_context_tokens=[192]), "long_context_tokens applies to the ntp phase only"),
    (dict(long_batch_size=8), "long_batch_size must be an integer from 1 to batch_size (4), got 8"),
    (dict(long_batch_size=0), "long_batch_size must be an integer from 1 to batch_size (4), got 0"),
])
def test_bad_long_context_settings_are_refused_naming_the_value(tmp_path, corpus, changes, message):
    with pytest.raises(ConfigError) as error:
        config(tmp_path, corpus, **changes)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_command_line_refuses_a_length_that_is_no_multiple_of_the_chunk_in_one_line(tmp_path, corpus, capsys):
    from comprexit.cli import main

    code = main(["train", "ntp", "--data", str(corpus), "-o", str(tmp_path / "run"), "--long-context-tokens", "2048", "700"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert "long_context_tokens must be multiples of context_tokens (512) above it, got [2048, 700]" in lines[0]


def test_chunk_positions_are_a_validated_compressor_option():
    with pytest.raises(ConfigError, match="chunk_positions must be an integer >= 0, got -1"):
        ComprExITConfig(chunk_positions=-1)


# ------------------------------------------------------------------ data and batches
def test_long_span_batches_hold_one_length_and_the_stated_number_of_chunks(tmp_path, long_corpus):
    backbone = tiny_backbone("llama")
    trainer = Trainer(config(tmp_path, long_corpus, long_context_tokens=[192, 288], long_share=0.5), backbone=backbone)
    names = trainer.split.train.names
    assert names[-2:] == ["long_corpus.jsonl.gz@192", "long_corpus.jsonl.gz@288"] and trainer.split.long_sources == 2
    batches = epoch_contexts(trainer)
    long_batches = [b for b in batches if b[0] > CHUNK]
    assert all(len(set(b)) == 1 for b in long_batches)  # a batch of long examples holds one length
    assert {b[0] for b in long_batches} == {192, 288} and all(max(b) <= CHUNK for b in batches if b[0] <= CHUNK)
    short = sum(len(b) for b in batches if b[0] <= CHUNK)
    assert abs(sum(len(b) for b in long_batches) - short) <= 2 * len(batches[0])  # long_share 0.5: as many long as short
    held = trainer.split.train.sources[0].corpus.held_out(150)  # the documents of the short pieces' validation
    assert all(not held[a.documents].any() for s in trainer.split.train.sources[-2:] for a in s.articles)
    examples = [trainer.split.train[i] for i in trainer._epoch_batches(0)[[b[0] for b in batches].index(288)]]
    batch, _, counts = frozen_pass(backbone, examples, states=True, teacher=False, chunk_tokens=CHUNK)
    assert counts == [3] * len(examples) and batch.hidden_states.shape[:2] == (3 * len(examples), CHUNK)
    assert batch.chunk_index == [0, 1, 2] * len(examples)


def test_without_long_options_the_batches_are_todays(tmp_path, long_corpus):
    from comprexit.data.mixture import epoch_indices
    from comprexit.training.data import bucketed_batches

    backbone = tiny_backbone("llama")
    trainer = Trainer(config(tmp_path, long_corpus), backbone=backbone)
    train = trainer.split.train
    today = bucketed_batches(epoch_indices(train.sizes, None, 0, 1), train.lengths, 4, seed=1)
    assert trainer._epoch_batches(1) == today and trainer.split.long_sources == 0


def test_sft_questions_are_hidden_among_distractors_of_the_training_side_only(tmp_path, qa_file):
    backbone = tiny_backbone("gemma3")
    cfg = TrainConfig(phase="sft", data=[str(qa_file)], output_dir=str(tmp_path / "sft"), batch_size=4, max_steps=2,
                      context_tokens=CHUNK, compressor={"window": 32}, validation_permille=200, eval_every=100,
                      save_every=100, distractor_tokens=[192], long_share=0.25)
    trainer = Trainer(cfg, backbone=backbone)
    assert trainer.split.train.names[-1] == "qa_train.jsonl@192"
    long = trainer.split.train.sources[-1]
    qas = list(load_qa(str(qa_file)))
    held = [qa.context for qa in qas if is_held_out(qa.context, 200)]
    train_contexts = [qa.context for qa in qas if not is_held_out(qa.context, 200)]
    assert held and len(long) == len(train_contexts)
    for example in long:
        text = backbone.decode(list(example.context))
        assert len(example.context) <= 192 and not any(h in text for h in held)  # no validation paragraph leaks in
        assert sum(c in text for c in train_contexts) >= 2  # the gold among distractors
    assert max(len(e.context) for e in long) > CHUNK
    # validation at the same length: the held-out questions among held-out paragraphs only
    validation = trainer.val_long[192].examples
    assert {qa.qid for qa in validation} == {qa.qid for qa in trainer.val_questions.examples}
    for qa in validation:
        assert not any(c in qa.context for c in train_contexts) and sum(h in qa.context for h in held) >= 2
    assert trainer.train()["status"] == "finished"
    rows = [json.loads(line) for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    [row] = [r for r in rows if r["kind"] == "validation"]
    assert row["f1_selection"] == pytest.approx((row["f1"] + row["f1@192"]) / 2)
    assert json.loads((tmp_path / "sft" / "best" / "selection.json").read_text())["f1_selection"] == row["f1_selection"]


# ------------------------------------------------------------------ the forward pass
def test_a_two_chunk_document_gets_its_chunks_slots_in_order_with_the_right_mask(tiny):
    torch.manual_seed(0)
    compressor = ComprExIT.for_backbone(tiny, ComprExITConfig(window=32))
    encoder = ComprExITEncoder(compressor)
    long, short = ids(150), ids(60, 7)  # 150 tokens: chunks of 96 and 54; 60 tokens: one chunk
    examples = [Example(long, (8, 9, 10)), Example(short, (11, 12))]
    batch, _, counts = frozen_pass(tiny, examples, states=True, teacher=False, chunk_tokens=CHUNK)
    assert counts == [2, 1] and batch.chunk_index == [0, 1, 0]
    with torch.no_grad():
        prefix = join_chunks(encoder(batch), counts)
        wanted = [compressor.num_slots(96) + compressor.num_slots(54), compressor.num_slots(60)]
        assert prefix.lengths == wanted and prefix.embeds.shape == (2, max(wanted), tiny.hidden_size)
        assert torch.isfinite(prefix.embeds).all() and not prefix.embeds[1, wanted[1]:].any()
        for row, chunks in enumerate([[list(long[:96]), list(long[96:])], [list(short)]]):
            alone = [compressor.compress(tiny.encode([chunk])) for chunk in chunks]  # as Reader compresses
            concatenated = torch.cat([out.slots[out.mask] for out in alone])
            torch.testing.assert_close(prefix.embeds[row, : wanted[row]], concatenated, rtol=1e-4, atol=1e-5)
        embeds, mask, offsets = decoder_inputs(tiny, prefix.embeds, prefix.lengths, [e.targets for e in examples])
    assert mask.sum(1).tolist() == [1 + wanted[0] + 3, 1 + wanted[1] + 2] and offsets == [1 + wanted[0], 1 + wanted[1]]


def test_with_every_new_option_off_slots_and_losses_are_bit_identical(tiny):
    torch.manual_seed(0)
    compressor = ComprExIT.for_backbone(tiny, ComprExITConfig(window=32))
    encoder = ComprExITEncoder(compressor)
    examples = [Example(ids(n), (8, 9, 10)) for n in (96, 40, 77)]
    contexts = [list(e.context) for e in examples]
    with torch.no_grad():
        plain = compressor.compress(tiny.encode(contexts))  # the inference path
        batch, _, counts = frozen_pass(tiny, examples, states=True, teacher=False, chunk_tokens=CHUNK)
        trained = encoder(batch)
        assert counts == [1, 1, 1] and torch.equal(trained.embeds, plain.slots)
        unchunked, _, _ = frozen_pass(tiny, examples, states=True, teacher=False)
        assert torch.equal(unchunked.hidden_states, batch.hidden_states)
        # a fresh chunk-position signal is zero: the same slots bit for bit at step 0
        positioned = ComprExIT.for_backbone(tiny, ComprExITConfig(window=32, chunk_positions=4))
        positioned.load_state_dict(compressor.state_dict(), strict=False)
        again = positioned.compress(tiny.encode(contexts), chunk_index=torch.tensor([0, 1, 5]))
        assert torch.equal(again.slots, plain.slots)
        weights = LossWeights(ce=1.0, kl=0.5)
        a = batch_losses(tiny, encoder, examples, weights)
        b = batch_losses(tiny, encoder, examples, weights, chunk_tokens=CHUNK)
    assert all(torch.equal(a.sums[k], b.sums[k]) for k in a.sums)


def test_chunk_positions_are_saved_and_loaded_with_the_weights(tmp_path):
    backbone = tiny_backbone("llama")
    compressor = ComprExIT.for_backbone(backbone, ComprExITConfig(window=32, chunk_positions=3))
    with torch.no_grad():
        compressor.chunk_position.weight.normal_()
    compressor.save_pretrained(tmp_path / "w")
    loaded = ComprExIT.from_pretrained(tmp_path / "w", backbone)
    assert loaded.config.chunk_positions == 3 and torch.equal(loaded.chunk_position.weight, compressor.chunk_position.weight)
    encoded = backbone.encode([list(ids(55))] * 2)
    with torch.no_grad():
        slots = loaded.compress(encoded, chunk_index=torch.tensor([0, 7])).slots  # past the last index: the last one
        assert not torch.equal(slots[0], slots[1])
        torch.testing.assert_close(slots[1], loaded.compress(encoded, chunk_index=torch.tensor([2, 2])).slots[1])


def test_a_short_run_on_long_spans_lowers_their_loss_and_resumes_exactly(tmp_path, long_corpus):
    backbone = tiny_backbone("gemma3")
    changes = dict(long_context_tokens=[192], long_share=0.5, lr=1e-2, max_steps=10, save_every=5,
                   compressor={"window": 32, "slot_scale": "embedding", "chunk_positions": 4})
    straight = Trainer(config(tmp_path / "a", long_corpus, **changes), backbone=backbone)
    examples = [straight.split.train[i] for i in range(len(straight.split.train) - 4, len(straight.split.train))]
    assert all(len(e.context) == 192 for e in examples)
    with torch.no_grad():
        before = float(batch_losses(backbone, straight.encoder, examples, LossWeights(), chunk_tokens=CHUNK).mean("ce"))
    straight.train()
    with torch.no_grad():
        after = float(batch_losses(backbone, straight.encoder, examples, LossWeights(), chunk_tokens=CHUNK).mean("ce"))
    assert after < before - 0.02, (before, after)
    assert straight.unwrapped.compressor.chunk_position.weight[1].abs().sum() > 0  # the signal of chunk 1 learned

    interrupted = config(tmp_path / "b", long_corpus, **changes)
    assert Trainer(interrupted, backbone=backbone).train(stop_at_step=5)["status"] == "paused"
    Trainer(interrupted, backbone=backbone, resume=True).train()
    rows = {name: [json.loads(line) for line in (tmp_path / name / "run" / "metrics.jsonl").read_text().splitlines()]
            for name in ("a", "b")}
    losses = {name: {r["step"]: r["loss"] for r in found if r["kind"] == "train"} for name, found in rows.items()}
    assert sorted(losses["b"]) == list(range(1, 11))
    for step in range(6, 11):
        assert losses["a"][step] == pytest.approx(losses["b"][step], rel=1e-5, abs=1e-6), step
    bounds = next(r for r in rows["a"] if r["kind"] == "bounds")
    assert bounds["long_context"] == {"long_context_tokens": [192], "distractor_tokens": None, "long_share": 0.5,
                                      "chunk_tokens": CHUNK}
    assert "long_corpus.jsonl.gz@192" in bounds["sources"]


def test_a_long_document_gets_the_same_slots_in_training_and_from_the_reader():
    from comprexit.reader import Reader

    backbone = tiny_backbone("llama")
    compressor = ComprExIT.for_backbone(backbone, ComprExITConfig(window=32, chunk_positions=2))
    with torch.no_grad():
        compressor.chunk_position.weight.normal_()  # as if trained: each chunk index moves its slots
    document = ids(250)  # chunks of 96, 96 and 58 tokens; the third takes the last learned vector
    with torch.no_grad():
        batch, _, counts = frozen_pass(backbone, [Example(document, (8, 9))], states=True, teacher=False,
                                       chunk_tokens=CHUNK)
        trained = join_chunks(ComprExITEncoder(compressor)(batch), counts)
    read = Reader(backbone, compressor, chunk_tokens=CHUNK).compress_ids(list(document)).slots
    assert counts == [3] and trained.lengths == [len(read)]
    torch.testing.assert_close(trained.embeds[0], read, rtol=1e-4, atol=1e-5)


def test_evaluation_compresses_a_long_context_chunk_by_chunk_as_the_reader_does():
    """`comprexit eval` with a context budget past one chunk: the same slots as `Reader` (issue 18's
    benchmark compares today's chunk-concatenating compressor), and a short context is read as before."""
    from comprexit.methods.comprexit import ComprExITMethod
    from comprexit.reader import Reader

    backbone = tiny_backbone("llama")
    compressor = ComprExIT.for_backbone(backbone, ComprExITConfig(window=32, chunk_positions=2))
    with torch.no_grad():
        compressor.chunk_position.weight.normal_()
    method = ComprExITMethod(backbone, compressor=compressor)
    method.chunk_tokens = CHUNK
    long, short = list(ids(250)), list(ids(60))
    rows = method.prepare([long, short]).rows
    read = Reader(backbone, compressor, chunk_tokens=CHUNK).compress_ids(long).slots
    assert len(rows[0]) == len(read) == 2 * 24 + 15  # chunks of 96, 96 and 58 tokens at 4x
    torch.testing.assert_close(rows[0].embeds, read, rtol=1e-4, atol=1e-5)
    alone = method.prepare([short]).rows[0]
    torch.testing.assert_close(rows[1].embeds, alone.embeds, rtol=1e-4, atol=1e-5)


def test_long_batches_in_smaller_passes_take_the_same_steps(tmp_path, long_corpus):
    """long_batch_size cuts only the batches of long examples into smaller passes: the losses and the
    trained weights are those of passes of batch_size (up to float summation order)."""
    backbone = tiny_backbone("llama")
    changes = dict(long_context_tokens=[192], long_share=0.5, lr=1e-2, max_steps=6)
    runs = {}
    for name, smaller in (("whole", None), ("split", 1)):
        trainer = Trainer(config(tmp_path / name, long_corpus, long_batch_size=smaller, **changes), backbone=backbone)
        batches = [[trainer.split.train[i] for i in batch] for batch in trainer._epoch_batches(0)[:6]]
        passes = [len(trainer._micro_batches(batch)) for batch in batches]
        trainer.train()
        rows = [json.loads(line) for line in (tmp_path / name / "run" / "metrics.jsonl").read_text().splitlines()]
        runs[name] = ([r["loss"] for r in rows if r["kind"] == "train"], trainer.unwrapped.state_dict(), passes, batches)
    (whole, whole_state, whole_passes, batches), (split, split_state, split_passes, _) = runs["whole"], runs["split"]
    long = [any(len(e.context) > CHUNK for e in batch) for batch in batches]
    assert any(long) and not all(long)  # both kinds among the steps compared
    assert whole_passes == [1] * 6 and split_passes == [4 if is_long else 1 for is_long in long]
    assert split == pytest.approx(whole, rel=1e-4)
    for key, value in whole_state.items():  # Adam turns a near-zero gradient's rounding into up to lr per step
        torch.testing.assert_close(split_state[key], value, rtol=1e-3, atol=5e-4)


# ------------------------------------------------------------------ long validation of long-span NTP
def document_of(corpus, tokens):
    """The cache document holding `tokens` as a contiguous run (each toy article is one document), or None."""
    wanted = np.asarray(tokens, dtype=corpus.tokens.dtype).tobytes()
    for doc in range(len(corpus)):
        found = corpus.document(doc).tobytes().find(wanted)
        if found >= 0 and found % corpus.tokens.dtype.itemsize == 0:
            return doc
    return None


def test_long_ntp_validation_spans_come_only_from_documents_that_no_training_example_reads(tmp_path, long_corpus):
    backbone = tiny_backbone("llama")
    trainer = Trainer(config(tmp_path, long_corpus, long_context_tokens=[192, 288]), backbone=backbone)
    short, long = trainer.split.train.sources[0], trainer.split.train.sources[-2:]
    corpus = short.corpus
    read = set((np.searchsorted(corpus.offsets, short.start, side="right") - 1).tolist())  # the short training pieces
    read |= {int(d) for source in long for a in source.articles for d in a.documents}  # the long training spans
    validation = trainer.split.long_validation
    assert sorted(validation) == [192, 288] and all(0 < len(spans) <= 8 for spans in validation.values())  # val_examples
    for length, spans in validation.items():
        assert all(len(e.context) == length and len(e.targets) == 32 for e in spans)
        docs = [document_of(corpus, e.context + e.targets) for e in spans]
        assert None not in docs and not read & set(docs), length  # held-out text only, read by no training example
    # the plain validation pieces and the data order are those of a run without long validation
    plain = Trainer(config(tmp_path / "plain", long_corpus), backbone=backbone)
    assert trainer.split.validation == plain.split.validation
    again = Trainer(config(tmp_path / "again", long_corpus, long_context_tokens=[192, 288]), backbone=backbone)
    assert again.split.long_validation == validation  # a fixed set: the same spans from the same seed


def test_a_length_the_held_out_articles_cannot_give_is_said_once_and_skipped(tmp_path, long_corpus):
    backbone = tiny_backbone("llama")
    with pytest.warns(UserWarning, match="no long validation span of 960 tokens"):
        trainer = Trainer(config(tmp_path, long_corpus, long_context_tokens=[192, 960], max_steps=1),
                          backbone=backbone)
    assert sorted(trainer.split.long_validation) == [192]
    trainer.train()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    notes = [r["note"] for r in rows if r["kind"] == "note"]
    assert len(notes) == 1 and "ce@960 is not reported" in notes[0]
    [row] = [r for r in rows if r["kind"] == "validation"]
    assert "ce@192" in row and "ce@960" not in row


def test_a_long_ntp_run_reports_ce_at_each_length_and_selects_by_their_mean(tmp_path, long_corpus):
    from comprexit.figures import pyplot

    backbone = tiny_backbone("llama")
    Trainer(config(tmp_path, long_corpus, long_context_tokens=[192, 288], max_steps=2), backbone=backbone).train()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    [row] = [r for r in rows if r["kind"] == "validation"]
    assert row["ce"] > 0 and row["ce@192"] > 0 and row["ce@288"] > 0
    assert row["ce_selection"] == pytest.approx((row["ce"] + row["ce@192"] + row["ce@288"]) / 3)
    bounds = next(r for r in rows if r["kind"] == "bounds")
    assert set(bounds["long_validation"]) == {"192", "288"} and all(0 < n <= 8 for n in bounds["long_validation"].values())
    assert json.loads((tmp_path / "run" / "best" / "selection.json").read_text())["ce_selection"] == row["ce_selection"]
    assert (tmp_path / "run" / "curves.png").is_file() or pyplot() is None  # the curves draw the ce@ lines


def test_the_best_long_ntp_checkpoint_is_the_one_of_the_lowest_mean_not_the_lowest_plain_ce(tmp_path, long_corpus):
    trainer = Trainer(config(tmp_path, long_corpus, long_context_tokens=[192]), backbone=tiny_backbone("llama"))
    trainer.best_val = float("inf")
    scores = iter([{"ce": 2.0, "ce@192": 5.0, "ce_selection": 3.5},  # the lowest plain CE
                   {"ce": 2.5, "ce@192": 3.5, "ce_selection": 3.0},  # the lowest mean: kept
                   {"ce": 2.2, "ce@192": 4.6, "ce_selection": 3.4}])
    trainer.validate = lambda: next(scores)
    for step in (1, 2, 3):
        trainer._validate_and_select(step)
    assert json.loads((tmp_path / "run" / "best" / "selection.json").read_text())["step"] == 2


def test_without_long_options_the_metrics_keep_their_keys(tmp_path, long_corpus):
    """The rows a run without long options wrote before long validation existed, key for key."""
    Trainer(config(tmp_path, long_corpus, max_steps=2), backbone=tiny_backbone("llama")).train()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    keys = {r["kind"]: sorted(r) for r in rows}
    assert keys["validation"] == ["ce", "gap_closed", "kind", "step"]
    assert keys["bounds"] == ["accumulation", "ce_full_context", "ce_no_context", "data_seconds", "data_weights",
                              "global_batch", "kind", "long_context", "method", "micro_batch", "sources", "step",
                              "tokens", "total_steps", "train_examples", "trainable_parameters",
                              "validation_examples"]
    assert sorted(keys) == ["bounds", "environment", "summary", "train", "validation"]  # no note
    assert sorted(json.loads((tmp_path / "run" / "best" / "selection.json").read_text())) == ["ce", "gap_closed", "step"]


# ------------------------------------------------------------------ distractors drawn anew each epoch
def sft_config(tmp_path, qa_file, **changes):
    values = dict(phase="sft", data=[str(qa_file)], output_dir=str(tmp_path / "sft"), batch_size=4, max_steps=2,
                  context_tokens=CHUNK, compressor={"window": 32}, validation_permille=200, eval_every=100,
                  save_every=100, distractor_tokens=[192], long_share=0.25, val_questions=4, log_every=1)
    values.update(changes)
    return TrainConfig(**values)


def test_distractor_questions_caps_the_long_documents_to_a_seeded_sample_of_paragraphs(tmp_path, qa_file):
    from comprexit.training.data import distractor_sources

    backbone = tiny_backbone("gemma3")
    every = distractor_sources(backbone, [str(qa_file)], [192, 256], validation_permille=200, seed=0)
    capped = distractor_sources(backbone, [str(qa_file)], [192, 256], validation_permille=200, seed=0, max_questions=3)
    again = distractor_sources(backbone, [str(qa_file)], [192, 256], validation_permille=200, seed=0, max_questions=3)
    other = distractor_sources(backbone, [str(qa_file)], [192, 256], validation_permille=200, seed=1, max_questions=3)
    prompts = lambda source: sorted(e.targets for e in source)  # noqa: E731 (questions and answers)
    assert len(every[0]) > 3 and all(0 < len(source) <= 3 for source in capped)
    assert prompts(capped[0]) == prompts(capped[1]) == prompts(again[0])  # the same questions at every length
    assert set(prompts(capped[0])) <= set(prompts(every[0])) and prompts(other[0]) != prompts(capped[0])
    with pytest.raises(ConfigError, match="distractor_questions must be a positive integer"):
        TrainConfig(phase="sft", data=[str(qa_file)], distractor_tokens=[256], distractor_questions=0)
    with pytest.raises(ConfigError, match="distractor_questions needs distractor_tokens"):
        TrainConfig(phase="sft", data=[str(qa_file)], distractor_questions=10)


def test_distractor_layouts_are_drawn_anew_each_epoch_and_alike_for_the_same_epoch(tmp_path, qa_file):
    from comprexit.data.distractors import token_counter, with_distractors
    from comprexit.prompting import PromptTemplate
    from comprexit.training.data import sft_examples

    backbone = tiny_backbone("gemma3")
    trainer = Trainer(sft_config(tmp_path, qa_file), backbone=backbone)
    validation = [qa.context for qa in trainer.val_long[192].examples]
    first = trainer.split.train.sources[-1]
    qas = [qa for qa in load_qa(str(qa_file)) if not is_held_out(qa.context, 200)]
    today = with_distractors(qas, token_counter(backbone.tokenizer), 192, seed=0, measure=False)
    assert first.examples == sft_examples(backbone, today, PromptTemplate(), 192)  # epoch 0: the one-time draw of before
    trainer._epoch_batches(1)
    second = trainer.split.train.sources[-1]
    assert second.epoch == 1 and len(second) == len(first) and second.at_epoch(1) is second
    assert first.at_epoch(1).examples == second.examples  # the same epoch drawn twice: the same documents
    assert first.at_epoch(0) is first and second.at_epoch(0).examples == first.examples
    changed = sum(a.context != b.context for a, b in zip(first, second))
    assert changed >= len(first) // 2, changed  # new distractors and positions
    assert [e.targets for e in first] == [e.targets for e in second]  # the same questions, in the same order
    held = [qa.context for qa in load_qa(str(qa_file)) if is_held_out(qa.context, 200)]
    for example in second:
        text = backbone.decode(list(example.context))
        assert len(example.context) <= 192 and not any(h in text for h in held)  # no validation paragraph, any epoch
    trainer._epoch_batches(0)
    assert [qa.context for qa in trainer.val_long[192].examples] == validation  # validation layouts stay fixed
    assert trainer.split.train.sources[-1].examples == first.examples


def test_a_distractor_run_resumed_mid_epoch_repeats_the_uninterrupted_one(tmp_path, qa_file):
    backbone = tiny_backbone("gemma3")
    changes = dict(max_train_examples=12, long_share=0.5, max_steps=10, save_every=100, lr=3e-3)
    straight = Trainer(sft_config(tmp_path / "a", qa_file, **changes), backbone=backbone)
    assert straight.batches_per_epoch == 6  # 12 usual and 12 long examples an epoch: steps 7-10 in epoch 1
    straight.train()
    assert straight.split.train.sources[-1].epoch == 1  # it trained on epoch 1's draw
    interrupted = sft_config(tmp_path / "b", qa_file, **changes)
    assert Trainer(interrupted, backbone=backbone).train(stop_at_step=8)["status"] == "paused"
    Trainer(interrupted, backbone=backbone, resume=True).train()
    losses = {name: {r["step"]: r["loss"] for r in map(json.loads, (tmp_path / name / "sft" / "metrics.jsonl")
                                                              .read_text().splitlines()) if r["kind"] == "train"}
              for name in ("a", "b")}
    assert sorted(losses["b"]) == list(range(1, 11))
    for step in range(1, 11):
        assert losses["a"][step] == pytest.approx(losses["b"][step], rel=1e-5, abs=1e-6), step
