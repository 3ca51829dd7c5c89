"""Pair heads: two embeddings [N,D] -> same-whale logit [N] (``probability`` applies the sigmoid)."""

from __future__ import annotations

import torch
from torch import nn


class Head(nn.Module):
    def probability(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self(a, b))


class NNHead(Head):
    """The kernel's head: per feature position the values x*y, x+y, |x-y|, (x-y)^2 go through a small
    network shared across positions (1x1 convolutions over the 4 stacked values), then a weighted
    sum over positions gives the logit."""

    def __init__(self, dim: int, hidden: int = 32):
        super().__init__()
        self.per_position = nn.Sequential(nn.Conv1d(4, hidden, 1), nn.ReLU(inplace=True), nn.Conv1d(hidden, 1, 1))
        self.out = nn.Linear(dim, 1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d = a - b
        f = torch.stack([a * b, a + b, d.abs(), d * d], dim=1)  # [N, 4, D]
        return self.out(self.per_position(f).squeeze(1)).squeeze(-1)


class L1Head(Head):
    """Weighted L1 distance: logit = w . |a - b| + c (w learnt, typically negative)."""

    def __init__(self, dim: int):
        super().__init__()
        self.out = nn.Linear(dim, 1)
        with torch.no_grad():
            self.out.weight.fill_(-1.0 / dim)
            self.out.bias.fill_(1.0)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.out((a - b).abs()).squeeze(-1)


def nn_head(cfg, dim: int) -> Head:
    return NNHead(dim, cfg.hidden)


def l1_head(cfg, dim: int) -> Head:
    return L1Head(dim)
