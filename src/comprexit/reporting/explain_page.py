"""The HTML page of `comprexit explain`: one self-contained file that works offline.

The page is rendered by Jinja2 from `templates/explain.html` (autoescaped, so a document's
`<`, `&` and quotes reach the page as text). Tokens are spans shaded by their sender
capacity; slots are buttons; each slot's sources travel in one JSON block that a few lines
of plain inline JavaScript read on hover, focus or click. The two figures are embedded as
data URIs, so nothing is fetched and the file can be mailed or archived alone.
"""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape

from .. import __version__
from .explain import Explanation
from .explain_figures import layers_figure, plan_figure

# sources giving a slot less than this share of its value are left out of the page (and of its
# highlight); they are kept in the figures and in the arrays
DRAW_FLOOR = 5e-3


def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("comprexit.reporting", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def page_data(explanation: Explanation, floor: float = DRAW_FLOOR) -> dict:
    """What the page's script needs per slot: its sources (token, share; largest first), field and chunk."""
    chunks = explanation.slot_chunk()
    return {
        "sources": [
            [[token, round(share, 4)] for token, share in explanation.slot_sources(slot, floor)]
            for slot in range(explanation.num_slots)
        ],
        "fields": explanation.slot_field.tolist(),
        "chunks": chunks.tolist(),
    }


def token_rows(explanation: Explanation) -> list[list[dict]]:
    """Tokens per chunk, each with its index, text and capacity (relative, and scaled to 0..1 for shading)."""
    relative = explanation.relative_capacity()
    shade = relative / max(float(relative.max()), 1e-12)
    bounds = explanation.chunk_starts[1:] + [explanation.num_tokens]
    return [
        [
            {"index": i, "text": explanation.tokens[i], "relative": float(relative[i]),
             "rho": float(explanation.capacity[i]), "shade": round(float(shade[i]), 3)}
            for i in range(start, end)
        ]
        for start, end in zip(explanation.chunk_starts, bounds)
    ]


def slot_rows(explanation: Explanation) -> list[list[int]]:
    """Global slot numbers per chunk."""
    chunks = explanation.slot_chunk()
    return [np.flatnonzero(chunks == c).tolist() for c in range(len(explanation.chunk_starts))]


def render_page(explanation: Explanation, title: str, plan_png: Path, layers_png: Path) -> str:
    """The page's HTML for `explanation`, with the two PNGs embedded."""
    relative = explanation.relative_capacity()
    return _environment().get_template("explain.html").render(
        title=title,
        version=__version__,
        explanation=explanation,
        chunk_tokens=token_rows(explanation),
        chunk_slots=slot_rows(explanation),
        capacity_range=(float(relative.min()), float(relative.max())),
        data=page_data(explanation),
        draw_floor=DRAW_FLOOR,
        plan_png=_png_data_uri(plan_png),
        layers_png=_png_data_uri(layers_png),
    )


def write_page(explanation: Explanation, page: Path, plan_png: Path, layers_png: Path, title: str) -> list[Path]:
    """Draw both PNGs, then the page that embeds them; each file is written under a temporary name, then renamed."""
    written = []
    for draw, path in ((plan_figure, plan_png), (layers_figure, layers_png)):
        tmp = path.with_name(path.name + ".tmp.png")
        draw(explanation, tmp)
        written.append(tmp.replace(path))
    tmp = page.with_name(page.name + ".tmp")
    tmp.write_text(render_page(explanation, title, plan_png, layers_png), encoding="utf-8")
    return written + [tmp.replace(page)]
