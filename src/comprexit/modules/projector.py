"""Projection of slot values into the decoder's input-embedding space."""

from __future__ import annotations

import torch
from torch import nn


class Projector(nn.Module):
    """Linear(H, H) -> GELU -> Linear(H, H), Xavier-uniform (gain 0.4), zero biases, run in float32."""

    def __init__(self, hidden_size: int, init_gain: float, zero_output: bool = False):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size))
        for layer in (self.net[0], self.net[2]):
            nn.init.xavier_uniform_(layer.weight, gain=init_gain)
            nn.init.zeros_(layer.bias)
        if zero_output:  # a residual branch that starts silent and learns what the skip path misses
            nn.init.zeros_(self.net[2].weight)

    def forward(self, slots: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=slots.device.type, enabled=False):
            return self.net(slots.to(self.net[0].weight.dtype))


class ProjectorBranch(nn.Module):
    """A wider residual branch beside the projector: Linear(H, W) -> GELU -> Linear(W, H), run in float32.

    Its input layer is Xavier-uniform (the projector's gain), its output layer all zeros, weight
    and bias: it adds exactly nothing until trained, so turning it on over trained weights keeps
    their slots bit for bit at step 0. Adds 2HW + H + W parameters.
    """

    def __init__(self, hidden_size: int, width: int, init_gain: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden_size, width), nn.GELU(), nn.Linear(width, hidden_size))
        nn.init.xavier_uniform_(self.net[0].weight, gain=init_gain)
        nn.init.zeros_(self.net[0].bias)
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)

    def forward(self, slots: torch.Tensor) -> torch.Tensor:
        """(batch, slots, H) slot values -> (batch, slots, H) float32, to add to the projector's output."""
        with torch.autocast(device_type=slots.device.type, enabled=False):
            return self.net(slots.to(self.net[0].weight.dtype))


class SlotScale(nn.Module):
    """RMS-normalise each slot and multiply by a learned gain set to the decoder's embedding RMS.

    Gemma multiplies its input embeddings by sqrt(H), so the decoder expects prefix vectors
    about 25x larger than what a freshly initialised projector emits.
    """

    def __init__(self, target_rms: float):
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(float(target_rms)))

    def forward(self, slots: torch.Tensor) -> torch.Tensor:
        slots = slots.float()
        return slots * torch.rsqrt(slots.pow(2).mean(-1, keepdim=True) + 1e-6) * self.gain
