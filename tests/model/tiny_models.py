"""Tiny torch branch/head nets exported to ONNX under the bundle contract (tests and benchmarks).

The branch is a small conv net whose last layer is a BatchNorm feature map, pooled by a global
max into the embedding (the paper's shape). Its first convolution has zero-mean kernels, so a
flat area of the photo gives an all-zero feature map: heatmaps must then fall on texture.

The head has the paper's structure: per position the features x*y, x+y, |x-y|, (x-y)^2, a small
per-position network (4 -> mid -> 1), then a dense layer over positions and a sigmoid. Its
weights are set so the logit falls with the mean absolute difference of the two embeddings (plus
a little noise from the other hidden units), so same-cluster synthetic embeddings score high and
the head's ranking is close to (not equal to) the embedding-space ranking.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model.bundle import finalize_bundle, staging_dir
from model.preprocess import Preprocessing


class TinyBranch(nn.Module):
    def __init__(self, dim: int = 32, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.c1 = nn.Conv2d(1, 16, 3, stride=2, padding=1, bias=False, padding_mode="replicate")
        self.b1 = nn.BatchNorm2d(16)
        self.c2 = nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False, padding_mode="replicate")
        self.b2 = nn.BatchNorm2d(32)
        self.c3 = nn.Conv2d(32, dim, 3, stride=2, padding=1, bias=False, padding_mode="replicate")
        self.b3 = nn.BatchNorm2d(dim)
        with torch.no_grad():
            for c in (self.c1, self.c2, self.c3):
                c.weight.copy_(torch.randn(c.weight.shape, generator=g) * (2.0 / c.weight[0].numel()) ** 0.5)
            self.c1.weight -= self.c1.weight.mean(dim=(1, 2, 3), keepdim=True)  # flat input -> 0
            for b in (self.b1, self.b2, self.b3):
                b.weight.copy_(0.5 + torch.rand(b.weight.shape, generator=g))
        self.eval()

    def forward(self, image: torch.Tensor):
        x = torch.relu(self.b1(self.c1(image)))
        x = torch.relu(self.b2(self.c2(x)))
        fmap = self.b3(self.c3(x))
        return torch.amax(fmap, dim=(2, 3)), fmap


class TinyHead(nn.Module):
    def __init__(self, dim: int = 32, mid: int = 16, scale: float = 10.0, margin: float = 0.76, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.pos1 = nn.Linear(4, mid)
        self.pos2 = nn.Linear(mid, 1)
        self.out = nn.Linear(dim, 1)
        with torch.no_grad():
            self.pos1.weight.copy_(torch.randn((mid, 4), generator=g) * 0.1)
            self.pos1.bias.zero_()
            self.pos1.weight[0] = torch.tensor([0.0, 0.0, 1.0, 0.0])  # unit 0 = |x-y|
            self.pos2.weight.copy_(torch.randn((1, mid), generator=g) * 0.02)
            self.pos2.weight[0, 0] = 1.0
            self.pos2.bias.zero_()
            self.out.weight.fill_(-scale / dim)
            self.out.bias.fill_(scale * margin)
        self.eval()

    def forward(self, embedding_a: torch.Tensor, embedding_b: torch.Tensor):
        a, b = embedding_a, embedding_b
        d = a - b
        f = torch.stack([a * b, a + b, d.abs(), d * d], dim=-1)  # [N, D, 4]
        per_pos = self.pos2(torch.relu(self.pos1(f))).squeeze(-1)  # [N, D]
        return torch.sigmoid(self.out(per_pos)).squeeze(-1)


def export_branch(net: nn.Module, path: Path, size: tuple[int, int]) -> None:
    x = torch.randn(2, 1, *size)
    torch.onnx.export(net, (x,), str(path), input_names=["image"], output_names=["embedding", "feature_map"],
                      dynamic_axes={"image": {0: "n"}, "embedding": {0: "n"}, "feature_map": {0: "n"}},
                      opset_version=17, dynamo=False)


def export_head(net: nn.Module, path: Path, dim: int) -> None:
    a, b = torch.randn(2, dim), torch.randn(2, dim)
    torch.onnx.export(net, (a, b), str(path), input_names=["embedding_a", "embedding_b"],
                      output_names=["probability"],
                      dynamic_axes={"embedding_a": {0: "n"}, "embedding_b": {0: "n"}, "probability": {0: "n"}},
                      opset_version=17, dynamo=False)


def build_tiny_bundle(final: str | Path, *, dim: int = 32, mid: int = 16, size: int = 64,
                      threshold: float = 0.5, branch: nn.Module | None = None) -> Path:
    """Export a tiny branch + head and write a verified bundle at ``final``."""
    prep = Preprocessing(input_height=size, input_width=size)
    branch = branch or TinyBranch(dim)
    head = TinyHead(dim, mid)
    stage = staging_dir(final)
    with warnings.catch_warnings():  # the legacy exporter's deprecation/constant-folding chatter
        warnings.simplefilter("ignore")
        export_branch(branch, stage / "branch.onnx", (size, size))
        export_head(head, stage / "head.onnx", dim)
    fmap_channels = int(branch(torch.zeros(1, 1, size, size))[1].shape[1])
    manifest = {
        "preprocessing": prep.to_dict(),
        "branch": {"kind": "tiny", "embedding_dim": dim, "feature_channels": fmap_channels},
        "head": {"kind": "nn"},
        "training": {"note": "synthetic test fixture, untrained"},
        "config": {},
        "metrics": {},
        "new_individual_threshold": float(threshold),
    }
    return finalize_bundle(stage, final, manifest)


def textured_object_photo(h: int = 240, w: int = 320, box=(100, 60, 220, 160), seed: int = 0) -> np.ndarray:
    """An RGB photo: flat gray background, a bright textured rectangle at ``box`` (x0, y0, x1, y1)."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 90, np.uint8)
    x0, y0, x1, y1 = box
    tex = rng.integers(150, 256, size=(y1 - y0, x1 - x0), dtype=np.uint8)
    img[y0:y1, x0:x1] = tex[..., None]
    return img
