"""Pair heads: two embeddings [N,D] -> same-whale logit [N] (``probability`` applies the sigmoid)."""

from __future__ import annotations

import torch
from torch import nn


class Head(nn.Module):
    def probability(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The score head.onnx exports (model.export): the sigmoid of the logit, for a learnt head."""
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


class CosineHead(Head):
    """Not learnt: the score of a pair is ``(1 + cos(a, b)) / 2``, the cosine similarity mapped onto 0..1.

    For an embedding nobody trained for pairs (frozen ImageNet features): no weights and no data,
    so no claim of a probability: 0.5 is orthogonal, 1 identical. Affine in the cosine, so the
    app's uncalibrated fusion (z-scores of the head's scores per query, model.fusion) ranks exactly
    as by the cosine itself; a calibration fitted on confirmed pairs turns it into a probability.
    ``forward`` returns the logit of that score (what the training loops would read).
    """

    def __init__(self, eps: float = 1e-6):
        super().__init__()
        self.eps = eps

    def probability(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        cos = (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(self.eps)
        return (1.0 + cos.clamp(-1.0, 1.0)) / 2.0

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.logit(self.probability(a, b), eps=self.eps)


def nn_head(cfg, dim: int) -> Head:
    return NNHead(dim, cfg.hidden)


def l1_head(cfg, dim: int) -> Head:
    return L1Head(dim)
