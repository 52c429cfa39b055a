"""`comprexit info`: what a compressor costs: trainable parameters and their share of the backbone."""

from __future__ import annotations

import argparse
import json

from .common import add_backbone_options, add_compressor_option


def add_parser(sub) -> None:
    parser = sub.add_parser("info", help="print the backbone, the compressor and its parameter count")
    add_compressor_option(parser)
    add_backbone_options(parser)
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import warnings

    from ..evaluation.report import environment
    from ..reader import Reader, UntrainedCompressorWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedCompressorWarning)
        reader = Reader.load(args.compressor, args.backbone, device=args.device, dtype=args.dtype)
    backbone_params = reader.backbone.parameter_count()
    compressor_params = reader.compressor.parameter_count()
    report = {
        "backbone": reader.backbone.identity.to_dict(),
        "backbone_parameters": backbone_params,
        "compressor": reader.compressor_name,
        "compressor_config": reader.compressor.config.to_dict(),
        "compressor_parameters": compressor_params,
        "share_of_backbone_percent": round(100 * compressor_params / backbone_params, 3),
        "environment": environment(reader.backbone.device),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"backbone:   {reader.backbone.identity.describe()}: {backbone_params:,} parameters")
        print(f"compressor: {reader.compressor_name} (ratio {reader.compressor.config.ratio}x)")
        print(
            f"trainable:  {compressor_params:,} parameters = "
            f"{report['share_of_backbone_percent']:.2f}% of the backbone"
        )
    return 0
