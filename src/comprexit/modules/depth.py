"""Depth-wise transmission: mix every layer's hidden state of a token into one anchor."""

from __future__ import annotations

import math

import torch
from torch import nn


def rms_normalize(hidden: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Parameter-free RMS normalisation over the hidden dimension, computed in float32.

    Gemma-3's residual stream grows from ~26 to ~35,000 in norm across layers; without this
    the depth attention's logits saturate (METHOD.md, "What we measured").
    """
    x = hidden.float()
    return (x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)).to(hidden.dtype)


class DepthTransmission(nn.Module):
    """Per-token attention over the L+1 hidden states, guided by a learned layer prior.

    pi = softmax(w); c_t = sum_l pi_l h_t^l; q_t = W_q c_t; k_t^l = W_k h_t^l + e_l;
    a_t^l = softmax_l(<q_t, k_t^l> / (sqrt(d) tau)); A_t = sum_l a_t^l W_v h_t^l.

    Computed without projecting every layer (METHOD.md, Note): <q, W_k h + b_k + e_l> =
    <W_k^T q, h> + <q, b_k + e_l>, and since the weights sum to one, W_v is applied once to
    the mixture sum_l a^l h^l.
    """

    def __init__(self, hidden_size: int, num_states: int, gate_dim: int, temperature: float, normalize: bool):
        super().__init__()
        self.normalize = normalize
        self.scale = 1.0 / (math.sqrt(gate_dim) * temperature)
        self.layer_prior = nn.Parameter(torch.zeros(num_states))
        self.layer_embedding = nn.Parameter(torch.randn(num_states, gate_dim) * 0.02)
        self.query = nn.Linear(hidden_size, gate_dim)
        self.key = nn.Linear(hidden_size, gate_dim)
        self.value = nn.Linear(hidden_size, hidden_size)

    def layer_weights(self, hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (states, weights): the (optionally normalised) states and a_t^l.

        hidden: (batch, tokens, states, hidden); mask: (batch, tokens) bool.
        weights: (batch, tokens, states), summing to 1 on real tokens and 0 on padding.
        """
        if self.normalize:
            hidden = rms_normalize(hidden)
        prior = torch.softmax(self.layer_prior, dim=0).to(hidden.dtype)
        summary = torch.einsum("btnh,n->bth", hidden, prior)  # c_t
        query = self.query(summary)  # (b, t, d)
        query_in_hidden = query @ self.key.weight.to(query.dtype)  # W_k^T q_t: (b, t, hidden)
        layer_bias = query @ (self.layer_embedding + self.key.bias).to(query.dtype).T  # (b, t, states)
        logits = torch.einsum("btnh,bth->btn", hidden, query_in_hidden.to(hidden.dtype)) + layer_bias
        weights = torch.softmax(logits.float() * self.scale, dim=-1) * mask.unsqueeze(-1)
        return hidden, weights

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden: (batch, tokens, states, hidden) -> anchors (batch, tokens, hidden), weights (batch, tokens, states)."""
        hidden, weights = self.layer_weights(hidden, mask)
        mixture = torch.einsum("btnh,btn->bth", hidden, weights.to(hidden.dtype))
        anchors = self.value(mixture) * mask.unsqueeze(-1)
        return anchors, weights
