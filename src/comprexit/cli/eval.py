"""`comprexit eval`: score a method on QA files with EM/F1 and write a results file.

As every command: every argument is checked before the model loads (the data files, read and
parsed, the method and its options, a --weights folder of that method, the numbers' ranges, and
--output, a file in an existing folder: no folder is made); the results table and the written
paths go to stdout, the status lines and the progress bar to stderr (the bar on a terminal only,
neither with --quiet).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from .common import add_backbone_options, progress_of, status


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "eval",
        help="evaluate a method on QA data (EM/F1)",
        description="Greedy QA evaluation of one method; writes results JSON + Markdown. "
        "Re-running the same command resumes an interrupted run.",
    )
    parser.add_argument("--method", default="comprexit", help="registered method (see --list-methods)")
    parser.add_argument("--list-methods", action="store_true", help="print the registered methods and exit")
    parser.add_argument("--weights", default=None, metavar="DIR", help="trained weights folder of the method")
    parser.add_argument("--ratio", type=int, default=None,
                        help="compression ratio of the training-free methods (truncate-last/-first, mean-pool; default 4)")
    parser.add_argument(
        "--data", nargs="+", metavar="FILE", help="MRQA .jsonl(.gz), SQuAD .json, or hf:NAME[:SPLIT]"
    )
    parser.add_argument("--limit", type=int, default=None, help="first N questions of each file")
    parser.add_argument("--held-out", type=int, default=None, metavar="PERMILLE",
                        help="score only the questions whose contexts `comprexit train` holds out of these TRAIN files "
                        "at this --validation-permille (30 by default there): model selection without eval files")
    parser.add_argument("--exclude-questions", default=None, metavar="FILE",
                        help="a JSON list of question ids to leave out before --limit, e.g. the "
                        "validation_questions.json of a training run: a decision on questions its selection never saw")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--context-budget", type=int, default=512, help="context tokens kept (the tail)")
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--skip-malformed", action="store_true", help="skip and count malformed data lines")
    parser.add_argument("--output", "-o", default=None,
                        help="results JSON, in an existing folder (a .md table is written beside it)")
    parser.add_argument("--template", default=None, help="prompt template with one {question} field (default: METHOD.md's)")
    parser.add_argument("--label", default=None, help="row name in comparison tables")
    parser.add_argument("--predictions", action="store_true", help="store every prediction in the results file")
    parser.add_argument("--quiet", "-q", "--no-progress", dest="quiet", action="store_true",
                        help="no status lines or progress bar on stderr (errors are still printed)")
    add_backbone_options(parser)
    parser.set_defaults(run=run)


def dataset_key(spec: str) -> str:
    """Short name of a data spec: the file name without its data suffixes (squad_eval.jsonl.gz -> squad_eval)."""
    if spec.startswith("hf:"):
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", spec[3:])
    return re.sub(r"(\.jsonl|\.json)?(\.gz)?$", "", Path(spec).name)


def held_out_part(dataset, permille: int):
    """The questions of a train file whose contexts training holds out (the same hash as `comprexit train`)."""
    from dataclasses import replace

    from ..data.token_cache import is_held_out
    from ..errors import InputError

    kept = [qa for qa in dataset if is_held_out(qa.context, permille)]
    if not kept:
        raise InputError(f"{dataset.source}: no context is held out at {permille} per mille")
    return replace(dataset, examples=kept, source=f"{dataset.source} (held out at {permille} per mille)")


def read_question_ids(path: str) -> set[str]:
    """The question ids of an --exclude-questions file (a JSON list of strings)."""
    from ..errors import InputError

    try:
        ids = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"--exclude-questions: no such file: {path}") from None
    except (OSError, ValueError) as error:
        raise InputError(f"--exclude-questions: cannot read {path} as JSON ({error})") from None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise InputError(f"--exclude-questions: {path} must hold a JSON list of question ids")
    return set(ids)


def without_questions(dataset, excluded: set[str]):
    """The dataset less the questions whose ids are in `excluded`; None when none is left."""
    from dataclasses import replace

    kept = [qa for qa in dataset if qa.qid not in excluded]
    if not kept:
        return None
    left = len(dataset) - len(kept)
    return replace(dataset, examples=kept, source=f"{dataset.source} ({left} excluded questions left out)" if left
                   else dataset.source)


def check_settings(args: argparse.Namespace) -> Path | None:
    """Every argument that can be checked without reading data or loading a model; returns --output."""
    from ..data.files import check_source
    from ..errors import InputError
    from ..methods.base import check_method_options
    from ..outputs import check_writable

    if not args.data:
        raise InputError("--data needs at least one QA file")
    for spec in args.data:
        check_source(spec)
    for name, least in (("limit", 1), ("batch_size", 1), ("context_budget", 1), ("max_new_tokens", 1)):
        value = getattr(args, name)
        if value is not None and value < least:
            raise InputError(f"--{name.replace('_', '-')} must be >= {least}, got {value}")
    if args.held_out is not None and not 0 < args.held_out < 1000:
        raise InputError(f"--held-out must be a per-mille value in 1..999, got {args.held_out}")
    options = [name for name in ("weights", "ratio") if getattr(args, name) is not None]
    check_method_options(args.method, options)
    if args.weights is not None:
        from ..saving import read_folder_config

        read_folder_config(args.weights, method=args.method)
    if args.output is None:
        return None
    output = Path(args.output)
    if output.suffix.lower() == ".md":
        raise InputError(f"--output names the results JSON (the .md table is written beside it), got {output}")
    return check_writable(output, command="eval")


def run(args: argparse.Namespace) -> int:
    from ..backbone import Backbone
    from ..data.qa import load_qa
    from ..errors import InputError
    from ..evaluation.report import environment, write_results
    from ..evaluation.runner import EvalSettings, evaluate
    from ..methods import available_methods, create_method

    if args.list_methods:
        print("\n".join(available_methods()))
        return 0
    output = check_settings(args)
    settings = EvalSettings(
        context_budget=args.context_budget, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
        **({"template": args.template} if args.template else {}),
    )
    excluded = read_question_ids(args.exclude_questions) if args.exclude_questions else set()
    datasets, emptied = {}, []
    for spec in args.data:
        dataset = load_qa(spec, skip_malformed=args.skip_malformed)
        key = dataset_key(spec)
        if args.held_out is not None:
            dataset, key = held_out_part(dataset, args.held_out), f"{key}_held_out"
        if excluded:
            kept = without_questions(dataset, excluded)
            if kept is None:  # a small file's held-out part can lie wholly inside a run's validation questions
                emptied.append(dataset.source)
                continue
            dataset = kept
        datasets[key] = dataset.limit(args.limit) if args.limit else dataset
    if emptied and not datasets:
        raise InputError(f"{emptied[0]}: --exclude-questions leaves no question")
    for source in emptied:
        status(args, f"{source}: --exclude-questions leaves no question; not scored")
    status(args, f"data: {sum(len(d) for d in datasets.values())} questions in {len(datasets)} set(s)")
    backbone = Backbone.load(args.backbone, device=args.device, dtype=args.dtype)
    options = {name: getattr(args, name) for name in ("weights", "ratio") if getattr(args, name) is not None}
    method = create_method(args.method, backbone, **options)
    progress = output.with_name(output.name + ".progress.jsonl") if output else None
    start = time.perf_counter()
    results = evaluate(method, datasets, settings, keep_predictions=args.predictions, progress_path=progress,
                       progress=progress_of(args))
    status(args, f"evaluated {args.method} on {backbone.identity.name} in {time.perf_counter() - start:.1f} s")
    results["label"] = args.label or args.method
    if args.weights:
        from ..training.summary import training_lineage

        results["training"] = training_lineage(args.weights)
    results["backbone"] = {**backbone.identity.to_dict(), "dtype": str(backbone.dtype).replace("torch.", "")}
    results["environment"] = environment(backbone.device)
    for name, r in results["datasets"].items():
        print(f"{name:>14}: EM {r['em']:6.2f}  F1 {r['f1']:6.2f}  ({r['count']} questions, {r['contexts_cut']} contexts cut)")
    average = results["average"]
    print(f"{'average':>14}: EM {average['em']:6.2f}  F1 {average['f1']:6.2f}  ({results['questions_per_second']} q/s)")
    if output:
        print("\n".join(str(path) for path in write_results(results, output)))
    return 0
