"""Training on a tiny random backbone: the loss falls, resume is exact, the backbone never changes."""

import json
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from comprexit.training import checkpoints
from comprexit.training import trainer as trainer_module
from comprexit.training.config import TrainConfig
from comprexit.training.data import bucketed_batches, ntp_examples
from comprexit.training.objectives import LossWeights, batch_losses
from comprexit.training.trainer import PLAN_REVISE_EVERY, PROFILE_AFTER, Trainer

from conftest import WORDS
from tiny import tiny_backbone


def config(tmp_path, corpus, **changes):
    values = dict(
        phase="ntp", data=[str(corpus)], output_dir=str(tmp_path / "run"), lr=3e-3, batch_size=4,
        context_tokens=96, continuation_tokens=32, compressor={"window": 32, "slot_scale": "embedding"},
        validation_permille=150, val_examples=8, eval_every=5, save_every=5, log_every=1, warmup_ratio=0.0,
    )
    values.update(changes)
    return TrainConfig(**values)


def train_losses(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if r["kind"] == "train"}


def test_ntp_examples_cut_documents_into_pieces():
    pieces = ntp_examples([list(range(700))], context_tokens=512, continuation_tokens=128)
    assert [(len(p.context), len(p.targets)) for p in pieces] == [(512, 128)]  # a 60-token rest is too short
    pieces = ntp_examples([list(range(200))], context_tokens=512, continuation_tokens=128)
    assert [(len(p.context), len(p.targets)) for p in pieces] == [(150, 50)]
    assert pieces[0].context + pieces[0].targets == tuple(range(200))


def test_bucketed_batches_are_deterministic_and_cover_everything():
    lengths = np.array([n % 37 + 2 for n in range(200)])
    a, b = bucketed_batches(range(200), lengths, 8, seed=3, pool=4), bucketed_batches(range(200), lengths, 8, seed=3, pool=4)
    assert a == b and sorted(i for batch in a for i in batch) == list(range(200))
    assert bucketed_batches(range(200), lengths, 8, seed=4, pool=4) != a
    spread = [max(lengths[i] for i in bt) - min(lengths[i] for i in bt) for bt in a]
    assert sum(spread) / len(spread) < 10  # similar lengths share a batch
    short = bucketed_batches(range(203), np.append(lengths, [5, 5, 5]), 8, seed=3, pool=4)
    assert all(len(bt) == 8 for bt in short) and len(short) == 25  # the short last batch is dropped


def test_loss_falls_when_overfitting_a_handful_of_examples(tmp_path, corpus):
    backbone = tiny_backbone("gemma3")
    cfg = config(tmp_path, corpus, lr=1e-2, max_steps=60, max_train_examples=4, eval_every=100, save_every=100)
    trainer = Trainer(cfg, backbone=backbone)
    examples = trainer.split.train[:4]
    weights = LossWeights()
    with torch.no_grad():
        before = float(batch_losses(backbone, trainer.encoder, examples, weights).mean("ce"))
    trainer.train()
    with torch.no_grad():
        after = float(batch_losses(backbone, trainer.encoder, examples, weights).mean("ce"))
    assert after < before - 0.02, (before, after)


def test_resume_reproduces_the_uninterrupted_run_and_backbone_is_untouched(tmp_path, corpus):
    backbone = tiny_backbone("llama")
    before = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    straight = config(tmp_path / "a", corpus, max_steps=12, kl_weight=1.0, ae_weight=0.5)
    Trainer(straight, backbone=backbone).train()

    interrupted = config(tmp_path / "b", corpus, max_steps=12, kl_weight=1.0, ae_weight=0.5)
    summary = Trainer(interrupted, backbone=backbone).train(stop_at_step=7)
    assert summary["status"] == "paused" and not (tmp_path / "b" / "run" / "final").exists()
    Trainer(interrupted, backbone=backbone, resume=True).train()

    a, b = train_losses(tmp_path / "a" / "run"), train_losses(tmp_path / "b" / "run")
    assert sorted(a) == sorted(b) == list(range(1, 13))
    for step in range(8, 13):
        assert a[step] == pytest.approx(b[step], rel=1e-5, abs=1e-6), step
    wa = load_file(tmp_path / "a" / "run" / "final" / "comprexit.safetensors")
    wb = load_file(tmp_path / "b" / "run" / "final" / "comprexit.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    assert all(torch.equal(before[k], v) for k, v in backbone.model.state_dict().items())
    assert (tmp_path / "a" / "run" / "curves.png").is_file()


def test_killed_save_leaves_the_previous_checkpoint(tmp_path, corpus):
    backbone = tiny_backbone("llama")
    cfg = config(tmp_path, corpus, max_steps=10)
    Trainer(cfg, backbone=backbone).train(stop_at_step=5)
    run = tmp_path / "run"
    good = checkpoints.latest_checkpoint(run)
    # a save killed half-way: a staging folder without trainer_state.json
    staging = checkpoints.staging_dir(run, 9)
    (staging / "optimizer.bin").write_bytes(b"partial")
    assert checkpoints.latest_checkpoint(run) == good
    summary = Trainer(cfg, backbone=backbone, resume=True).train()
    assert summary["status"] == "finished" and summary["step"] == 10


def test_sft_phase_scores_held_out_questions(tmp_path, qa_file):
    backbone = tiny_backbone("gemma3")
    cfg = TrainConfig(
        phase="sft", data=[str(qa_file)], output_dir=str(tmp_path / "sft"), lr=3e-3, batch_size=4, max_steps=6,
        compressor={"window": 32}, validation_permille=200, eval_every=3, save_every=100, log_every=1,
    )
    Trainer(cfg, backbone=backbone).train()
    rows = [json.loads(line) for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    validation = [r for r in rows if r["kind"] == "validation"]
    assert len(validation) == 2 and all("f1" in r and "gap_closed" in r for r in validation)
    assert (tmp_path / "sft" / "best" / "selection.json").is_file()
    # the questions selection saw, for a later decision to leave out (comprexit eval --exclude-questions)
    again = Trainer(cfg, backbone=backbone)
    recorded = json.loads((tmp_path / "sft" / "validation_questions.json").read_text())
    assert recorded == sorted(qa.qid for qa in again.val_questions) and 0 < len(recorded) < 60
    # the answer and EOS are scored, the prompt is not
    trainer_examples = again.split.train
    example = trainer_examples[0]
    answer = example.targets[example.score_from :]
    assert answer[-1] == backbone.eos_token_id and backbone.decode(answer[:-1]).strip() in WORDS


def test_bad_training_config_is_refused(tmp_path, corpus):
    from comprexit import ConfigError

    with pytest.raises(ConfigError, match="phase must be one of"):
        TrainConfig(phase="pretrain", data=[str(corpus)])
    with pytest.raises(ConfigError, match="at least one of ce_weight"):
        TrainConfig(data=[str(corpus)], ce_weight=0.0)
    with pytest.raises(ConfigError, match=r"unknown training config field\(s\) \['learning_rate'\]"):
        TrainConfig.from_dict({"data": [str(corpus)], "learning_rate": 1})


def test_vectorised_decoder_inputs_match_row_by_row_assembly(tiny):
    """decoder_hidden builds [BOS] + real prefix (+ insert) + targets with one scatter; compare with plain rows."""
    from comprexit.training.objectives import decoder_hidden

    torch.manual_seed(0)
    prefix = torch.randn(3, 5, tiny.hidden_size)
    counts = [5, 2, 0]
    targets = [[7, 8, 9], [10], [11, 12, 13, 14, 15, 16, 17, 18]]
    insert = torch.randn(tiny.hidden_size)
    for extra in (None, insert):
        hidden, offsets = decoder_hidden(tiny, prefix, counts, targets, insert=extra)
        for row in range(3):
            parts = [tiny.embed(torch.tensor(tiny.bos_ids)), prefix[row, : counts[row]]]
            if extra is not None:
                parts.append(extra[None])
            parts.append(tiny.embed(torch.tensor(targets[row])))
            embeds = torch.cat(parts)[None]
            alone = tiny.final_hidden(embeds, torch.ones(1, len(embeds[0]), dtype=torch.long),
                                      torch.arange(len(embeds[0]))[None])
            assert offsets[row] == len(embeds[0]) - len(targets[row])
            torch.testing.assert_close(hidden[row, : len(embeds[0])], alone[0], rtol=1e-4, atol=1e-5)


def test_runs_cut_at_different_steps_compare_at_their_last_common_validation():
    from comprexit.training.summary import common_validation_step, validation_at

    runs = [
        {"validations": [{"step": 50, "ce": 3.9}, {"step": 100, "ce": 3.8}, {"step": 150, "ce": 3.7}]},
        {"validations": [{"step": 50, "ce": 3.95}, {"step": 100, "ce": 3.85}]},
    ]
    assert common_validation_step(runs) == 100
    assert validation_at(runs[0], 100)["ce"] == 3.8
    assert common_validation_step([{"validations": []}]) is None
    by_examples = [  # batch 64 validated every 25 steps, batch 32 every 50: they meet at equal examples
        {"validations": [{"step": 25, "examples": 1600}, {"step": 50, "examples": 3200}, {"step": 75, "examples": 4800}]},
        {"validations": [{"step": 50, "examples": 1600}, {"step": 100, "examples": 3200}]},
    ]
    assert common_validation_step(by_examples, by="examples") == 3200
    assert validation_at(by_examples[0], 3200, by="examples")["step"] == 50


def test_summarize_names_runs_of_one_phase_by_their_parent_folder(tmp_path, capsys):
    import json

    from comprexit.cli import main

    paths = []
    for chain in ("middle_layer", "last_layer"):
        run = tmp_path / chain / "sft"
        run.mkdir(parents=True)
        (run / "train_config.json").write_text(json.dumps({"phase": "sft", "lr": 3e-4, "batch_size": 32, "ce_weight": 1.0}))
        (run / "metrics.jsonl").write_text(json.dumps({"kind": "train", "step": 5, "loss": 2.0}) + "\n")
        paths.append(str(run))
    assert main(["summarize", *paths, "-o", str(tmp_path / "s.json")]) == 0
    names = [r["run"] for r in json.loads((tmp_path / "s.json").read_text())["runs"]]
    assert names == ["middle_layer/sft", "last_layer/sft"]
    assert "| middle_layer/sft |" in capsys.readouterr().out


def final_weights(run_dir):
    return load_file(run_dir / "final" / "comprexit.safetensors")


def assert_same_weights(a, b, rel=1e-4):
    difference = sum(((a[k] - b[k]) ** 2).sum() for k in a).sqrt()
    size = sum((a[k] ** 2).sum() for k in a).sqrt()
    assert difference / size < rel, float(difference / size)


def test_a_global_batch_gives_the_same_update_in_one_pass_or_accumulated(tmp_path, corpus):
    backbone = tiny_backbone("llama")
    common = dict(max_steps=4, global_batch_size=8, kl_weight=1.0, eval_every=100, save_every=100)
    Trainer(config(tmp_path / "whole", corpus, batch_size=8, **common), backbone=backbone).train()
    Trainer(config(tmp_path / "parts", corpus, batch_size=2, **common), backbone=backbone).train()
    a, b = train_losses(tmp_path / "whole" / "run"), train_losses(tmp_path / "parts" / "run")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    assert all(a[s] == pytest.approx(b[s], rel=1e-5) for s in a)
    assert_same_weights(final_weights(tmp_path / "whole" / "run"), final_weights(tmp_path / "parts" / "run"))


def test_resume_from_a_sharded_checkpoint_with_another_micro_batch_equals_the_uninterrupted_run(tmp_path, corpus):
    """A checkpoint in files of at most 40 KiB, resumed with half the micro-batch (as on a machine of another size)."""
    backbone = tiny_backbone("gemma3")
    common = dict(max_steps=8, global_batch_size=8, checkpoint_shard_mb=0.04, eval_every=100, save_every=100)
    Trainer(config(tmp_path / "a", corpus, batch_size=4, **common), backbone=backbone).train()
    interrupted = config(tmp_path / "b", corpus, batch_size=4, **common)
    Trainer(interrupted, backbone=backbone).train(stop_at_step=3)
    saved = checkpoints.latest_checkpoint(tmp_path / "b" / "run")
    shards = sorted(saved.glob("*.safetensors"))
    assert len([s for s in shards if s.name.startswith("trainable")]) > 1
    assert max(s.stat().st_size for s in shards) <= 0.04 * 2**20
    from dataclasses import replace

    Trainer(replace(interrupted, batch_size=2), backbone=backbone, resume=True).train()
    a, b = train_losses(tmp_path / "a" / "run"), train_losses(tmp_path / "b" / "run")
    assert sorted(b) == list(range(1, 9))
    assert all(a[s] == pytest.approx(b[s], rel=1e-5) for s in range(4, 9))
    assert_same_weights(final_weights(tmp_path / "a" / "run"), final_weights(tmp_path / "b" / "run"))


def planned_run(tmp_path, corpus, **changes) -> tuple[dict, list[dict], list[dict], TrainConfig]:
    """A run with --plan-minutes on the tiny model: its summary, its plan rows, its train rows, its config."""
    cfg = config(tmp_path, corpus, **changes)
    summary = Trainer(cfg, backbone=tiny_backbone("llama")).train()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    return summary, [r for r in rows if r["kind"] == "plan"], [r for r in rows if r["kind"] == "train"], cfg


def test_a_planned_run_sets_its_steps_from_its_speed_and_ends_decayed(tmp_path, corpus):
    summary, plan, train, cfg = planned_run(tmp_path, corpus, max_steps=1000, plan_minutes=0.15, eval_every=1000,
                                            save_every=1000)
    assert plan[0]["step"] == 25 and 25 < plan[0]["total_steps"] < 1000
    # no validation before the end: any revision comes every PLAN_REVISE_EVERY steps, before half has run
    assert all(later["step"] - earlier["step"] == PLAN_REVISE_EVERY for earlier, later in zip(plan, plan[1:]))
    assert all(later["step"] < 0.5 * earlier["total_steps"] for earlier, later in zip(plan, plan[1:]))
    assert summary["status"] == "finished" and summary["step"] == plan[-1]["total_steps"]
    assert train[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # the schedule decays to zero at the planned end
    assert max(r["lr"] for r in train) == pytest.approx(cfg.lr, rel=0.05)


def test_a_planned_run_revises_its_plan_at_validations_until_half_has_run(tmp_path, corpus):
    """The first plan comes from steps 5-25; each validation before half the planned steps revises it."""
    summary, plans, train, _ = planned_run(tmp_path, corpus, max_steps=5000, plan_minutes=0.25, eval_every=40,
                                           save_every=5000)
    assert plans[0]["step"] == 25 and len(plans) > 1
    assert all(r["step"] % 40 == 0 for r in plans[1:])
    assert all(later["step"] < 0.5 * earlier["total_steps"] for earlier, later in zip(plans, plans[1:]))
    assert summary["status"] == "finished" and summary["step"] == plans[-1]["total_steps"]
    assert train[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # still decays to zero at the revised end


def test_a_plan_made_over_slow_first_steps_is_revised_between_validations(tmp_path, corpus, monkeypatch):
    """A recompilation among the probe's steps (--compile on one H100) made a first plan of a third of the
    time, and the first validation came too late to revise it: the plan is also revised every
    PLAN_REVISE_EVERY steps, so the run still fills its minutes."""
    monkeypatch.setattr(trainer_module, "PLAN_REVISE_EVERY", 10)
    cfg = config(tmp_path, corpus, max_steps=5000, plan_minutes=0.3, eval_every=5000, save_every=5000)
    trainer = Trainer(cfg, backbone=tiny_backbone("llama"))
    step = trainer._step

    def slow_probe(*args, **kwargs):  # steps 6-25 as slow as a step that compiles
        if 5 <= trainer.position.step < 25:
            time.sleep(0.15)
        return step(*args, **kwargs)

    monkeypatch.setattr(trainer, "_step", slow_probe)
    summary = trainer.train()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    plans = [r for r in rows if r["kind"] == "plan"]
    assert plans[0]["step"] == 25 and [r["step"] - 25 for r in plans[1:3]] == [10, 20]
    assert summary["status"] == "finished" and summary["step"] == plans[-1]["total_steps"]
    assert summary["step"] > 1.3 * plans[0]["total_steps"]  # without the revisions it would stop at the first plan


def test_validation_time_is_not_counted_as_step_time_when_the_plan_is_revised(tmp_path, corpus, monkeypatch):
    """A revision 25 steps before a validation once counted the validation's time as the steps' time and planned
    512 steps for 5 minutes, 2 of which it used (the eighth lease): validations and checkpoints are timed apart
    and spread over the steps, so the run still fills its minutes."""
    monkeypatch.setattr(trainer_module, "PLAN_REVISE_EVERY", 5)
    cfg = config(tmp_path, corpus, max_steps=5000, plan_minutes=0.2, eval_every=40, save_every=5000)
    trainer = Trainer(cfg, backbone=tiny_backbone("llama"))
    validate = trainer._validate_and_select

    def slow_validation(step):  # a validation as long as many steps, like 1,000 generated answers on a GPU
        time.sleep(0.5)
        return validate(step)

    monkeypatch.setattr(trainer, "_validate_and_select", slow_validation)
    started = time.perf_counter()
    summary = trainer.train()
    took = time.perf_counter() - started
    assert summary["status"] == "finished"
    assert took > 0.75 * cfg.plan_minutes * 60  # counted as step time, the plan ended the run at about a third


def test_the_profile_times_steps_after_the_first_ones(tmp_path, corpus):
    """--profile-steps N times steps 5 .. 4 + N: the first steps compile under --compile (a profile of steps
    1-8 gave a compiled step's decoder forward 80%); its shares split the profiled steps' time."""
    cfg = config(tmp_path, corpus, max_steps=8, profile_steps=3, eval_every=100, save_every=100)
    Trainer(cfg, backbone=tiny_backbone("llama")).train()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    (profile,) = [r for r in rows if r["kind"] == "profile"]
    assert profile["step"] == PROFILE_AFTER + 3 and profile["steps"] == 3
    shares = {k: v for k, v in profile.items() if k.startswith("share_")}
    assert {"share_encoder", "share_compressor", "share_decoder_forward", "share_decoder_backward"} <= set(shares)
    assert sum(shares.values()) == pytest.approx(1.0)


def test_kl_can_distil_a_trained_teacher_instead_of_the_frozen_model(tmp_path, qa_file):
    """--teacher: the KL term reads a prompt-tuned full-context teacher; the bounds gain its CE and F1."""
    from comprexit.methods.trainable import encoder_class
    from comprexit.training.objectives import encoder_teacher_states, frozen_pass

    backbone = tiny_backbone("llama")
    teacher = encoder_class("prompt-tuning").for_backbone(backbone)
    with torch.no_grad():
        teacher.tokens.normal_(0, 1.0)  # a teacher unlike the plain frozen model
    teacher.save_pretrained(tmp_path / "teacher")
    cfg = TrainConfig(phase="sft", data=[str(qa_file)], output_dir=str(tmp_path / "sft"), lr=3e-3, batch_size=4,
                      max_steps=3, compressor={"window": 32}, validation_permille=200, eval_every=3, save_every=100,
                      log_every=1, kl_weight=1.0, teacher=str(tmp_path / "teacher"))
    trainer = Trainer(cfg, backbone=backbone)
    trainer.train()
    bounds = json.loads((tmp_path / "sft" / "bounds.json").read_text())
    assert {"ce_teacher", "f1_teacher"} <= set(bounds) and bounds["ce_teacher"] != bounds["ce_full_context"]
    rows = [json.loads(line) for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert all("kl" in r for r in rows if r["kind"] == "train")
    assert "gap_closed_teacher" in next(r for r in rows if r["kind"] == "validation")
    examples = trainer.split.validation[:3]
    _, plain, _ = frozen_pass(backbone, examples, states=False, teacher=True)
    distilled = encoder_teacher_states(backbone, trainer.teacher, examples)
    assert plain.shape == distilled.shape and not torch.allclose(plain, distilled)


def test_a_teacher_without_kl_is_refused(tmp_path, qa_file):
    from comprexit import ConfigError

    with pytest.raises(ConfigError, match="teacher is only read by the KL term"):
        TrainConfig(phase="sft", data=[str(qa_file)], teacher=str(tmp_path))


def test_a_missing_teacher_is_refused_before_the_backbone_loads(tmp_path, qa_file):
    from comprexit.errors import CheckpointError

    config = TrainConfig(phase="sft", data=[str(qa_file)], output_dir=str(tmp_path / "run"), kl_weight=1.0,
                         teacher=str(tmp_path / "no-teacher"), backbone=str(tmp_path / "no-backbone"))
    with pytest.raises(CheckpointError, match="^teacher: compressor folder not found"):
        Trainer(config)


def test_snapshots_keep_the_weights_of_every_nth_step(tmp_path, corpus):
    backbone = tiny_backbone("llama")
    Trainer(config(tmp_path, corpus, max_steps=6, snapshot_every=2, eval_every=100, save_every=100), backbone=backbone).train()
    snapshots = sorted(p.name for p in (tmp_path / "run" / "snapshots").iterdir())
    assert snapshots == ["step-0000002", "step-0000004", "step-0000006"]
    first, last = (load_file(tmp_path / "run" / "snapshots" / s / "comprexit.safetensors") for s in (snapshots[0], snapshots[-1]))
    assert any(not torch.equal(first[k], last[k]) for k in first)
