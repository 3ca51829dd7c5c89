"""The Siamese network: one branch applied to both photos, a head on the two embeddings."""

from __future__ import annotations

import torch
from torch import nn

from model.nets.registry import create_branch, create_head


class Siamese(nn.Module):
    def __init__(self, branch: nn.Module, head: nn.Module):
        super().__init__()
        self.branch = branch
        self.head = head

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.branch(images)[0]

    def forward(self, images_a: torch.Tensor, images_b: torch.Tensor) -> torch.Tensor:
        """Same-whale logits [N] (both image batches go through the branch as one batch)."""
        n = images_a.shape[0]
        emb = self.embed(torch.cat([images_a, images_b]))
        return self.head(emb[:n].float(), emb[n:].float())


def build_siamese(cfg) -> Siamese:
    """A Siamese network from a :class:`model.config.Config`."""
    branch = create_branch(cfg.branch)
    head = create_head(cfg.head, branch.embedding_dim)
    return Siamese(branch, head)
