"""`comprexit train`: train a method's context encoder (phase ntp or sft) on the frozen backbone.

Its options are generated from `TrainConfig`'s fields and their help texts, so a new recipe
field is on the command line without a second list to keep in sync.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path

from ..training.config import PHASES, PRECISIONS, PRESETS, TrainConfig

# Fields the command line sets in its own way: the phase is the positional argument, and the
# method's config is one JSON option.
SPECIAL = {"phase", "compressor"}
# Settings of the session rather than of the recipe: a resumed run takes them anew from the
# command line (a device call that resumes has its own time limit; a run folder may have been
# moved to another machine), and keeps everything else.
# --compile changes how the passes run, not what they compute (to float rounding), so it is one too.
SESSION_SETTINGS = ("output_dir", "max_minutes", "save_every", "log_every", "eval_every", "long_batch_size", "compile")
# Options whose values are fixed lists.
CHOICES = {"mixed_precision": PRECISIONS}
SHORT = {"output_dir": ["-o"]}
METAVARS = {"data": "FILE", "extra_ntp": "FILE", "data_weights": "WEIGHT", "long_context_tokens": "TOKENS",
            "distractor_tokens": "TOKENS"}


def _option_type(annotation) -> tuple[type, bool]:
    """(element type, whether it is a list) of a field's annotation, e.g. `list[float] | None` -> (float, True)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is list:
        return typing.get_args(annotation)[0], True
    return annotation, False


def config_fields() -> list[tuple[dataclasses.Field, type, bool]]:
    hints = typing.get_type_hints(TrainConfig)
    return [(f, *_option_type(hints[f.name])) for f in dataclasses.fields(TrainConfig) if f.name not in SPECIAL]


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "train",
        help="train a compressor or a baseline (ntp or sft phase)",
        description="Train ComprExIT (or a trainable baseline: --method) on a frozen backbone. Works on CPU, "
        "one GPU, or several GPUs through `accelerate launch -m comprexit train ...` (or torchrun). "
        "Options not given take the preset's value, then TrainConfig's default.",
    )
    parser.add_argument("phase", choices=PHASES)
    parser.add_argument("--preset", default="extended", choices=sorted(PRESETS),
                        help="named recipe (training/config.py): paper, extended (default) or scale")
    parser.add_argument("--compressor-config", "--method-config", dest="compressor_config", default=None, metavar="JSON",
                        help='the method\'s config fields as JSON, e.g. \'{"ratio": 8}\'')
    parser.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    for field, kind, is_list in config_fields():
        flags = ["--" + field.name.replace("_", "-"), *SHORT.get(field.name, [])]
        help_text = field.metadata["help"]
        if kind is bool:
            parser.add_argument(*flags, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(*flags, type=kind, default=None, help=help_text, choices=CHOICES.get(field.name),
                                nargs="+" if is_list else None, metavar=METAVARS.get(field.name))
    parser.set_defaults(run=run)


def given(args: argparse.Namespace) -> dict:
    """The config fields this command line sets."""
    return {f.name: getattr(args, f.name) for f, _, _ in config_fields() if getattr(args, f.name) is not None}


def build_config(args: argparse.Namespace) -> TrainConfig:
    from ..errors import ConfigError
    from ..training.config import preset

    if not args.output_dir:
        raise ConfigError("--output-dir is required")
    saved = Path(args.output_dir) / "train_config.json"
    if args.resume and saved.is_file():
        try:
            values = json.loads(saved.read_text())
        except ValueError as error:  # not JSON, not UTF-8
            raise ConfigError(f"{saved} is not a readable training config: {error}") from error
        return _resumed_config(args, TrainConfig.from_dict(values))
    method = args.method or TrainConfig.method
    values = {**preset(args.preset, args.phase, method), "phase": args.phase, **given(args)}
    if values.get("init"):  # trained weights fix the architecture: a preset's compressor fields do not apply
        values.pop("compressor", None)
    if args.compressor_config:
        try:
            values["compressor"] = {**values.get("compressor", {}), **json.loads(args.compressor_config)}
        except json.JSONDecodeError as error:
            raise ConfigError(f"--compressor-config is not valid JSON: {error}") from error
    return TrainConfig.from_dict(values)


def _resumed_config(args: argparse.Namespace, saved: TrainConfig) -> TrainConfig:
    """The saved recipe with this call's session settings; a changed recipe field is an error, not a silent no-op.

    With a global batch, the micro-batch (`batch_size`) is a session setting too: a run may
    resume on a machine of another size, whose GPUs take a different share of each step.
    """
    from ..errors import ConfigError

    session = SESSION_SETTINGS + (("batch_size",) if saved.global_batch_size is not None else ())
    changes = given(args)
    changed = [f"--{name.replace('_', '-')} (saved {getattr(saved, name)!r}, given {value!r})"
               for name, value in changes.items() if name not in session and value != getattr(saved, name)]
    if changed:
        raise ConfigError("a resumed run keeps the recipe it started with; these differ: " + "; ".join(changed))
    return dataclasses.replace(saved, **{name: value for name, value in changes.items() if name in session})


def run(args: argparse.Namespace) -> int:
    from ..training.preflight import check_inputs
    from ..training.trainer import Trainer

    config = build_config(args)
    check_inputs(config, resume=args.resume)  # files and folders, before the backbone loads
    trainer = Trainer(config, resume=args.resume)
    summary = trainer.train()
    trainer.accelerator.end_training()  # releases the process group of a several-GPU run (NCCL warns otherwise)
    print(json.dumps(summary))
    return 0
