"""The two pictures of `comprexit explain`: the transport plan (slots x tokens) and the layer weights.

Both put the document's tokens on the x axis, so they read side by side. A document of
130k tokens would make a plan of 130k x 32k cells; both figures are therefore drawn on a
grid of at most `MAX_COLUMNS` x `MAX_ROWS` cells, each cell the largest (plan) or mean
(layer weights) value of the tokens and slots it covers, built from the plan's window blocks
without ever forming the dense matrix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..figures import pyplot, save_figure
from .explain import Explanation

MAX_COLUMNS = 1600
MAX_ROWS = 800


def plan_grid(explanation: Explanation, columns: int = MAX_COLUMNS, rows: int = MAX_ROWS) -> np.ndarray:
    """(rows', columns') with rows' = min(slots, rows), columns' = min(tokens, columns): max draw share per cell."""
    slots, tokens = explanation.num_slots, explanation.num_tokens
    rows, columns = min(slots, rows), min(tokens, columns)
    token = explanation.slot_start[:, None] + np.arange(explanation.draws.shape[1])  # (slots, W)
    valid = explanation.draws > 0
    slot = np.broadcast_to(np.arange(slots)[:, None], token.shape)
    grid = np.zeros((rows, columns), dtype=np.float32)
    np.maximum.at(grid, (slot[valid] * rows // slots, token[valid] * columns // tokens), explanation.draws[valid])
    return grid


def token_bins(values: np.ndarray, columns: int = MAX_COLUMNS) -> np.ndarray:
    """(tokens, n) -> (min(tokens, columns), n): the mean over each run of neighbouring tokens."""
    bins = min(len(values), columns)
    edges = np.arange(bins + 1) * len(values) // bins
    return np.add.reduceat(values, edges[:-1], axis=0) / np.diff(edges)[:, None]


def state_labels(states: list[int]) -> list[str]:
    return ["emb" if state == 0 else str(state) for state in states]


def plan_figure(explanation: Explanation, path: str | Path) -> Path:
    """Heat map of each slot's draw shares over the tokens, its own field traced as a thin line."""
    plt = pyplot()
    tokens, slots = explanation.num_tokens, explanation.num_slots
    fig, (ax, bar) = plt.subplots(1, 2, figsize=(10, 4.2), gridspec_kw={"width_ratios": (40, 1)})
    image = ax.imshow(
        plan_grid(explanation), aspect="auto", cmap="magma_r", interpolation="nearest",
        extent=(0, tokens, slots, 0), vmin=0,
    )
    field_middle = explanation.slot_field.mean(axis=1)
    ax.plot(field_middle, np.arange(slots) + 0.5, color="#00b4ff", linewidth=0.8, alpha=0.5, label="slot's own field")
    for start in explanation.chunk_starts[1:]:
        ax.axvline(start, color="tab:blue", linewidth=0.8, linestyle="--")
    ax.set_xlabel("context token")
    ax.set_ylabel("slot")
    ax.legend(loc="upper right", fontsize=8, frameon=False)
    fig.colorbar(image, cax=bar, label="share of the slot's value")
    title = f"Transport plan: {slots} slots x {tokens} tokens ({explanation.ratio}x)"
    return save_figure(fig, path, title, title_size=11)


def layers_figure(explanation: Explanation, path: str | Path) -> Path:
    """Per-token layer weights a_t^l (states x tokens), and their mean over the document per state."""
    plt = pyplot()
    labels = state_labels(explanation.states)
    fig, (heat, mean, bar) = plt.subplots(
        1, 3, figsize=(10, 0.18 * len(labels) + 2.2), gridspec_kw={"width_ratios": (36, 6, 1)}
    )
    image = heat.imshow(
        token_bins(explanation.layer_weights).T, aspect="auto", cmap="viridis", interpolation="nearest",
        extent=(0, explanation.num_tokens, len(labels) - 0.5, -0.5), vmin=0,
    )
    heat.set_yticks(range(len(labels)), labels, fontsize=7)
    heat.set_xlabel("context token")
    heat.set_ylabel("hidden state (layer)")
    mean.barh(range(len(labels)), explanation.layer_weights.mean(axis=0), color="tab:green")
    mean.set_ylim(heat.get_ylim())
    mean.set_yticks(range(len(labels)), [])
    mean.set_xlabel("mean weight")
    fig.colorbar(image, cax=bar, label="$a_t^l$")
    return save_figure(fig, path, "Depth-wise transmission: each token's weight on each layer", title_size=11)
