"""`comprexit train`: train a method's context encoder (phase ntp or sft) on the frozen backbone."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


OVERRIDES = {
    "lr": float, "batch_size": int, "grad_accum": int, "epochs": float, "max_steps": int,
    "warmup_ratio": float, "weight_decay": float, "max_grad_norm": float, "ce_weight": float,
    "kl_weight": float, "ae_weight": float, "ae_tokens": int, "context_tokens": int,
    "continuation_tokens": int, "validation_permille": int, "val_examples": int, "val_questions": int,
    "eval_every": int, "save_every": int, "log_every": int, "seed": int, "max_minutes": float,
    "profile_steps": int, "max_train_examples": int,
}

# Settings of the session rather than of the recipe: a resumed run takes them anew from the
# command line (a device call that resumes has its own time limit), and keeps everything else.
SESSION_SETTINGS = ("max_minutes", "save_every", "log_every")


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "train",
        help="train a compressor or a baseline (ntp or sft phase)",
        description="Train ComprExIT (or a trainable baseline: --method) on a frozen backbone. Works on CPU, "
        "one GPU, or several GPUs through `accelerate launch -m comprexit.cli train ...`.",
    )
    parser.add_argument("phase", choices=["ntp", "sft"])
    parser.add_argument("--method", default="comprexit", help="comprexit (default), icae, 500x or prompt-tuning")
    parser.add_argument("--ablation", default=None,
                        help="comprexit only: wo-allocation, embedding-only, middle-layer or last-layer")
    parser.add_argument("--data", nargs="+", required=True, metavar="FILE", help="corpus (ntp) or QA files (sft)")
    parser.add_argument("--extra-ntp", nargs="*", default=[], metavar="FILE", help="QA files whose contexts join the NTP text")
    parser.add_argument("--output-dir", "-o", required=True)
    parser.add_argument("--preset", default="extended", help="paper or extended (default)")
    parser.add_argument("--init", default=None, metavar="DIR", help="start from these weights of the same method (e.g. the NTP result)")
    parser.add_argument("--compressor-config", "--method-config", dest="compressor_config", default=None, metavar="JSON",
                        help='the method\'s config fields as JSON, e.g. \'{"ratio": 8}\'')
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="recompute the trainable LLM encoder pass in backward (icae), trading time for memory")
    parser.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    parser.add_argument("--mixed-precision", default="auto", choices=["auto", "bf16", "fp16", "no"])
    for name, kind in OVERRIDES.items():
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=None)
    parser.add_argument("--backbone", default=None, help="hub id, folder or .gguf (default: bundled Gemma-3-270M)")
    parser.set_defaults(run=run)


def build_config(args: argparse.Namespace):
    from ..errors import ConfigError
    from ..training.config import TrainConfig, preset

    saved = Path(args.output_dir) / "train_config.json"
    if args.resume and saved.is_file():
        return _resumed_config(args, TrainConfig.from_dict(json.loads(saved.read_text())))
    values = preset(args.preset, args.phase, args.method)
    values.update(phase=args.phase, data=list(args.data), extra_ntp=list(args.extra_ntp),
                  output_dir=args.output_dir, backbone=args.backbone, init=args.init,
                  mixed_precision=args.mixed_precision, method=args.method, ablation=args.ablation,
                  gradient_checkpointing=args.gradient_checkpointing)
    if args.compressor_config:
        try:
            values["compressor"] = {**values.get("compressor", {}), **json.loads(args.compressor_config)}
        except json.JSONDecodeError as error:
            raise ConfigError(f"--compressor-config is not valid JSON: {error}") from error
    for name in OVERRIDES:
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    return TrainConfig.from_dict(values)


def _resumed_config(args: argparse.Namespace, saved):
    """The saved recipe with this call's session settings; a changed recipe field is an error, not a silent no-op."""
    from dataclasses import replace

    from ..errors import ConfigError

    changed = [f"--{name.replace('_', '-')} (saved {getattr(saved, name)!r}, given {getattr(args, name)!r})"
               for name in OVERRIDES if name not in SESSION_SETTINGS
               and getattr(args, name) is not None and getattr(args, name) != getattr(saved, name)]
    if changed:
        raise ConfigError("a resumed run keeps the recipe it started with; these differ: " + "; ".join(changed))
    return replace(saved, **{name: getattr(args, name) for name in SESSION_SETTINGS if getattr(args, name) is not None})


def run(args: argparse.Namespace) -> int:
    from ..training.trainer import Trainer

    config = build_config(args)
    trainer = Trainer(config, resume=args.resume)
    summary = trainer.train()
    print(json.dumps(summary))
    return 0
