"""The training loop: frozen backbone, trainable context encoder, accelerate for devices and precision.

What trains is any registered method's `ContextEncoder` (`TrainConfig.method`): ComprExIT,
one of its ablations, or a baseline. Data, objectives, checkpoints, resume, validation and
best-checkpoint selection are the same for all of them.

One command runs on a CPU, one GPU or several (`accelerate launch` or torchrun, data
parallel). A step is one global batch: the same examples in the same order whatever the
number of processes. Each process takes its share in micro-batches of `batch_size`,
accumulating gradients locally (`no_sync`) and averaging them once per step; every loss is
normalised by the token count of the whole global batch, which every process computes from
the batch itself, so 1, 2 or 4 GPUs give the same update and a run resumes on a machine of
another size. Only the main process writes checkpoints, metrics and plots.

The step avoids host synchronisation: losses and gradient norms stay on the GPU and are read
only at logging steps, so the CPU can queue the next micro-batch while the GPU works.
"""

from __future__ import annotations

import json
import math
import random
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from ..backbone import Backbone
from ..data.mixture import epoch_indices, long_count
from ..data.token_cache import tokenized_corpus
from ..data.qa import QADataset
from ..errors import CheckpointError, ConfigError
from ..evaluation.report import environment
from ..evaluation.runner import EvalSettings, evaluate
from ..methods import create_method
from ..methods.trainable import ContextEncoder, encoder_class, load_encoder
from . import checkpoints
from .compiled import check_compiler, compiled_backbone
from .config import TrainConfig
from .data import (LONG_VALIDATION_SPANS, Example, ExampleSet, LongNTP, Split, bucketed_batches, distractor_sources,
                   load_ntp, load_sft, long_ntp_data, long_validation_questions)
from .objectives import (AutoencodeMarker, LossWeights, Timer, batch_losses, combined_loss, gap_closed, reference_losses,
                         teacher_losses)
from .plots import plot_run
from .preflight import check_teacher


# With plan_minutes, the speed between these two steps (counted from the run's start, after the
# first steps' warm-up and before any validation) sets the step count, and this share of the
# time budget is planned for steps (the rest: validations, checkpoints).
PLAN_PROBE = (5, 25)
# The ids of the held-out questions an SFT run validates on (and selects its best weights by), in its
# run folder: `comprexit eval --exclude-questions` leaves them out of a later decision.
VALIDATION_QUESTIONS = "validation_questions.json"
PLAN_SHARE = 0.9
# A first plan underestimates: on 4 H100s a run's speed rose from ~600 to ~1,400 examples/s over its
# first 400 steps (new batch shapes, the allocator growing), and a 6-minute plan trained for 3. So the
# plan is revised after each validation until half of it has run, from the steps' own time since the last
# revision; the time of validations and checkpoints so far is spread over the steps trained in this call.
# (Counting a validation as step time planned 512 steps for 5 minutes when a revision came 25 steps before a
# validation: the eighth lease, results/training/2026-12-07-eighth.)
PLAN_REVISE_UNTIL = 0.5
# ... and every this many steps between validations: with --compile on one H100 the probe's steps 5-25 held a
# recompilation and ran at 0.86 s a step against a steady 0.29, so the first plan was a third of the time, and in a
# 7-minute plan the first validation (step 250) would come after half of it, too late to revise
# (results/training/2026-12-07-h100-seventh).
PLAN_REVISE_EVERY = 100
# --profile-steps N times steps PROFILE_AFTER + 1 .. PROFILE_AFTER + N: the first steps compile under --compile (the
# seventh lease's profile of steps 1-8 gave the decoder forward 80% of a compiled step) and grow the allocator.
PROFILE_AFTER = 4


@dataclass
class Position:
    """Where the run is: optimizer steps taken, and the next global batch (epoch, index)."""

    step: int = 0
    epoch: int = 0
    batch: int = 0


class Trainer:
    def __init__(self, config: TrainConfig, backbone: Backbone | None = None, resume: bool = False):
        self.config = config
        self.run_dir = Path(config.output_dir)
        precision = config.mixed_precision
        if precision == "auto":
            precision = "bf16" if torch.cuda.is_available() else "no"
        # cpu=True when there is no GPU: accelerate then runs several processes over gloo (MULTI_CPU)
        self.accelerator = Accelerator(mixed_precision=precision, cpu=not torch.cuda.is_available())
        self.world, self.rank = self.accelerator.num_processes, self.accelerator.process_index
        self.accumulation = self._accumulation()
        self.global_batch = config.batch_size * self.accumulation * self.world
        set_seed(config.seed)
        self.is_main = self.accelerator.is_main_process
        self.weights = LossWeights(config.ce_weight, config.kl_weight, config.ae_weight)
        # refuse an untrainable method, an unsupported objective or an unknown ablation before loading anything
        self.encoder_class = encoder_class(config.method)
        self.encoder_class.check_objectives({"ce": self.weights.ce, "kl": self.weights.kl, "ae": self.weights.ae})
        self.encoder_class.check_ablation(config.ablation)
        if config.teacher is not None:  # before the backbone loads, also for callers of the Python API
            check_teacher(config.teacher)
        if config.compile:
            check_compiler(self.accelerator.device)
        self.backbone = backbone or Backbone.load(config.backbone, device=self.accelerator.device)
        if config.compile:  # a view: a backbone passed in stays eager for its other users
            self.backbone = compiled_backbone(self.backbone)
        self.teacher = self._load_teacher()
        started = time.perf_counter()
        self._build_token_caches()
        self.long_notes: list[str] = []  # what long validation leaves out, said once (see _long_ntp)
        self.split = self._load_data()
        self.data_seconds = time.perf_counter() - started
        self.val_questions = (QADataset("validation", self.split.held_out_questions, source="held-out train questions")
                              if config.phase == "sft" else None)
        self.val_long = self._long_validation_questions()
        self._build_model()
        self.position = Position()
        self.resume_from = checkpoints.latest_checkpoint(self.run_dir) if resume else None
        if resume and self.resume_from is None:
            raise CheckpointError(f"--resume: no checkpoint in {self.run_dir / 'checkpoints'}")
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "train_config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
            if self.val_questions is not None:  # so that a later decision can leave out what selection saw
                (self.run_dir / VALIDATION_QUESTIONS).write_text(
                    json.dumps(sorted(qa.qid for qa in self.val_questions)) + "\n")

    # ------------------------------------------------------------------ set-up
    def _load_teacher(self) -> ContextEncoder | None:
        """A trained encoder whose decoder distribution the KL term distils (frozen), or None."""
        if self.config.teacher is None:
            return None
        teacher = load_encoder(self.config.teacher, self.backbone).to(self.accelerator.device).eval()
        teacher.requires_grad_(False)
        return teacher

    def _build_token_caches(self) -> None:
        """The main process tokenises any corpus not yet cached while the others wait; then all read in parallel."""
        if self.config.phase != "ntp":
            return
        with self.accelerator.main_process_first():
            if self.is_main:
                for spec in self.config.data:
                    tokenized_corpus(spec, self.backbone.tokenizer, max_documents=self.config.max_corpus_documents)

    def _accumulation(self) -> int:
        c = self.config
        if c.global_batch_size is None:
            return c.grad_accum
        per_pass = c.batch_size * self.world
        if c.global_batch_size % per_pass:
            raise ConfigError(
                f"global_batch_size {c.global_batch_size} is not a multiple of batch_size {c.batch_size} x "
                f"{self.world} process(es): choose a batch_size that divides {c.global_batch_size // self.world}"
            )
        return c.global_batch_size // per_pass

    def _load_data(self) -> Split:
        c = self.config
        long = self._long_ntp() if c.phase == "ntp" and c.long_lengths else None
        if c.phase == "ntp":
            split = load_ntp(
                self.backbone, c.data, context_tokens=c.context_tokens, continuation_tokens=c.continuation_tokens,
                validation_permille=c.validation_permille, extra_qa=c.extra_ntp, val_examples=c.val_examples,
                max_documents=c.max_corpus_documents, show_progress=self.is_main, apart=long.held if long else None,
            )
        else:
            split = load_sft(
                self.backbone, c.data, context_budget=c.context_tokens, validation_permille=c.validation_permille,
                val_examples=c.val_examples, val_questions=c.val_questions,
            )
        if c.data_fractions is not None:  # the extra NTP source, if any, stays whole
            split.train = split.train.fractions(list(c.data_fractions) + [1.0] * len(split.train.sources), c.seed)
        if c.max_train_examples:
            split.train = split.train.head(c.max_train_examples)
        if not len(split.train):
            raise ConfigError(f"no training examples could be built from {c.data}")
        if not split.validation:
            raise ConfigError("the validation slice is empty: raise validation_permille")
        sources = len(split.train.sources)
        if c.data_weights is not None and len(c.data_weights) != sources:
            raise ConfigError(f"data_weights has {len(c.data_weights)} value(s) for {sources} sources ({split.train.names})")
        return self._with_long_sources(split, long) if c.long_lengths else split

    def _long_ntp(self) -> LongNTP:
        """With long_context_tokens, the long spans for training and validation (`long_ntp_data`).

        A length at which no held-out article gives a span is not validated: said once here (and
        in a note row of metrics.jsonl), the run goes on.
        """
        c = self.config
        long = long_ntp_data(self.backbone, c.data, c.long_lengths, continuation_tokens=c.continuation_tokens,
                             validation_permille=c.validation_permille, seed=c.seed,
                             validation_spans=min(LONG_VALIDATION_SPANS, c.val_examples),
                             max_documents=c.max_corpus_documents, show_progress=self.is_main)
        self.long_notes = [f"no long validation span of {length} tokens: the held-out articles of {c.data} are "
                           f"shorter, so ce@{length} is not reported" for length in long.too_short]
        if self.is_main:
            for note in self.long_notes:
                warnings.warn(note, stacklevel=2)
        return long

    def _with_long_sources(self, split: Split, long: LongNTP | None) -> Split:
        """The split with one long-context training source per (data file, length) after the usual ones."""
        c = self.config
        if long is not None:
            sources, validation = long.train, long.validation
        else:
            sources = distractor_sources(self.backbone, c.data, c.long_lengths, validation_permille=c.validation_permille,
                                         seed=c.seed, max_questions=c.distractor_questions)
            validation = {}
        if not sum(len(source) for source in sources):
            raise ConfigError(f"no long examples of {c.long_lengths} tokens could be built from {c.data}: "
                              "its documents are shorter")
        return Split(ExampleSet(split.train.sources + sources), split.validation, split.held_out_questions, len(sources),
                     validation)

    def _long_validation_questions(self) -> dict[int, QADataset]:
        """With distractor_tokens, the held-out questions among distractors at each length (see _validation_f1)."""
        if self.val_questions is None or not self.config.distractor_tokens:
            return {}
        found = long_validation_questions(self.backbone, self.split.held_out_questions, self.config.distractor_tokens,
                                          seed=self.config.seed)
        return {length: QADataset(f"validation@{length}", questions, source=f"held-out train questions at {length}")
                for length, questions in found.items()}

    def _build_model(self) -> None:
        c = self.config
        if c.init:
            # additive method config fields (reader tokens, chunk positions, a projector branch) turn on over the
            # trained weights
            encoder = self.encoder_class.from_pretrained(c.init, self.backbone, added=c.compressor or None)
        else:
            config = self.encoder_class.build_config(c.compressor, self.backbone.identity, c.ablation)
            encoder = self.encoder_class.for_backbone(self.backbone, config)
        if encoder.max_context_tokens is not None and c.context_tokens > encoder.max_context_tokens:
            raise ConfigError(
                f"context_tokens is {c.context_tokens}, but this {c.method} encoder takes contexts of at most "
                f"{encoder.max_context_tokens} tokens (its max_context_tokens)"
            )
        if c.gradient_checkpointing:
            encoder.enable_gradient_checkpointing()
        encoder.to(self.accelerator.device).train()
        self.trainable_parameters = encoder.parameter_count()
        marker = None
        if self.weights.ae > 0:
            marker = AutoencodeMarker(self.backbone.hidden_size, self.backbone.embedding_rms()).to(self.accelerator.device)
        params = [p for p in encoder.parameters() if p.requires_grad] + (list(marker.parameters()) if marker else [])
        fused = self.accelerator.device.type == "cuda"  # one kernel for the whole update on a GPU
        optimizer = torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay, fused=fused)
        self.batches_per_epoch = len(self._epoch_batches(0))
        if self.batches_per_epoch < 1:
            raise ConfigError(f"{len(self.split.train)} examples give no global batch of {self.global_batch}")
        self.total_steps = c.max_steps or max(1, math.ceil(c.epochs * self.batches_per_epoch))
        self.planned = c.plan_minutes is None
        # The scheduler stays unprepared (we step it once per optimizer step ourselves); the
        # autoencoding marker is used outside the encoder's forward, so it is not wrapped for data
        # parallelism and its gradient is averaged by hand.
        self.encoder, self.optimizer = self.accelerator.prepare(encoder, optimizer)
        self.scheduler = self._schedule(self.total_steps)
        self.marker = marker

    def _schedule(self, total_steps: int, done: int = 0):
        """Linear warm-up and decay over `total_steps`, advanced past the `done` steps already taken."""
        optimizer = getattr(self.optimizer, "optimizer", self.optimizer)  # the torch optimizer inside accelerate's wrapper
        scheduler = get_linear_schedule_with_warmup(optimizer, int(self.config.warmup_ratio * total_steps), total_steps)
        for _ in range(done):
            scheduler.step()
        return scheduler

    def _plan(self, step: int, seconds_per_step: float, elapsed: float, share: float = PLAN_SHARE) -> None:
        """Fix the step count so that training ends `plan_minutes` after it started, at the measured speed.

        Validations and checkpoints also take time: `share` of the time left goes to steps. On
        several processes the slowest one's speed plans for all.
        """
        if self.world > 1:  # every process must plan the same step count, or their collectives fall out of step
            measured = torch.tensor([seconds_per_step, elapsed], device=self.accelerator.device)
            seconds_per_step, elapsed = self.accelerator.reduce(measured, reduction="max").tolist()
        left = self.config.plan_minutes * 60 - elapsed
        self.total_steps = max(step + 1, step + int(left * share / seconds_per_step))
        self.scheduler = self._schedule(self.total_steps, done=step)
        self.planned = True
        self.log({"kind": "plan", "step": step, "seconds_per_step": round(seconds_per_step, 4),
                  "total_steps": self.total_steps, "plan_minutes": self.config.plan_minutes})

    def _revise_plan(self, step: int, revision: "_Revision", started: float, aside: float, steps_this_call: int
                     ) -> "_Revision | None":
        """Plan again from the steps' speed since the last plan, plus the time spent aside from steps
        (`aside` seconds so far: validations, checkpoints) per step of this call; None once half has run.
        Every process calls it at the same step, so their plans stay one."""
        if step >= PLAN_REVISE_UNTIL * self.total_steps:
            return None
        _drain(self.accelerator.device)
        now = time.perf_counter()
        stepping = (now - revision.time - (aside - revision.aside)) / (step - revision.step)
        self._plan(step, stepping + aside / steps_this_call, now - started)
        return _Revision(step, now, aside)

    @property
    def unwrapped(self) -> ContextEncoder:
        return self.accelerator.unwrap_model(self.encoder)

    def _trainable_state(self) -> dict[str, torch.nn.Parameter]:
        """Every trained tensor by name: the encoder's trainable parameters and the marker."""
        state = {n: p for n, p in self.unwrapped.named_parameters() if p.requires_grad}
        if self.marker is not None:
            state["marker.vector"] = self.marker.vector
        return state

    # ------------------------------------------------------------------ data order
    def _train_at(self, epoch: int) -> ExampleSet:
        """The training set of an epoch, in `split.train` from now on: sources drawn per epoch (distractor
        layouts) drawn for it from (seed, epoch), in place of the last epoch's draw (one draw is held)."""
        started = time.perf_counter()
        self.split.train = self.split.train.at_epoch(epoch)
        self.data_seconds += time.perf_counter() - started  # a redraw's time counts as data time
        return self.split.train

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        """The global batches of an epoch (indices into `_train_at(epoch)`), the same on every process.

        Long-context examples (the last `split.long_sources` sources) join as `long_share` of the
        epoch, batched per source, so that a batch holds examples of one length.
        """
        c, train = self.config, self._train_at(epoch)
        seed = c.seed * 100003 + epoch
        usual = len(train.sources) - self.split.long_sources
        indices = epoch_indices(train.sizes[:usual], c.data_weights, c.seed, epoch)
        if not self.split.long_sources:
            return bucketed_batches(indices, train.lengths, self.global_batch, seed=seed)
        sizes = train.sizes[usual:]
        count = long_count(len(indices), c.long_share, sum(sizes))
        long = train.offsets[usual] + epoch_indices(sizes, None, c.seed, epoch, total=count, stream=1)
        source = np.searchsorted(train.offsets, long, side="right") - 1
        groups = ([] if c.long_share >= 1 else [indices]) + [long[source == k] for k in range(usual, len(sizes) + usual)]
        batches = [batch for k, group in enumerate(groups)
                   for batch in bucketed_batches(group, train.lengths, self.global_batch, seed=seed + k)]
        random.Random(seed).shuffle(batches)
        return batches

    def _micro_batches(self, examples: list[Example]) -> list[list[Example]]:
        """This process's micro-batches of a global batch: chunk c, process k take slice c * world + k.

        A batch of long examples (one length per batch, so every process sees the same kind) is cut
        further into passes of `long_batch_size`: more passes, the same examples and gradient.
        """
        size = self.config.batch_size
        slices = [examples[(c * self.world + self.rank) * size : (c * self.world + self.rank + 1) * size]
                  for c in range(self.accumulation)]
        smaller = self.config.long_batch_size
        if smaller is None or smaller >= size or not any(len(e.context) > self.config.context_tokens for e in examples):
            return slices
        return [part[i : i + smaller] for part in slices for i in range(0, len(part), smaller)]

    def _loss_keys(self) -> list[str]:
        """The losses a batch reports: CE always, KL and autoencoding when weighted."""
        return ["ce"] + (["kl"] if self.weights.kl > 0 else []) + (["ae"] if self.marker is not None else [])

    def _global_token_counts(self, examples: list[Example]) -> dict[str, float]:
        """Scored tokens of each loss over the global batch: the denominators of the step's means."""
        scored = float(sum(e.scored for e in examples))
        autoencoded = float(sum(min(len(e.context), self.config.ae_tokens) for e in examples))
        return {k: autoencoded if k == "ae" else scored for k in self._loss_keys()}

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> None:
        """The main process writes the state (files of at most checkpoint_shard_mb); each process its generators."""
        self.accelerator.wait_for_everyone()
        staging = checkpoints.staging_path(self.run_dir, self.position.step)
        if self.is_main:
            checkpoints.staging_dir(self.run_dir, self.position.step)
        self.accelerator.wait_for_everyone()
        checkpoints.save_rng(staging, self.rank)
        if self.is_main:
            checkpoints.save_training_state(staging, self._trainable_state(), self.optimizer, self.scheduler,
                                            self.config.checkpoint_shard_mb)
        self.accelerator.wait_for_everyone()
        if self.is_main:
            state = {"step": self.position.step, "epoch": self.position.epoch, "batch": self.position.batch,
                     "total_steps": self.total_steps, "planned": self.planned, "best_val": self.best_val,
                     "processes": self.world,
                     "config": self.config.to_dict()}
            checkpoints.commit_checkpoint(self.run_dir, staging, self.position.step, state)
        self.accelerator.wait_for_everyone()

    def _restore(self) -> None:
        state = checkpoints.read_state(self.resume_from)
        if self.config.plan_minutes is not None and state.get("planned"):  # keep the schedule planned before the pause
            self.total_steps, self.planned = state["total_steps"], True
            self.scheduler = self._schedule(self.total_steps)
        elif state["total_steps"] != self.total_steps:
            raise CheckpointError(
                f"checkpoint {self.resume_from} planned {state['total_steps']} steps, this config plans "
                f"{self.total_steps}: resume with the run's own train_config.json"
            )
        checkpoints.load_training_state(self.resume_from, self._trainable_state(), self.optimizer, self.scheduler)
        if not checkpoints.load_rng(self.resume_from, self.rank):
            self.log({"kind": "note", "step": state["step"], "note": f"resumed on {self.world} processes from a "
                      f"checkpoint of {state.get('processes')}: random generators start afresh"})
        self.position = Position(state["step"], state["epoch"], state["batch"])
        self.best_val = state.get("best_val", float("inf"))

    # ------------------------------------------------------------------ validation
    def _shard(self, items: list) -> list:
        """This process's share of a validation list (every process validates a part; results are summed)."""
        return items[self.rank :: self.world]

    @torch.no_grad()
    def validate(self) -> dict:
        self.encoder.eval()
        device = self.accelerator.device
        sums: dict[str, torch.Tensor] = {}
        tokens: dict[str, float] = {}
        batch = self.config.batch_size
        val = self._shard(self.split.validation)
        for start in range(0, len(val), batch):
            losses = batch_losses(self.backbone, self.encoder, val[start : start + batch], self.weights, self.marker,
                                  self.config.ae_tokens, teacher_encoder=self.teacher,
                                  chunk_tokens=self.config.context_tokens)
            for k, v in losses.sums.items():
                sums[k] = sums.get(k, torch.zeros((), device=device)) + v.float()
                tokens[k] = tokens.get(k, 0.0) + losses.tokens[k]
        keys = self._loss_keys()
        totals = torch.tensor([[float(sums.get(k, 0.0)), tokens.get(k, 0.0)] for k in keys], device=device)
        totals = self.accelerator.reduce(totals, reduction="sum") if self.world > 1 else totals
        row = {k: float(totals[i, 0] / totals[i, 1].clamp_min(1)) for i, k in enumerate(keys)}
        row["gap_closed"] = gap_closed(row["ce"], self.bounds)
        if "ce_teacher" in self.bounds:
            row["gap_closed_teacher"] = gap_closed(row["ce"], self.bounds, upper="ce_teacher")
        if self.split.long_validation:
            row.update(self._validation_long_ce(row["ce"]))
        if self.val_questions is not None and len(self.val_questions):
            row.update(self._validation_f1())
        self.encoder.train()
        return row

    def _validation_long_ce(self, ce: float) -> dict[str, float]:
        """With long_context_tokens, the CE of the held-out long spans' continuations at each length (`ce@LENGTH`,
        compressed chunk by chunk in chunks of context_tokens, as training reads them; the CE alone, whatever the
        objectives), and the score that selects the best checkpoint, `ce_selection`, the mean of the plain
        validation CE `ce` and every long one (lower is better). A length without held-out spans is left out."""
        c, device = self.config, self.accelerator.device
        lengths = list(self.split.long_validation)
        totals = torch.zeros(len(lengths), 2, device=device)  # (lengths, [CE sum, scored tokens])
        batch = c.long_batch_size or c.batch_size
        for k, length in enumerate(lengths):
            spans = self._shard(self.split.long_validation[length])
            for start in range(0, len(spans), batch):
                losses = batch_losses(self.backbone, self.encoder, spans[start : start + batch], LossWeights(ce=1.0),
                                      chunk_tokens=c.context_tokens)
                totals[k, 0] += losses.sums["ce"].float()
                totals[k, 1] += losses.tokens["ce"]
        totals = self.accelerator.reduce(totals, reduction="sum") if self.world > 1 else totals
        row = {f"ce@{length}": float(totals[k, 0] / totals[k, 1].clamp_min(1)) for k, length in enumerate(lengths)}
        scores = [ce] + list(row.values())
        row["ce_selection"] = sum(scores) / len(scores)
        return row

    def _validation_f1(self) -> dict[str, float]:
        """EM / F1 on the held-out questions, each process answering its share; with distractor_tokens also F1
        at each length (`f1@LENGTH`, compressed chunk by chunk as `comprexit eval` does), and the score that
        selects the best checkpoint, `f1_selection`, the mean over the plain questions and every length."""
        method = create_method(self.config.method, self.backbone, encoder=self.unwrapped)
        method.chunk_tokens = self.config.context_tokens  # long documents in the chunks the run trains on
        sets = [("", self.val_questions, self.config.context_tokens)]
        sets += [(f"@{length}", found, length) for length, found in self.val_long.items()]
        row = {}
        for suffix, questions, budget in sets:
            share = QADataset("validation", self._shard(questions.examples), source=questions.source)
            totals = torch.zeros(3, device=self.accelerator.device)
            if len(share):
                result = evaluate(method, {"validation": share}, EvalSettings(batch_size=64, context_budget=budget),
                                  show_progress=False)["datasets"]["validation"]
                totals += torch.tensor([result["em"] * len(share), result["f1"] * len(share), len(share)],
                                       device=totals.device)
            totals = self.accelerator.reduce(totals, reduction="sum") if self.world > 1 else totals
            row.update({f"em{suffix}": float(totals[0] / totals[2].clamp_min(1)),
                        f"f1{suffix}": float(totals[1] / totals[2].clamp_min(1))})
        if self.val_long:
            scores = [row["f1"]] + [row[f"f1@{length}"] for length in self.val_long]
            row["f1_selection"] = sum(scores) / len(scores)
        return row

    def _bounds(self) -> dict:
        path = self.run_dir / "bounds.json"
        if path.is_file():
            return json.loads(path.read_text())
        bounds = reference_losses(self.backbone, self.split.validation, self.config.batch_size)
        if self.teacher is not None:
            bounds["ce_teacher"] = teacher_losses(self.backbone, self.teacher, self.split.validation, self.config.batch_size)
        if self.val_questions is not None and len(self.val_questions):
            from ..methods.zero_shot import FullContext

            settings = EvalSettings(batch_size=64, context_budget=self.config.context_tokens)
            result = evaluate(FullContext(self.backbone), {"validation": self.val_questions}, settings, show_progress=False)
            bounds["f1_full_context"] = result["datasets"]["validation"]["f1"]
            if self.teacher is not None:
                method = create_method(self.teacher.method, self.backbone, encoder=self.teacher)
                result = evaluate(method, {"validation": self.val_questions}, settings, show_progress=False)
                bounds["f1_teacher"] = result["datasets"]["validation"]["f1"]
        if self.is_main:
            path.write_text(json.dumps(bounds, indent=2) + "\n")
        return bounds

    # ------------------------------------------------------------------ logging
    def log(self, row: dict) -> None:
        if self.is_main:
            with (self.run_dir / "metrics.jsonl").open("a") as handle:
                handle.write(json.dumps(row) + "\n")

    def _start_log(self) -> None:
        c, train = self.config, self.split.train
        self.log({"kind": "environment", "step": 0, **environment(self.backbone.device), "processes": self.world})
        self.log({"kind": "bounds", "step": 0, **self.bounds, "train_examples": len(train),
                  "validation_examples": len(self.split.validation), "total_steps": self.total_steps,
                  "method": c.method, "trainable_parameters": self.trainable_parameters,
                  "global_batch": self.global_batch, "micro_batch": c.batch_size, "accumulation": self.accumulation,
                  "sources": dict(zip(train.names, train.sizes)), "data_weights": c.data_weights,
                  "long_context": {"long_context_tokens": c.long_context_tokens, "distractor_tokens": c.distractor_tokens,
                                   "long_share": c.long_share if c.long_lengths else None,
                                   "chunk_tokens": c.context_tokens},
                  "data_seconds": round(self.data_seconds, 2), **self._long_validation_sizes()})
        for note in self.long_notes:
            self.log({"kind": "note", "step": 0, "note": note})

    def _long_validation_sizes(self) -> dict:
        """For the bounds row of a run validated at long lengths: the held-out examples at each length."""
        if self.split.long_validation:
            return {"long_validation": {length: len(spans) for length, spans in self.split.long_validation.items()}}
        if self.val_long:
            return {"long_validation": {length: len(questions) for length, questions in self.val_long.items()}}
        return {}

    # ------------------------------------------------------------------ the loop
    def train(self, stop_at_step: int | None = None) -> dict:
        """Run to the planned step count, or pause (checkpointed) after `max_minutes` or at `stop_at_step`."""
        c = self.config
        self.best_val = float("inf")
        if self.resume_from is not None:
            self._restore()
        self.bounds = self._bounds()
        if self.resume_from is None:
            self._start_log()
        started = time.perf_counter()
        timer = Timer(enabled=c.profile_steps > 0)
        window = _Window(self.accelerator.device)
        train_seconds, train_examples = 0.0, 0
        first_step, probe = self.position.step, {}
        revision = None  # the last plan, while the plan may still be revised
        aside = 0.0  # seconds of this call spent in validations and checkpoints, not in steps
        bar = tqdm(total=self.total_steps, initial=self.position.step, disable=not self.is_main, desc=f"train {c.phase}")
        paused = False
        while self.position.step < self.total_steps and not paused:
            batches = self._epoch_batches(self.position.epoch)
            while self.position.batch < len(batches) and self.position.step < self.total_steps:
                tick = time.perf_counter()
                examples = [self.split.train[i] for i in batches[self.position.batch]]
                grad_norm = self._step(examples, window, timer)
                self.position.batch += 1
                self.position.step += 1
                step = self.position.step
                elapsed = time.perf_counter() - tick
                window.seconds += elapsed
                window.examples += len(examples)
                window.tokens_seen += sum(e.length for e in examples)
                train_seconds += elapsed
                train_examples += len(examples)
                if not self.planned and step - first_step in PLAN_PROBE:
                    _drain(self.accelerator.device)  # time the device's work, not how fast the host queues it
                    probe[step - first_step] = time.perf_counter()
                if not self.planned and step - first_step == PLAN_PROBE[1]:
                    self._plan(step, (probe[PLAN_PROBE[1]] - probe[PLAN_PROBE[0]]) / (PLAN_PROBE[1] - PLAN_PROBE[0]),
                               time.perf_counter() - started)
                    bar.total = self.total_steps
                    revision = _Revision(step, probe[PLAN_PROBE[1]], aside)
                bar.update(1)
                if step % c.log_every == 0 or step == self.total_steps:
                    window.seconds += _drain(self.accelerator.device)  # the queued work is part of the window's time
                    row = window.row(step, self.position.epoch, self.scheduler.get_last_lr()[0], grad_norm,
                                     self.weights, self.accelerator)
                    self.log(row)
                    bar.set_postfix(loss=f"{row['loss']:.3f}", ex_s=f"{row['examples_per_second']:.0f}")
                    window = _Window(self.accelerator.device)
                if step == PROFILE_AFTER + c.profile_steps and timer.seconds:
                    total = sum(timer.seconds.values())
                    self.log({"kind": "profile", "step": step, "steps": c.profile_steps,
                              **{f"share_{k}": v / total for k, v in timer.seconds.items()},
                              "seconds_per_step": total / c.profile_steps})
                set_aside = time.perf_counter()
                validated = step % c.eval_every == 0 or step == self.total_steps
                if validated:
                    self._validate_and_select(step)
                aside += time.perf_counter() - set_aside
                if revision is not None and step < self.total_steps and (
                        validated or step - revision.step >= PLAN_REVISE_EVERY):
                    revision = self._revise_plan(step, revision, started, aside, step - first_step)
                    bar.total = self.total_steps
                set_aside = time.perf_counter()  # a checkpoint after the revision holds the revised plan
                if step % c.save_every == 0 and step < self.total_steps:
                    self.save_checkpoint()
                if c.snapshot_every and step % c.snapshot_every == 0 and self.is_main:
                    self.unwrapped.save_pretrained(self.run_dir / "snapshots" / f"step-{step:07d}")
                aside += time.perf_counter() - set_aside
                out_of_time = c.max_minutes is not None and (time.perf_counter() - started) / 60 > c.max_minutes
                if out_of_time or step == stop_at_step:
                    paused = self.position.step < self.total_steps
                    break
            if self.position.batch >= len(batches):
                self.position.epoch += 1
                self.position.batch = 0
        bar.close()
        self.save_checkpoint()
        summary = {"status": "paused" if paused else "finished", "step": self.position.step,
                   "method": c.method, "trainable_parameters": self.trainable_parameters,
                   "total_steps": self.total_steps, "train_seconds_this_call": round(train_seconds, 1),
                   "examples_per_second": round(train_examples / train_seconds, 2) if train_seconds else None,
                   "processes": self.world, "data_seconds_this_call": round(self.data_seconds, 2)}
        if self.backbone.device.type == "cuda":
            summary["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated(self.backbone.device) / 2**30, 2)
        if not paused and self.is_main:
            self.unwrapped.save_pretrained(self.run_dir / "final")
        if self.is_main:
            plot_run(self.run_dir / "metrics.jsonl", self.run_dir / "curves.png", title=f"{self.run_dir.name} ({c.phase})")
            self.log({"kind": "summary", **summary})
        return summary

    def _step(self, examples: list[Example], window: "_Window", timer: Timer) -> torch.Tensor:
        """One optimizer step over a global batch; returns the gradient norm (a device tensor)."""
        c = self.config
        timer.enabled = PROFILE_AFTER <= self.position.step < PROFILE_AFTER + c.profile_steps
        # Each process's loss is normalised by the global token counts times the number of
        # processes: data parallelism then averages gradients into the exact global-batch mean.
        denominators = {k: v / self.world for k, v in self._global_token_counts(examples).items()}
        micro = self._micro_batches(examples)
        for index, chunk in enumerate(micro):
            last = index == len(micro) - 1
            with nullcontext() if last else self.accelerator.no_sync(self.encoder):
                losses = batch_losses(self.backbone, self.encoder, chunk, self.weights, self.marker, c.ae_tokens, timer,
                                      teacher_encoder=self.teacher, chunk_tokens=c.context_tokens)
                window.add(losses)
                losses.tokens = denominators
                self.accelerator.backward(combined_loss(losses, self.weights))
            timer.mark("decoder_backward", self.backbone.device)
        if self.marker is not None and self.world > 1:
            self.marker.vector.grad = self.accelerator.reduce(self.marker.vector.grad, reduction="mean")
        grad_norm = self.accelerator.clip_grad_norm_(self.encoder.parameters(), c.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        timer.mark("update", self.backbone.device)
        return grad_norm

    def _validate_and_select(self, step: int) -> None:
        """Validate, and keep the weights in best/ when they score best so far: SFT by F1 (with distractor_tokens
        `f1_selection`, the mean of the plain and every long F1), NTP by CE (with long_context_tokens
        `ce_selection`, the mean of the plain CE and every long one, see _validation_long_ce)."""
        row = self.validate()
        self.log({"kind": "validation", "step": step, **row})
        score = -row.get("f1_selection", row["f1"]) if "f1" in row else row.get("ce_selection", row["ce"])
        if score < self.best_val:
            self.best_val = score
            if self.is_main:
                self.unwrapped.save_pretrained(self.run_dir / "best")
                (self.run_dir / "best" / "selection.json").write_text(json.dumps({"step": step, **row}, indent=2) + "\n")


def _drain(device: torch.device) -> float:
    """Wait for the device's queued work; return the seconds waited."""
    if device.type != "cuda":
        return 0.0
    start = time.perf_counter()
    torch.cuda.synchronize(device)
    return time.perf_counter() - start


class _Revision(NamedTuple):
    """Where the last plan was made: its step, its wall time, and the seconds set aside by then."""
    step: int
    time: float
    aside: float


class _Window:
    """Loss sums and token counts since the last log, kept on the device until a log reads them."""

    def __init__(self, device: torch.device):
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.tokens: dict[str, float] = {}
        self.examples, self.tokens_seen, self.seconds = 0, 0, 0.0

    def add(self, losses) -> None:
        for k, v in losses.sums.items():
            self.sums[k] = self.sums.get(k, torch.zeros((), device=self.device)) + v.detach().float()
            self.tokens[k] = self.tokens.get(k, 0.0) + float(losses.tokens[k])

    def row(self, step: int, epoch: int, lr: float, grad_norm: torch.Tensor, weights: LossWeights, accelerator) -> dict:
        """The logged row; the one place a step waits for the device (and, on several processes, reduces)."""
        keys = sorted(self.sums)
        totals = torch.stack([torch.stack([self.sums[k], torch.tensor(self.tokens[k], device=self.device)]) for k in keys])
        if accelerator.num_processes > 1:
            totals = accelerator.reduce(totals, reduction="sum")
        means = {k: float(totals[i, 0] / totals[i, 1].clamp_min(1)) for i, k in enumerate(keys)}
        loss = sum(getattr(weights, k) * v for k, v in means.items())
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss became {loss} by step {step}")
        processes = accelerator.num_processes
        return {"kind": "train", "step": step, "epoch": epoch, "loss": loss, "lr": lr, "grad_norm": float(grad_norm),
                **means, "examples_per_second": self.examples / self.seconds,
                "tokens_per_second": self.tokens_seen / self.seconds, "processes": processes}
