"""Batch-wise augmentation on tensors: affine (zoom, shift, rotation, shear) + brightness/contrast/blur,
and optionally random erasing (a rectangle of each photo set to its mean: a wave or glare hiding part
of the fluke or head, so the embedding cannot rest on one mark).

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
    if cfg.erase_p > 0:  # drawn only when enabled, so other configs keep their random streams
        y = _erase(y, cfg, g)
    return y.clamp_(0.0, 1.0)


def _erase(y: torch.Tensor, cfg, g: torch.Generator) -> torch.Tensor:
    """Set one random rectangle per chosen photo (probability ``erase_p``) to that photo's mean.

    The rectangle covers ``[0.02, erase_max]`` of the area, aspect ratio within 1/3..3, anywhere
    inside the image.
    """
    n, _, h, w = y.shape
    on = torch.rand(n, generator=g) < cfg.erase_p
    area = _uniform(n, 0.02, max(cfg.erase_max, 0.02), g) * h * w
    aspect = torch.exp(_uniform(n, -1.0986, 1.0986, g))  # log(1/3)..log(3)
    rh = torch.sqrt(area * aspect).clamp(1, h)
    rw = torch.sqrt(area / aspect).clamp(1, w)
    y0 = torch.rand(n, generator=g) * (h - rh)
    x0 = torch.rand(n, generator=g) * (w - rw)
    dev = y.device
    rows = torch.arange(h, device=dev, dtype=y.dtype)[None, :, None]
    cols = torch.arange(w, device=dev, dtype=y.dtype)[None, None, :]
    t = lambda v: v.to(dev, y.dtype)[:, None, None]  # noqa: E731
    mask = (rows >= t(y0)) & (rows < t(y0 + rh)) & (cols >= t(x0)) & (cols < t(x0 + rw)) & on.to(dev)[:, None, None]
    mean = y.mean(dim=(2, 3), keepdim=True)
    return torch.where(mask[:, None], mean.expand_as(y), y)

