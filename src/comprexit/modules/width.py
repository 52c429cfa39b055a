"""Width-wise transmission: move the anchors of each window into its slots.

A window of W anchors has K = ceil(W / r) slots; slot k owns the "field" of tokens
k*r .. k*r+r-1 and its receiver is their masked mean. Tokens send a learned capacity
(with a uniform floor), slots receive uniform shares, and an allocation plan (optimal
transport by default) decides which token feeds which slot.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .allocation import Allocation


class WidthOutput(NamedTuple):
    """What width-wise transmission produces; `plan` and `capacity` are its internals, kept for diagnostics.

    slots: (batch, slots, hidden) float32, slot_mask: (batch, slots) bool,
    plan: (batch, windows, W, K) float32, capacity: (batch, windows, W) float32 (rho, each window summing
    to 1 over its real tokens), carried: (batch, slots, any) passengers moved by the plan, or None.
    """

    slots: torch.Tensor
    slot_mask: torch.Tensor
    plan: torch.Tensor
    capacity: torch.Tensor
    carried: torch.Tensor | None


class WidthTransmission(nn.Module):
    def __init__(
        self,
        hidden_size: int,
        metric_dim: int,
        ratio: int,
        window: int,
        capacity_temperature: float,
        capacity_floor: float,
        allocation: Allocation,
    ):
        super().__init__()
        self.ratio = ratio
        self.window = window
        self.slots_per_window = -(-window // ratio)
        self.capacity_temperature = capacity_temperature
        self.capacity_floor = capacity_floor
        self.allocation = allocation
        self.metric_norm = nn.LayerNorm(hidden_size)
        self.metric = nn.Linear(hidden_size, metric_dim)
        self.capacity_norm = nn.LayerNorm(hidden_size)
        self.capacity = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.capacity.weight)
        nn.init.zeros_(self.capacity.bias)
        self.value_norm = nn.LayerNorm(hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)

    def num_slots(self, tokens: int) -> int:
        """Slots produced for a context of `tokens` tokens, padding slots included."""
        return -(-tokens // self.window) * self.slots_per_window

    def _metric(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.metric(self.metric_norm(x)).float(), dim=-1)

    def sender_capacity(self, anchors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """rho: (windows, W) masked softmax of W_rho LN(A) / tau_s, mixed with the uniform floor, summing to 1."""
        logits = self.capacity(self.capacity_norm(anchors)).squeeze(-1).float() / self.capacity_temperature
        logits = logits.masked_fill(~mask, float("-inf"))
        valid = mask.float()
        count = valid.sum(-1, keepdim=True)
        has_tokens = count > 0
        learned = torch.where(has_tokens, torch.softmax(torch.where(has_tokens, logits, 0.0), dim=-1), 0.0)
        uniform = valid / count.clamp_min(1)
        mixed = ((1 - self.capacity_floor) * learned + self.capacity_floor * uniform) * valid
        return mixed / mixed.sum(-1, keepdim=True).clamp_min(1e-30)

    def forward(
        self, anchors: torch.Tensor, mask: torch.Tensor, passengers: torch.Tensor | None = None
    ) -> WidthOutput:
        """anchors: (batch, tokens, hidden), mask: (batch, tokens) bool -> WidthOutput.

        `passengers` (batch, tokens, any), when given, are moved into the slots by the same plan.
        """
        batch, tokens, hidden = anchors.shape
        windows = -(-tokens // self.window)
        pad = windows * self.window - tokens
        anchors = F.pad(anchors, (0, 0, 0, pad))
        mask = F.pad(mask, (0, pad), value=False)
        # (batch * windows, W, hidden)
        anchors = anchors.reshape(batch * windows, self.window, hidden)
        mask = mask.reshape(batch * windows, self.window)

        # receivers: masked mean of each slot's field of r tokens
        field_pad = self.slots_per_window * self.ratio - self.window
        fields = F.pad(anchors, (0, 0, 0, field_pad)).reshape(batch * windows, self.slots_per_window, self.ratio, hidden)
        field_mask = F.pad(mask, (0, field_pad), value=False).reshape(batch * windows, self.slots_per_window, self.ratio)
        field_count = field_mask.sum(-1)  # (bw, K)
        slot_valid = field_count > 0
        receivers = (fields * field_mask.unsqueeze(-1)).sum(2) / field_count.clamp_min(1).unsqueeze(-1).to(fields.dtype)

        cost = 1.0 - self._metric(anchors) @ self._metric(receivers).transpose(-1, -2)  # (bw, W, K)
        row_mass = self.sender_capacity(anchors, mask)
        col_mass = slot_valid.float() / slot_valid.sum(-1, keepdim=True).clamp_min(1)
        plan = self.allocation(cost, row_mass, col_mass)  # (bw, W, K), columns sum to col_mass

        def move(values: torch.Tensor) -> torch.Tensor:
            """Slot k = sum_t P_tk v_t / (1/K'): a plan-weighted mean of the window's values."""
            moved = plan.transpose(-1, -2) @ values.float() / col_mass.clamp_min(1e-30).unsqueeze(-1)
            return (moved * slot_valid.unsqueeze(-1)).reshape(batch, windows * self.slots_per_window, -1)

        slots = move(self.value(self.value_norm(anchors)))  # values W_g LN(A)
        carried = None
        if passengers is not None:
            carried = move(F.pad(passengers, (0, 0, 0, pad)).reshape(batch * windows, self.window, -1))
        return WidthOutput(
            slots=slots,
            slot_mask=slot_valid.reshape(batch, windows * self.slots_per_window),
            plan=plan.reshape(batch, windows, self.window, self.slots_per_window),
            capacity=row_mass.reshape(batch, windows, self.window),
            carried=carried,
        )
