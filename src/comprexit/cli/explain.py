"""`comprexit explain`: where each slot's content comes from, as an offline HTML page and two PNGs.

    comprexit explain doc.txt -o plan.html      # writes plan.html, plan-plan.png, plan-layers.png

Every argument is checked before the model loads, so a typo costs no time: the page must end
in .html/.htm, every output's folder must exist and be writable (no folder is created), no
output may be a folder or the input document, the device must exist and a given compressor
folder must be a readable ComprExIT folder (those two for every command: common.py). The
written paths go to stdout, one per line; the summary line and the progress bar go to stderr
(neither with --quiet).
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..outputs import check_writable
from .common import add_backbone_options, add_compressor_option, load_reader, progress_of, read_context_file, status

PAGE_SUFFIXES = (".html", ".htm")


@dataclass
class Outputs:
    page: Path
    plan_png: Path
    layers_png: Path

    def all(self) -> tuple[Path, Path, Path]:
        return self.page, self.plan_png, self.layers_png


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "explain",
        help="show where each slot's content comes from (HTML page + PNGs)",
        description=(
            "Compress a UTF-8 document and write a self-contained HTML page of its tokens shaded by "
            "sender capacity, where hovering or clicking a slot highlights the tokens its transport "
            "plan draws from; plus PNGs of the plan (slots x tokens) and of the per-token layer weights."
        ),
    )
    parser.add_argument("file", help="UTF-8 text file")
    parser.add_argument("-o", "--output", required=True, metavar="PAGE.html", help="the HTML page to write")
    parser.add_argument(
        "--png-prefix",
        metavar="PREFIX",
        default=None,
        help="write PREFIX-plan.png and PREFIX-layers.png (default: the page's path without its suffix)",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no summary line or progress bar on stderr")
    add_compressor_option(parser)
    add_backbone_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..reporting import explain_text, write_page

    outputs = check_outputs(args.file, args.output, args.png_prefix)
    check_plotting()
    text = read_context_file(args.file)
    reader = load_reader(args)
    start = time.perf_counter()
    explanation = explain_text(reader, text, progress=progress_of(args))
    try:
        written = write_page(explanation, *outputs.all(), title=Path(args.file).name)
    except OSError as error:
        raise InputError(f"cannot write {error.filename or outputs.page}: {error.strerror}") from error
    status(args, f"explained {explanation.num_tokens} tokens -> {explanation.num_slots} slots "
                 f"in {len(explanation.chunk_starts)} chunk(s) in {time.perf_counter() - start:.2f} s")
    print("\n".join(str(path) for path in written))
    return 0


def check_outputs(document: str, page: str, png_prefix: str | None) -> Outputs:
    """The three output paths, refusing any that could not be written (or would overwrite the input)."""
    page_path = Path(page)
    if page_path.suffix.lower() not in PAGE_SUFFIXES:
        raise InputError(f"the page must end in .html or .htm, got {page}")
    if png_prefix is not None and (png_prefix.endswith(("/", os.sep)) or Path(png_prefix).is_dir()):
        raise InputError(f"--png-prefix must name files, not a folder: use e.g. {Path(png_prefix) / 'doc'}")
    prefix = Path(png_prefix) if png_prefix is not None else page_path.with_suffix("")
    outputs = Outputs(page_path, prefix.with_name(prefix.name + "-plan.png"), prefix.with_name(prefix.name + "-layers.png"))
    for path in outputs.all():
        check_writable(path, document, "explain")
    return outputs


def check_plotting() -> None:
    from ..figures import require_pyplot

    require_pyplot("explain")
