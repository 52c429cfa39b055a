"""How anchors are allocated to slots inside a window.

`TransportAllocation` is the method: a coordinated optimal-transport plan, so every token's
mass is spent exactly once and every slot receives the same total. `AttentionAllocation` is
the paper's "w/o allocation" ablation: each slot attends over its window independently
(a softmax over tokens of the same Gibbs kernel), so slots may pile onto the same tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from .sinkhorn import _MASKED, log_sinkhorn


class Allocation(nn.Module):
    """Maps a cost matrix and masses to a plan whose column k holds slot k's token weights, summing to col_mass[k]."""

    def forward(self, cost: torch.Tensor, row_mass: torch.Tensor, col_mass: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class TransportAllocation(Allocation):
    def __init__(self, epsilon: float, iterations: int):
        super().__init__()
        self.epsilon = epsilon
        self.iterations = iterations

    def forward(self, cost, row_mass, col_mass):
        return log_sinkhorn(cost, row_mass, col_mass, self.epsilon, self.iterations)


class AttentionAllocation(Allocation):
    """Per-slot softmax over the window's valid tokens of -cost / eps, scaled to the slot's mass."""

    def __init__(self, epsilon: float):
        super().__init__()
        self.epsilon = epsilon

    def forward(self, cost, row_mass, col_mass):
        with torch.autocast(device_type=cost.device.type, enabled=False):
            cost, col_mass = cost.float(), col_mass.float()
            pair_valid = (row_mass > 0).unsqueeze(-1) & (col_mass > 0).unsqueeze(-2)
            logits = torch.where(pair_valid, -cost / self.epsilon, torch.full_like(cost, _MASKED))
            weights = torch.softmax(logits, dim=-2) * pair_valid
            return weights * col_mass.unsqueeze(-2)


_ALLOCATIONS = {
    "transport": lambda epsilon, iterations: TransportAllocation(epsilon, iterations),
    "attention": lambda epsilon, iterations: AttentionAllocation(epsilon),
}

ALLOCATION_NAMES = tuple(_ALLOCATIONS)


def make_allocation(kind: str, epsilon: float, iterations: int) -> Allocation:
    """The allocation named by `ComprExITConfig.allocation`."""
    return _ALLOCATIONS[kind](epsilon, iterations)
