"""Log-domain Sinkhorn against a dense float64 reference, with masks, bf16 and empty windows."""

import pytest
import torch

from comprexit.modules import log_sinkhorn
from comprexit.modules.allocation import AttentionAllocation


def dense_sinkhorn(cost, rows, cols, eps, iterations):
    """Plain Sinkhorn on the kernel exp(-C/eps) in float64 over the valid block only."""
    kernel = torch.exp(-cost.double() / eps)
    a, b = rows.double(), cols.double()
    u = torch.ones_like(a)
    v = torch.ones_like(b)
    for _ in range(iterations):
        u = a / (kernel @ v)
        v = b / (kernel.T @ u)
    return u[:, None] * kernel * v[None, :]


def random_masses(n, generator, valid=None):
    mass = torch.rand(n, generator=generator, dtype=torch.float64) + 0.1
    if valid is not None:
        mass = mass * valid
    return mass / mass.sum()


@pytest.mark.parametrize("seed", range(5))
def test_matches_dense_reference_and_marginals(seed):
    g = torch.Generator().manual_seed(seed)
    rows, cols = 24, 7
    cost = torch.rand(3, rows, cols, generator=g, dtype=torch.float64) * 2  # cosine distances live in [0, 2]
    row_valid = torch.ones(3, rows)
    row_valid[1, 17:] = 0  # padding tokens
    col_valid = torch.ones(3, cols)
    col_valid[1, 5:] = 0  # empty slots
    row_mass = torch.stack([random_masses(rows, g, row_valid[i]) for i in range(3)])
    col_mass = col_valid / col_valid.sum(-1, keepdim=True)

    plan = log_sinkhorn(cost.float(), row_mass.float(), col_mass.float(), epsilon=0.1, iterations=30)
    assert plan.dtype == torch.float32
    for i in range(3):
        r, c = row_valid[i].bool(), col_valid[i].bool()
        reference = dense_sinkhorn(cost[i][r][:, c], row_mass[i][r], col_mass[i][c], 0.1, 30)
        torch.testing.assert_close(plan[i][r][:, c].double(), reference, rtol=1e-4, atol=1e-7)
        # masked tokens and empty slots carry exactly zero mass
        assert plan[i][~r].abs().max() == 0 if (~r).any() else True
        assert plan[i][:, ~c].abs().max() == 0 if (~c).any() else True
    # the last update is the column update: column marginals hold exactly
    torch.testing.assert_close(plan.sum(1), col_mass.float(), rtol=0, atol=1e-6)
    # rows converge to the sender masses
    torch.testing.assert_close(plan.sum(2), row_mass.float(), rtol=0, atol=2e-3)


def test_rows_match_exactly_after_convergence():
    g = torch.Generator().manual_seed(7)
    cost = torch.rand(2, 32, 8, generator=g)
    rows = torch.softmax(torch.randn(2, 32, generator=g), -1)
    cols = torch.full((2, 8), 1 / 8)
    plan = log_sinkhorn(cost, rows, cols, epsilon=0.1, iterations=300)
    torch.testing.assert_close(plan.sum(2), rows, rtol=0, atol=1e-5)
    torch.testing.assert_close(plan.sum(1), cols, rtol=0, atol=1e-6)


def test_all_padding_window_gives_zeros_and_finite_gradients():
    cost = torch.rand(2, 16, 4, requires_grad=True)
    rows = torch.zeros(2, 16)
    rows[0] = 1 / 16
    cols = torch.zeros(2, 4)
    cols[0] = 1 / 4
    plan = log_sinkhorn(cost, rows, cols, 0.1, 30)
    assert torch.isfinite(plan).all()
    assert plan[1].abs().max() == 0
    plan.sum().backward()
    assert torch.isfinite(cost.grad).all()


def test_bf16_inputs_compute_in_float32_without_nan():
    g = torch.Generator().manual_seed(3)
    cost = (torch.rand(4, 128, 32, generator=g) * 2).bfloat16()
    rows = torch.softmax(torch.randn(4, 128, generator=g), -1).bfloat16()
    cols = torch.full((4, 32), 1 / 32).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plan = log_sinkhorn(cost, rows, cols, 0.1, 30)
    assert plan.dtype == torch.float32 and torch.isfinite(plan).all()
    torch.testing.assert_close(plan.sum(1), cols.float(), rtol=0, atol=1e-5)


def test_attention_allocation_columns_sum_to_slot_mass_and_ignore_padding():
    g = torch.Generator().manual_seed(0)
    cost = torch.rand(2, 10, 3, generator=g)
    rows = torch.ones(2, 10) / 10
    rows[1, 6:] = 0
    cols = torch.ones(2, 3) / 3
    plan = AttentionAllocation(0.1)(cost, rows, cols)
    torch.testing.assert_close(plan.sum(1), cols)
    assert plan[1, 6:].abs().max() == 0
