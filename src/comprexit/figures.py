"""Headless matplotlib for the plots every results writer draws (matplotlib is an optional extra)."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """`matplotlib.pyplot` on a file-only backend, or None where matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def require_pyplot(what: str):
    """`pyplot()`, or a one-line error saying that `what` draws with matplotlib and how to install it."""
    from .errors import ComprexitError

    plt = pyplot()
    if plt is None:
        raise ComprexitError(f"{what} draws PNGs with matplotlib: pip install 'comprexit[plots]'")
    return plt


def save_figure(fig, path: str | Path, title: str, dpi: int = 110, title_size: float | None = None) -> Path:
    """Title, tight layout with room for the title above the panels, write, close (its memory goes with it)."""
    import matplotlib.pyplot as plt

    fig.suptitle(title, fontsize=title_size)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
