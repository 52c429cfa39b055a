"""Entropic optimal transport by log-domain Sinkhorn iterations.

Masked rows (padding tokens) and columns (empty slots) carry zero mass. Instead of -inf we
use a large finite negative log-value for them, so no logsumexp ever sees an all -inf row:
that keeps both the forward pass and its gradient free of NaN, also for windows that are
entirely padding.
"""

from __future__ import annotations

import torch

_MASKED = -1.0e4  # log-domain stand-in for log(0); exp(-1e4) underflows to exactly 0 in float32


def log_sinkhorn(
    cost: torch.Tensor,
    row_mass: torch.Tensor,
    col_mass: torch.Tensor,
    epsilon: float,
    iterations: int,
) -> torch.Tensor:
    """Transport plan P minimising <P, C> - eps * H(P) with row sums `row_mass`, column sums `col_mass`.

    Args:
        cost: (batch, rows, cols) transport cost.
        row_mass: (batch, rows) non-negative masses, zero on masked rows, each batch summing to 1.
        col_mass: (batch, cols) non-negative masses, zero on masked columns, each batch summing to 1.
        epsilon: entropic regularisation.
        iterations: Sinkhorn iterations; each is a row update followed by a column update,
            so the column marginals hold exactly at the end.

    Returns:
        plan: (batch, rows, cols) float32, exactly zero on masked rows and columns.

    Computed in float32 whatever the input dtype and autocast state.
    """
    with torch.autocast(device_type=cost.device.type, enabled=False):
        cost = cost.float()
        row_mass, col_mass = row_mass.float(), col_mass.float()
        row_valid, col_valid = row_mass > 0, col_mass > 0
        pair_valid = row_valid.unsqueeze(-1) & col_valid.unsqueeze(-2)
        log_kernel = torch.where(pair_valid, -cost / epsilon, torch.full_like(cost, _MASKED))
        log_rows = torch.where(row_valid, row_mass.clamp_min(1e-30).log(), torch.full_like(row_mass, _MASKED))
        log_cols = torch.where(col_valid, col_mass.clamp_min(1e-30).log(), torch.full_like(col_mass, _MASKED))
        # dual potentials in units of epsilon, starting at zero
        u = torch.zeros_like(log_rows)
        v = torch.zeros_like(log_cols)
        for _ in range(iterations):
            u = log_rows - torch.logsumexp(log_kernel + v.unsqueeze(-2), dim=-1)
            v = log_cols - torch.logsumexp(log_kernel + u.unsqueeze(-1), dim=-2)
        plan = torch.exp(log_kernel + u.unsqueeze(-1) + v.unsqueeze(-2))
        return plan * pair_valid
