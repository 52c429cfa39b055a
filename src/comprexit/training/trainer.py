"""The training loop: frozen backbone, trainable context encoder, accelerate for devices and precision.

What trains is any registered method's `ContextEncoder` (`TrainConfig.method`): ComprExIT,
one of its ablations, or a baseline. Data, objectives, checkpoints, resume, validation and
best-checkpoint selection are the same for all of them.

One command runs on a CPU, one GPU or several (`accelerate launch`, data parallel): every
process reads its share of each global batch, gradients are averaged by accelerate, and
only the main process writes checkpoints, metrics and plots.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from ..backbone import Backbone
from ..errors import CheckpointError, ConfigError
from ..evaluation.data import QADataset
from ..evaluation.report import environment
from ..evaluation.runner import EvalSettings, evaluate
from ..methods import create_method
from ..methods.trainable import ContextEncoder, encoder_class
from . import checkpoints
from .config import TrainConfig
from .data import Split, bucketed_batches, load_ntp, load_sft, ntp_examples
from .objectives import AutoencodeMarker, LossWeights, Timer, batch_losses, combined_loss, gap_closed, reference_losses
from .plots import plot_run


@dataclass
class Position:
    """Where the run is: optimizer steps taken, and the next micro-batch (epoch, index)."""

    step: int = 0
    epoch: int = 0
    micro: int = 0


class Trainer:
    def __init__(self, config: TrainConfig, backbone: Backbone | None = None, resume: bool = False):
        self.config = config
        self.run_dir = Path(config.output_dir)
        precision = config.mixed_precision
        if precision == "auto":
            precision = "bf16" if torch.cuda.is_available() else "no"
        # cpu=True when there is no GPU: accelerate then runs several processes over gloo (MULTI_CPU)
        self.accelerator = Accelerator(
            mixed_precision=precision, gradient_accumulation_steps=config.grad_accum, cpu=not torch.cuda.is_available()
        )
        set_seed(config.seed)
        self.is_main = self.accelerator.is_main_process
        self.weights = LossWeights(config.ce_weight, config.kl_weight, config.ae_weight)
        # refuse an untrainable method, an unsupported objective or an unknown ablation before loading anything
        self.encoder_class = encoder_class(config.method)
        self.encoder_class.check_objectives({"ce": self.weights.ce, "kl": self.weights.kl, "ae": self.weights.ae})
        self.encoder_class.check_ablation(config.ablation)
        self.backbone = backbone or Backbone.load(config.backbone, device=self.accelerator.device)
        self.split, self.val_questions = self._load_data()
        self._build_model()
        self.position = Position()
        self.resume_from = checkpoints.latest_checkpoint(self.run_dir) if resume else None
        if resume and self.resume_from is None:
            raise CheckpointError(f"--resume: no checkpoint in {self.run_dir / 'checkpoints'}")
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "train_config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")

    # ------------------------------------------------------------------ set-up
    def _load_data(self) -> tuple[Split, QADataset | None]:
        c = self.config
        if c.phase == "ntp":
            split = load_ntp(
                self.backbone, c.data, context_tokens=c.context_tokens,
                continuation_tokens=c.continuation_tokens, validation_permille=c.validation_permille,
            )
            if c.extra_ntp:
                extra, _ = load_sft(self.backbone, c.extra_ntp, validation_permille=c.validation_permille)
                contexts = sorted({e.context for e in extra.train})
                split.train.extend(ntp_examples(contexts, c.context_tokens, c.continuation_tokens))
            questions = None
        else:
            split, held_out = load_sft(
                self.backbone, c.data, context_budget=c.context_tokens, validation_permille=c.validation_permille
            )
            questions = QADataset("validation", held_out[: c.val_questions], source="held-out train questions")
        split.validation = split.validation[: c.val_examples]
        if c.max_train_examples:
            split.train = split.train[: c.max_train_examples]
        if not split.train:
            raise ConfigError(f"no training examples could be built from {c.data}")
        if not split.validation:
            raise ConfigError("the validation slice is empty: raise validation_permille")
        return split, questions

    def _build_model(self) -> None:
        c = self.config
        if c.init:
            encoder = self.encoder_class.from_pretrained(c.init, self.backbone)
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
        optimizer = torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
        self.batches_per_epoch = len(self._epoch_batches(0))
        if self.batches_per_epoch < 1:
            raise ConfigError(
                f"{len(self.split.train)} examples give no global batch of {c.batch_size} x "
                f"{self.accelerator.num_processes} processes"
            )
        steps_per_epoch = max(1, self.batches_per_epoch // c.grad_accum)
        self.total_steps = c.max_steps or max(1, math.ceil(c.epochs * steps_per_epoch))
        scheduler = get_linear_schedule_with_warmup(
            optimizer, int(c.warmup_ratio * self.total_steps), self.total_steps
        )
        # The scheduler stays unprepared: we step it once per optimizer step ourselves (accelerate
        # would step it once per process). The autoencoding marker is used outside the
        # encoder's forward, so it is not wrapped for data parallelism; its gradient is
        # averaged by hand. Both are registered so that checkpoints hold their state.
        self.encoder, self.optimizer = self.accelerator.prepare(encoder, optimizer)
        self.scheduler = scheduler
        self.marker = marker
        self.accelerator.register_for_checkpointing(self.scheduler)
        if marker is not None:
            self.accelerator.register_for_checkpointing(marker)

    @property
    def unwrapped(self) -> ContextEncoder:
        return self.accelerator.unwrap_model(self.encoder)

    # ------------------------------------------------------------------ data order
    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        """This process's micro-batches of an epoch.

        Global batches of `batch_size x processes` examples are formed as on one process, and
        process k takes the k-th slice of each: N processes at batch b see exactly the
        examples that one process sees at batch N*b. A global batch too small to give every
        process an example is dropped.
        """
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        size = self.config.batch_size
        batches = bucketed_batches(self.split.train, size * world, seed=self.config.seed * 100003 + epoch)
        if world == 1:
            return batches
        return [b[rank * len(b) // world : (rank + 1) * len(b) // world] for b in batches if len(b) >= world]

    def _share_token_counts(self, losses) -> None:
        """Normalise by the global token count, so averaging gradients over processes gives the global mean."""
        if self.accelerator.num_processes == 1:
            return
        keys = sorted(losses.tokens)
        counts = torch.tensor([float(losses.tokens[k]) for k in keys], device=self.accelerator.device)
        counts = self.accelerator.reduce(counts, reduction="sum") / self.accelerator.num_processes
        losses.tokens = dict(zip(keys, counts.tolist()))

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> None:
        """Every process writes its part (accelerate keeps one RNG file per process) into one staging folder."""
        self.accelerator.wait_for_everyone()
        if self.is_main:
            checkpoints.staging_dir(self.run_dir, self.position.step)
        self.accelerator.wait_for_everyone()
        staging = checkpoints.staging_path(self.run_dir, self.position.step)
        self.accelerator.save_state(str(staging))
        if self.is_main:
            self.unwrapped.save_pretrained(staging / "compressor")
            state = {"step": self.position.step, "epoch": self.position.epoch, "micro": self.position.micro,
                     "total_steps": self.total_steps, "best_val": self.best_val, "config": self.config.to_dict()}
            checkpoints.commit_checkpoint(self.run_dir, staging, self.position.step, state)
        self.accelerator.wait_for_everyone()

    def _restore(self) -> None:
        self.accelerator.load_state(str(self.resume_from))
        state = checkpoints.read_state(self.resume_from)
        if state["total_steps"] != self.total_steps:
            raise CheckpointError(
                f"checkpoint {self.resume_from} planned {state['total_steps']} steps, this config plans "
                f"{self.total_steps}: resume with the run's own train_config.json"
            )
        self.position = Position(state["step"], state["epoch"], state["micro"])
        self.best_val = state.get("best_val", float("inf"))

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self) -> dict:
        self.encoder.eval()
        sums: dict[str, float] = {}
        tokens: dict[str, int] = {}
        batch = self.config.batch_size
        val = self.split.validation
        for start in range(0, len(val), batch):
            losses = batch_losses(self.backbone, self.encoder, val[start : start + batch], self.weights, self.marker,
                                  self.config.ae_tokens)
            for k, v in losses.sums.items():
                sums[k] = sums.get(k, 0.0) + float(v)
                tokens[k] = tokens.get(k, 0) + losses.tokens[k]
        row = {k: sums[k] / tokens[k] for k in sums}
        row["gap_closed"] = gap_closed(row["ce"], self.bounds)
        if self.val_questions is not None and len(self.val_questions):
            method = create_method(self.config.method, self.backbone, encoder=self.unwrapped)
            result = evaluate(method, {"validation": self.val_questions}, EvalSettings(batch_size=64, context_budget=self.config.context_tokens), show_progress=False)
            row["em"], row["f1"] = result["datasets"]["validation"]["em"], result["datasets"]["validation"]["f1"]
        self.encoder.train()
        return row

    def _bounds(self) -> dict:
        path = self.run_dir / "bounds.json"
        if path.is_file():
            return json.loads(path.read_text())
        bounds = reference_losses(self.backbone, self.split.validation, self.config.batch_size)
        if self.val_questions is not None and len(self.val_questions):
            from ..methods.zero_shot import FullContext

            result = evaluate(FullContext(self.backbone), {"validation": self.val_questions}, EvalSettings(batch_size=64, context_budget=self.config.context_tokens),
                              show_progress=False)
            bounds["f1_full_context"] = result["datasets"]["validation"]["f1"]
        if self.is_main:
            path.write_text(json.dumps(bounds, indent=2) + "\n")
        return bounds

    # ------------------------------------------------------------------ logging
    def log(self, row: dict) -> None:
        if self.is_main:
            with (self.run_dir / "metrics.jsonl").open("a") as handle:
                handle.write(json.dumps(row) + "\n")

    # ------------------------------------------------------------------ the loop
    def train(self, stop_at_step: int | None = None) -> dict:
        """Run to the planned step count, or pause (checkpointed) after `max_minutes` or at `stop_at_step`."""
        c = self.config
        self.best_val = float("inf")
        if self.resume_from is not None:
            self._restore()
        self.bounds = self._bounds()
        if self.resume_from is None:
            self.log({"kind": "environment", "step": 0, **environment(self.backbone.device),
                      "processes": self.accelerator.num_processes})
            self.log({"kind": "bounds", "step": 0, **self.bounds, "train_examples": len(self.split.train),
                      "validation_examples": len(self.split.validation), "total_steps": self.total_steps,
                      "method": c.method, "trainable_parameters": self.trainable_parameters})
        started = time.perf_counter()
        timer = Timer(enabled=c.profile_steps > 0)
        window = {"examples": 0, "tokens": 0, "seconds": 0.0, "loss": 0.0, "parts": {}, "n": 0}
        train_seconds, train_examples = 0.0, 0
        bar = tqdm(total=self.total_steps, initial=self.position.step, disable=not self.is_main, desc=f"train {c.phase}")
        paused = False
        while self.position.step < self.total_steps:
            batches = self._epoch_batches(self.position.epoch)
            while self.position.micro < len(batches) and self.position.step < self.total_steps:
                tick = time.perf_counter()
                examples = [self.split.train[i] for i in batches[self.position.micro]]
                timer.enabled = self.position.step < c.profile_steps
                with self.accelerator.accumulate(self.encoder):
                    losses = batch_losses(self.backbone, self.encoder, examples, self.weights, self.marker,
                                          c.ae_tokens, timer)
                    self._share_token_counts(losses)
                    loss = combined_loss(losses, self.weights)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"loss became {loss.item()} at step {self.position.step}")
                    self.accelerator.backward(loss)
                    grad_norm = None
                    if self.accelerator.sync_gradients and self.marker is not None and self.accelerator.num_processes > 1:
                        self.marker.vector.grad = self.accelerator.reduce(self.marker.vector.grad, reduction="mean")
                    if self.accelerator.sync_gradients:
                        grad_norm = self.accelerator.clip_grad_norm_(self.encoder.parameters(), c.max_grad_norm)
                    self.optimizer.step()
                    if self.accelerator.sync_gradients:
                        self.scheduler.step()
                    self.optimizer.zero_grad()
                timer.mark("decoder_backward_and_update", self.backbone.device)
                self.position.micro += 1
                elapsed = time.perf_counter() - tick
                window["examples"] += len(examples)
                window["tokens"] += sum(e.length for e in examples)
                window["seconds"] += elapsed
                window["loss"] += float(loss.detach())
                window["n"] += 1
                for k in losses.sums:
                    window["parts"][k] = window["parts"].get(k, 0.0) + float(losses.mean(k).detach())
                train_seconds += elapsed
                train_examples += len(examples)
                if not self.accelerator.sync_gradients:
                    continue
                self.position.step += 1
                bar.update(1)
                step = self.position.step
                if step % c.log_every == 0 or step == self.total_steps:
                    row = {"kind": "train", "step": step, "epoch": self.position.epoch,
                           "loss": window["loss"] / window["n"], "lr": self.scheduler.get_last_lr()[0],
                           "grad_norm": float(grad_norm) if grad_norm is not None else None,
                           "examples_per_second": window["examples"] * self.accelerator.num_processes / window["seconds"],
                           "tokens_per_second": window["tokens"] * self.accelerator.num_processes / window["seconds"]}
                    row.update({k: v / window["n"] for k, v in window["parts"].items()})
                    self.log(row)
                    bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{row['lr']:.2e}", tok_s=f"{row['tokens_per_second']:.0f}")
                    window = {"examples": 0, "tokens": 0, "seconds": 0.0, "loss": 0.0, "parts": {}, "n": 0}
                if step == c.profile_steps and timer.seconds:
                    total = sum(timer.seconds.values())
                    self.log({"kind": "profile", "step": step, "steps": c.profile_steps,
                              **{f"share_{k}": v / total for k, v in timer.seconds.items()},
                              "seconds_per_step": total / c.profile_steps})
                if step % c.eval_every == 0 or step == self.total_steps:
                    self._validate_and_select(step)
                if step % c.save_every == 0 and step < self.total_steps:
                    self.save_checkpoint()
                out_of_time = c.max_minutes is not None and (time.perf_counter() - started) / 60 > c.max_minutes
                if out_of_time or step == stop_at_step:
                    paused = self.position.step < self.total_steps
                    break
            if paused:
                break
            if self.position.micro >= len(batches):
                self.position.epoch += 1
                self.position.micro = 0
        bar.close()
        self.save_checkpoint()
        summary = {"status": "paused" if paused else "finished", "step": self.position.step,
                   "method": c.method, "trainable_parameters": self.trainable_parameters,
                   "total_steps": self.total_steps, "train_seconds_this_call": round(train_seconds, 1),
                   "examples_per_second": round(train_examples * self.accelerator.num_processes / train_seconds, 2)
                   if train_seconds else None}
        if self.backbone.device.type == "cuda":
            summary["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated(self.backbone.device) / 2**30, 2)
        if not paused and self.is_main:
            self.unwrapped.save_pretrained(self.run_dir / "final")
        if self.is_main:
            plot_run(self.run_dir / "metrics.jsonl", self.run_dir / "curves.png", title=f"{self.run_dir.name} ({c.phase})")
            self.log({"kind": "summary", **summary})
        return summary

    def _validate_and_select(self, step: int) -> None:
        row = self.validate()
        self.log({"kind": "validation", "step": step, **row})
        score = -row["f1"] if "f1" in row else row["ce"]
        if score < self.best_val:
            self.best_val = score
            if self.is_main:
                self.unwrapped.save_pretrained(self.run_dir / "best")
                (self.run_dir / "best" / "selection.json").write_text(json.dumps({"step": step, **row}, indent=2) + "\n")
