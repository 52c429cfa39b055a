"""`comprexit data`: builders of derived data sets, one sub-command each.

    comprexit data distractors   long QA documents: each gold paragraph hidden among distractors

As every command: the whole plan is checked before the tokenizer loads (one line, exit 2), the
written paths go to stdout, the progress bar to stderr (only on a terminal, not with --quiet).
"""

from __future__ import annotations

import argparse

from .common import comma_names, progress_of


def add_parser(sub) -> None:
    parser = sub.add_parser("data", help="build derived data sets (long documents with distractors)",
                            description="Builders of derived data sets, one sub-command each.")
    builders = parser.add_subparsers(required=True)  # a missing one is named by its choices: {distractors}
    _add_distractors(builders)


def _add_distractors(builders) -> None:
    parser = builders.add_parser(
        "distractors",
        help="hide each question's gold paragraph among distractors, at several lengths and positions",
        description="Long-document QA: each question's gold paragraph among other paragraphs of the same file "
        "(same article first, none holding a gold answer) up to LENGTH tokens of the backbone's tokenizer, the gold "
        "at the start, middle or end. Writes one MRQA .jsonl.gz per file x length x position, with the recipe in its "
        "header; `comprexit eval --context-budget LENGTH` reads them as they are. Deterministic for a seed.",
    )
    parser.add_argument("--data", nargs="+", required=True, metavar="FILE",
                        help="QA files (MRQA .jsonl[.gz] or SQuAD .json); distractors come from each file itself")
    parser.add_argument("--lengths", default="1024,2048,4096,8192", help="comma-separated document lengths in tokens")
    parser.add_argument("--positions", default="start,middle,end",
                        help="comma-separated gold positions: start, middle, end, random")
    parser.add_argument("--limit", type=int, default=64,
                        help="questions per file, from contexts drawn with the seed (0: all)")
    parser.add_argument("--per-context", type=int, default=2,
                        help="at most this many questions of one context (0: all): more contexts for the same bytes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", "-o", required=True, metavar="DIR", help="folder for the files")
    parser.add_argument("--backbone", default=None,
                        help="whose tokenizer counts the tokens (default: the bundled Gemma-3-270M)")
    parser.add_argument("--quiet", "-q", "--no-progress", dest="quiet", action="store_true",
                        help="no progress bar on stderr (errors are still printed)")
    parser.set_defaults(run=run_distractors)


def _lengths(text: str) -> list[int]:
    from ..errors import InputError

    names = comma_names(text)
    try:
        return [int(name) for name in names]
    except ValueError:
        raise InputError(f"--lengths wants comma-separated token counts like 1024,2048, got {text!r}") from None


def load_tokenizer(spec: str | None):
    """Only the tokenizer of a backbone (no weights: a large model need not fit in memory to count tokens)."""
    from pathlib import Path

    from transformers import AutoTokenizer

    from .. import bundled
    from ..errors import CheckpointError
    from ..hub import hub_source

    if spec is None or spec in bundled.BUNDLED_ALIASES:
        return AutoTokenizer.from_pretrained(bundled.ensure_dense_copy()), bundled.BUNDLED_NAME
    path = Path(spec)
    try:
        if spec.endswith(".gguf"):
            return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name), path.name
        return AutoTokenizer.from_pretrained(spec, **hub_source(spec)), spec
    except (OSError, ValueError) as error:
        raise CheckpointError(f"cannot load the tokenizer of {spec!r}: {str(error).splitlines()[0]}") from error


def run_distractors(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..data.distractors import token_counter
    from ..data.long_benchmark import build_benchmark, check_plan
    from ..data.token_cache import tokenizer_fingerprint
    from ..errors import InputError
    from ..progress import bar

    for name in ("limit", "per_context"):
        if getattr(args, name) < 0:
            raise InputError(f"--{name.replace('_', '-')} must be >= 0 (0: all), got {getattr(args, name)}")
    lengths, positions = _lengths(args.lengths), comma_names(args.positions)
    limit, per_context = args.limit or None, args.per_context or None
    check_plan(args.data, lengths, positions, limit, per_context)
    if Path(args.output).exists() and not Path(args.output).is_dir():
        raise InputError(f"{args.output} is a file; -o names the folder for the files")
    tokenizer, name = load_tokenizer(args.backbone)
    files = len(args.data) * len(lengths) * len(positions)
    with bar(progress_of(args), total=files, desc="documents", unit="file") as shown:
        written = build_benchmark(
            args.data, lengths, positions, args.output, token_counter(tokenizer), name,
            tokenizer_fingerprint(tokenizer), limit=limit, per_context=per_context, seed=args.seed,
            progress=lambda: shown.update(1),
        )
    for path in written:
        print(path)
    return 0
