"""Sampling several training sources with stated weights.

Without weights every example is seen once per epoch, so a large source drowns a small one
(87k SQuAD questions beside 2k NQ questions: NQ-style questions fall to 2% of the steps).
With weights, an epoch keeps its length (the examples of all sources together) and source i
fills the share w_i / sum(w) of it: whole shuffled passes over the source, then a random
remainder. A small source is thus repeated, a large one sub-sampled, deterministically per
(seed, epoch), with fresh draws each epoch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError


def check_weights(weights: Sequence[float] | None, sources: int) -> None:
    if weights is None:
        return
    if len(weights) != sources:
        raise ConfigError(f"data_weights has {len(weights)} value(s) for {sources} data source(s): give one per source")
    if any(not isinstance(w, (int, float)) or w < 0 for w in weights) or sum(weights) <= 0:
        raise ConfigError(f"data_weights must be >= 0 with a positive sum, got {list(weights)}")


def shares(sizes: Sequence[int], weights: Sequence[float] | None, total: int | None = None) -> list[int]:
    """Examples each source gives per epoch (largest-remainder rounding, so they sum to `total`, by default sum(sizes)).

    Without weights, a `total` other than sum(sizes) is shared in proportion to the sizes.
    """
    if weights is None and total is None:
        return [int(s) for s in sizes]
    total = int(sum(sizes)) if total is None else int(total)
    weights = [float(s) for s in sizes] if weights is None else weights
    check_weights(weights, len(sizes))
    exact = np.asarray(weights, dtype=np.float64) / float(sum(weights)) * total
    counts = np.floor(exact).astype(np.int64)
    for i in np.argsort(-(exact - counts), kind="stable")[: total - int(counts.sum())]:
        counts[i] += 1
    for i, (count, size) in enumerate(zip(counts, sizes)):
        if count > 0 and size == 0:
            raise ConfigError(f"data source {i} has weight {weights[i]} but no training examples")
    return [int(c) for c in counts]


def epoch_indices(sizes: Sequence[int], weights: Sequence[float] | None, seed: int, epoch: int,
                  total: int | None = None, stream: int = 0) -> np.ndarray:
    """Indices into the concatenation of the sources for one epoch (unordered: the batcher shuffles).

    sizes: examples per source, in the order they are concatenated.
    total: examples in the epoch (default: sum(sizes)); stream: another draw for the same (seed, epoch).
    """
    rng = np.random.default_rng([seed, epoch, 7919] + ([stream] if stream else []))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    picked = []
    for start, size, count in zip(starts, sizes, shares(sizes, weights, total)):
        passes, rest = divmod(count, size) if size else (0, 0)
        local = [np.arange(size)] * passes + [rng.choice(size, rest, replace=False)] if size else []
        if local:
            picked.append(start + np.concatenate(local))
    return np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)


def long_count(short: int, share: float, long: int) -> int:
    """Long examples to add to `short` usual ones so that they are `share` of the epoch (share 1: each of the `long` once)."""
    return long if share >= 1 else round(short * share / (1 - share))
