"""Batch-wise augmentation on tensors: affine (zoom, shift, rotation, shear) + brightness/contrast/blur.

Random parameters are drawn on the CPU from a seeded ``torch.Generator`` and then moved to the
batch's device, so CPU and CUDA training see the same augmentation for the same seed; the warp is
``affine_grid`` + ``grid_sample`` with border padding (like the crop's replicate border).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def affine_thetas(n: int, cfg, g: torch.Generator) -> torch.Tensor:
    """[n,2,3] matrices for ``affine_grid`` (output -> input coordinates, normalised -1..1)."""
    zoom = _uniform(n, 1.0 - cfg.zoom, 1.0 + cfg.zoom, g)
    rot = torch.deg2rad(_uniform(n, -cfg.rotation, cfg.rotation, g))
    shear = torch.deg2rad(_uniform(n, -cfg.shear, cfg.shear, g))
    tx = _uniform(n, -2 * cfg.shift, 2 * cfg.shift, g)
    ty = _uniform(n, -2 * cfg.shift, 2 * cfg.shift, g)
    c, s, t = torch.cos(rot), torch.sin(rot), torch.tan(shear)
    # A = R(rot) @ Shear(t) / zoom: zoom > 1 magnifies (samples a smaller area)
    a11, a12 = c, c * t - s
    a21, a22 = s, s * t + c
    theta = torch.stack([torch.stack([a11, a12, tx], -1), torch.stack([a21, a22, ty], -1)], 1)
    theta[:, :, :2] /= zoom[:, None, None]
    return theta


def _gaussian3(device, dtype) -> torch.Tensor:
    k = torch.tensor([1.0, 2.0, 1.0], dtype=dtype, device=device)
    k = torch.outer(k, k)
    return (k / k.sum())[None, None]


def augment_batch(x: torch.Tensor, cfg, g: torch.Generator) -> torch.Tensor:
    """Augment a batch of 0..1 crops [N,1,H,W] (float, any device); returns 0..1 crops, not normalised.

    Args:
        x: the crops.
        cfg: a :class:`model.config.AugmentConfig`.
        g: a CPU generator (the parameters are drawn there, then moved to ``x.device``).
    """
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"augment_batch expects [N,1,H,W], got {tuple(x.shape)}")
    if not cfg.enabled:
        return x
    n = x.shape[0]
    theta = affine_thetas(n, cfg, g).to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    y = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    contrast = _uniform(n, 1.0 - cfg.contrast, 1.0 + cfg.contrast, g).to(x.device, x.dtype)[:, None, None, None]
    bright = _uniform(n, -cfg.brightness, cfg.brightness, g).to(x.device, x.dtype)[:, None, None, None]
    blur = (torch.rand(n, generator=g) < cfg.blur_p).to(x.device, x.dtype)[:, None, None, None]
    mean = y.mean(dim=(2, 3), keepdim=True)
    y = (y - mean) * contrast + mean + bright
    if cfg.blur_p > 0:
        yb = F.conv2d(F.pad(y, (1, 1, 1, 1), mode="replicate"), _gaussian3(x.device, x.dtype))
        y = blur * yb + (1 - blur) * y
    return y.clamp_(0.0, 1.0)

