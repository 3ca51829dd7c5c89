"""Synthetic humpback fluke photos: enough like the real thing to train and test without real data.

An individual (:class:`FlukeIdentity`, from a seed) fixes what stays the same across photos of one
whale: the outline of the fluke (span, tip shape, trailing-edge serrations and notches, median
notch) and the ventral pigmentation (black/white proportion and pattern, spots, scars, rake
marks). It is drawn once into a canonical RGBA template. Every photo then re-draws the nuisance:
sea and sky, waves and glare, the camera's roll, tilt, scale and position, how deep the fluke sits
in the water, splash, exposure, blur, noise, colour or grayscale and JPEG quality.

Everything is numpy + OpenCV (no torch), vectorised, and deterministic for a seed: photo ``j`` of
individual ``i`` in a data set of seed ``s`` depends only on ``(s, i, j)``.

Over 600 lines, one job: rendering a synthetic fluke photo (identity, fluke shape, markings, sea,
camera); splitting it would scatter one renderer's parameters over several files.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import cv2
import numpy as np

from model.data.records import LabelledPhoto, write_labels
from model.errors import DataError, Interrupted
from model.safe_io import check_output

Size = tuple[int, int]  # (width, height) in pixels
PhotoBox = tuple[int, int, int, int]  # x0, y0, x1, y1 in photo pixels, x1/y1 exclusive

# Canonical template of a fluke (ventral side, seen from behind, trailing edge up).
TEMPLATE_W = 640
TEMPLATE_H = 280
MAX_PHOTOS = 30


# ----------------------------------------------------------------------------------------------
# Identity
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HalfShape:
    """Outline parameters of one lobe (left or right half of the fluke), in template fractions."""

    tip_y: float  # height of the tip (0 = top of template)
    notch_y: float  # height of the trailing edge at the centre
    sweep: float  # exponent of the trailing edge from centre to tip
    bulge: float  # S-curve of the trailing edge
    tip_curl: float  # extra lift of the outer tip
    chord: float  # lobe chord (depth) near the body
    tip_round: float  # exponent of the chord at the tip (< 1 rounded, 1 pointed)
    lobe_power: float  # how far out the lobe stays broad before tapering (higher = broader)
    serration_amp: float
    serration_count: int
    serration_seed: int
    notches: tuple[tuple[float, float, float], ...]  # (position u, depth, width)
    tip_cut: float  # fraction of the span missing at the tip (damage), 0 for none


@dataclass(frozen=True)
class FlukeIdentity:
    """Everything that stays the same across photos of one individual.

    Built by :func:`make_identity`; the drawing itself is cached by :func:`fluke_template`.
    """

    seed: int
    left: HalfShape
    right: HalfShape
    median_notch_depth: float
    median_notch_width: float
    peduncle_width: float
    black_fraction: float  # share of the ventral surface that is black
    symmetry: float  # 0 = left and right pigmentation unrelated, 1 = mirror images
    margin_width: float  # black band along the trailing edge (fraction of template height)
    streakiness: float  # how much the pattern is streaked from the body towards the edge
    centre_dark: float  # how much darker the centre/peduncle region tends to be
    lobe_white: float  # how much whiter the middle of each lobe tends to be
    speckles: int  # small dark speckles (marbling) on white areas
    n_spots: int
    n_scars: int
    n_rakes: int
    softness: float  # blur of the black/white boundary, template pixels
    mottling: float  # grey mottling of the white areas (0 = clean white)
    white_tone: float
    black_tone: float


def _half_shape(rng: np.random.Generator, base: dict[str, float]) -> HalfShape:
    jit = lambda v, s: float(v + rng.normal(0, s))  # noqa: E731 - small local helper
    n_notches = int(rng.choice([0, 0, 1, 1, 2, 3]))
    notches = tuple(
        (float(rng.uniform(0.12, 0.92)), float(rng.uniform(0.025, 0.085)), float(rng.uniform(0.012, 0.045)))
        for _ in range(n_notches)
    )
    return HalfShape(
        tip_y=jit(base["tip_y"], 0.02),
        notch_y=base["notch_y"],
        sweep=max(0.5, jit(base["sweep"], 0.08)),
        bulge=jit(base["bulge"], 0.015),
        tip_curl=max(0.0, jit(base["tip_curl"], 0.02)),
        chord=max(0.25, jit(base["chord"], 0.03)),
        tip_round=float(np.clip(jit(base["tip_round"], 0.08), 0.35, 1.1)),
        lobe_power=float(np.clip(jit(base["lobe_power"], 0.15), 1.2, 3.5)),
        serration_amp=max(0.0, jit(base["serration_amp"], 0.003)),
        serration_count=int(rng.integers(40, 110)),
        serration_seed=int(rng.integers(0, 2**31 - 1)),
        notches=notches,
        tip_cut=float(rng.uniform(0.02, 0.08)) if rng.random() < 0.12 else 0.0,
    )


def make_identity(seed: int) -> FlukeIdentity:
    """Draw one individual from a seed (same seed, same whale).

    Args:
        seed: any non-negative integer.

    Returns:
        The individual's outline and pigmentation parameters.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xF1CE]))
    base = {
        "tip_y": rng.uniform(0.04, 0.22),
        "notch_y": rng.uniform(0.24, 0.4),
        "sweep": rng.uniform(0.7, 1.5),
        "bulge": rng.uniform(-0.07, 0.07),
        "tip_curl": rng.uniform(0.0, 0.08),
        "chord": rng.uniform(0.3, 0.46),
        "tip_round": rng.uniform(0.45, 1.0),
        "lobe_power": rng.uniform(1.1, 2.2),
        "serration_amp": rng.uniform(0.006, 0.035),
    }
    # Real catalogs: many mostly-black flukes, many mixed, fewer mostly-white.
    kind = rng.choice(3, p=[0.25, 0.35, 0.40])
    black = [rng.uniform(0.05, 0.3), rng.uniform(0.3, 0.7), rng.uniform(0.7, 0.96)][kind]
    return FlukeIdentity(
        seed=int(seed),
        left=_half_shape(rng, base),
        right=_half_shape(rng, base),
        median_notch_depth=float(rng.uniform(0.04, 0.12)),
        median_notch_width=float(rng.uniform(0.015, 0.045)),
        peduncle_width=float(rng.uniform(0.06, 0.1)),
        black_fraction=float(black),
        symmetry=float(rng.uniform(0.3, 0.95)),
        margin_width=float(rng.uniform(0.0, 0.06)),
        streakiness=float(rng.uniform(0.0, 1.0)),
        centre_dark=float(rng.uniform(0.0, 1.2)),
        lobe_white=float(rng.uniform(0.0, 1.5)),
        speckles=int(rng.choice([0, 0, 0, 30, 80])),
        n_spots=int(rng.choice([0, 0, 2, 5, 10, 20])),
        n_scars=int(rng.integers(0, 6)),
        n_rakes=int(rng.choice([0, 0, 1, 1, 2, 3])),
        softness=float(rng.uniform(0.8, 3.5)),
        mottling=float(rng.choice([0.0, 0.0, rng.uniform(0.05, 0.25)])),
        white_tone=float(rng.uniform(0.78, 0.94)),
        black_tone=float(rng.uniform(0.06, 0.16)),
    )


def _half_outline(
    h: HalfShape, ident: FlukeIdentity, n: int = 320
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Trailing and leading edge of one lobe as y(u), u = 0 at the body, 1 at the tip (fractions)."""
    u = np.linspace(0.0, 1.0 - h.tip_cut, n)
    trail = h.notch_y + (h.tip_y - h.notch_y) * u**h.sweep + h.bulge * np.sin(np.pi * u)
    trail -= h.tip_curl * np.clip((u - 0.8) / 0.2, 0, 1) ** 2
    smooth_trail = trail.copy()  # the leading edge follows the undamaged trailing edge
    # Median notch.
    trail += ident.median_notch_depth * np.clip(1 - u / ident.median_notch_width, 0, None) ** 1.3
    # Serrations: a jagged profile by linear interpolation of random offsets, stronger outwards.
    srng = np.random.default_rng(h.serration_seed)
    knots = srng.random(h.serration_count + 1)
    prof = np.interp(u * h.serration_count, np.arange(h.serration_count + 1), knots)
    trail += h.serration_amp * prof * (0.4 + 0.6 * u)
    for pos, depth, width in h.notches:
        trail += depth * np.clip(1 - np.abs(u - pos) / width, 0, None) ** 1.5
    # Broad lobe that tapers near the tip (rounded when tip_round < 1, pointed near 1).
    chord = h.chord * np.clip(1 - u**h.lobe_power, 0, None) ** h.tip_round
    if h.tip_cut:
        chord = np.maximum(chord, 0.05 * h.chord)
    lead = smooth_trail + chord
    ped = np.exp(-((u / ident.peduncle_width) ** 2))
    lead = lead + (1.02 - lead) * ped
    return u, trail, lead


def _outline_polygon(ident: FlukeIdentity) -> np.ndarray:
    """Closed outline of the fluke in template pixels, int32 [N, 2]."""
    half = 0.485 * TEMPLATE_W
    cx = TEMPLATE_W / 2
    pts = []
    ul, tl, ll = _half_outline(ident.left, ident)
    ur, tr, lr = _half_outline(ident.right, ident)
    # Left trailing edge from tip to centre, right trailing edge centre to tip,
    # right leading edge tip to body, left leading edge body to tip.
    pts.append(np.stack([cx - ul[::-1] * half, tl[::-1]], 1))
    pts.append(np.stack([cx + ur * half, tr], 1))
    pts.append(np.stack([cx + ur[::-1] * half, lr[::-1]], 1))
    pts.append(np.stack([cx - ul * half, ll], 1))
    poly = np.concatenate(pts, 0)
    poly[:, 1] *= TEMPLATE_H
    return np.round(poly * 4).astype(np.int32)  # 2 fractional bits for cv2.fillPoly(shift=2)


def _smooth_noise(rng: np.random.Generator, gh: int, gw: int, h: int, w: int) -> np.ndarray:
    """Smooth random field in [-1, 1]-ish: a small random grid resized with bicubic interpolation."""
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


@functools.lru_cache(maxsize=4)  # 2.9 MB each; photos use the uint8 copy cached below
def fluke_template(ident: FlukeIdentity) -> np.ndarray:
    """The individual drawn in canonical pose: RGBA float32 [TEMPLATE_H, TEMPLATE_W, 4], alpha 0..1."""
    rng = np.random.default_rng(np.random.SeedSequence([ident.seed, 0xB1AC]))
    h, w = TEMPLATE_H, TEMPLATE_W
    mask8 = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask8, [_outline_polygon(ident)], 255, lineType=cv2.LINE_AA, shift=2)
    inside = mask8 > 127

    # Pigmentation score: smooth fields (partly mirror-symmetric) + streaks + structural priors.
    f = _smooth_noise(rng, 5, 9, h, w) + 0.5 * _smooth_noise(rng, 9, 18, h, w)
    f = ident.symmetry * 0.5 * (f + f[:, ::-1]) + (1 - ident.symmetry) * f
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, by = w / 2, h * 1.0
    ang = np.arctan2(yy - by, xx - cx)  # radial angle from the peduncle
    streak_src = rng.standard_normal(64).astype(np.float32)
    streak_src = 0.5 * (streak_src + streak_src[::-1]) if ident.symmetry > 0.6 else streak_src
    idx = (ang + np.pi) / np.pi * 63  # angles span (-pi, 0) above the body
    streaks = np.interp(idx.ravel(), np.arange(64), streak_src).reshape(h, w)
    f = f + ident.streakiness * 0.8 * streaks.astype(np.float32)
    centre = np.exp(-(((xx - cx) / (0.12 * w)) ** 2)) + 0.5 * (yy / h) ** 2
    f = f + ident.centre_dark * centre
    # White lobe centres (most mixed flukes): a soft elliptical dip of the score on each lobe.
    for side in (-1, 1):
        lx, ly = cx + side * 0.3 * w, 0.38 * h
        f = f - ident.lobe_white * np.exp(-(((xx - lx) / (0.17 * w)) ** 2 + ((yy - ly) / (0.2 * h)) ** 2))
    dist = cv2.distanceTransform(mask8, cv2.DIST_L2, 3)
    f = f + 1.5 * ident.margin_width * 3 * np.exp(-dist / max(1.0, ident.margin_width * h))
    thr = np.quantile(f[inside], 1 - ident.black_fraction)
    black = (f > thr).astype(np.float32)
    # Brushy boundary: a fine noise perturbation, then a touch of blur.
    fine = _smooth_noise(rng, h // 6, w // 6, h, w)
    black = np.clip(black + 0.35 * fine * (np.abs(f - thr) < 0.25), 0, 1)
    black = cv2.GaussianBlur(black, (0, 0), ident.softness)

    layer = np.zeros((h, w), np.float32)  # +1 paints white, -1 paints black
    for _ in range(ident.n_spots):
        x, y = int(rng.uniform(0.08, 0.92) * w), int(rng.uniform(0.15, 0.8) * h)
        r = int(rng.uniform(3, 9))
        val = -1.0 if black[min(y, h - 1), min(x, w - 1)] < 0.5 else 1.0
        cv2.ellipse(
            layer,
            (x, y),
            (r, int(r * rng.uniform(0.6, 1.0))),
            float(rng.uniform(0, 180)),
            0,
            360,
            val,
            -1,
            cv2.LINE_AA,
        )
    for _ in range(ident.speckles):
        x, y = int(rng.uniform(0.05, 0.95) * w), int(rng.uniform(0.1, 0.85) * h)
        if black[min(y, h - 1), min(x, w - 1)] < 0.5:
            cv2.circle(layer, (x, y), int(rng.integers(2, 4)), -1.0, -1, cv2.LINE_AA)
    for _ in range(ident.n_scars):
        x, y = rng.uniform(0.1, 0.9) * w, rng.uniform(0.2, 0.8) * h
        a, ln = rng.uniform(0, np.pi), rng.uniform(25, 90)
        dx, dy = math.cos(a) * ln / 2, math.sin(a) * ln / 2
        cv2.line(
            layer,
            (int(x - dx), int(y - dy)),
            (int(x + dx), int(y + dy)),
            1.0,
            int(rng.integers(2, 4)),
            cv2.LINE_AA,
        )
    for _ in range(ident.n_rakes):  # killer-whale rake marks: 2-4 parallel curved lines
        x, y = rng.uniform(0.15, 0.85) * w, rng.uniform(0.25, 0.75) * h
        a, ln = rng.uniform(0, np.pi), rng.uniform(40, 110)
        gap, bend = rng.uniform(7, 12), rng.uniform(-12, 12)
        t = np.linspace(-0.5, 0.5, 12)
        for k in range(int(rng.integers(2, 5))):
            off = (k - 1.5) * gap
            px = x + math.cos(a) * ln * t - math.sin(a) * (off + bend * (1 - 4 * t**2))
            py = y + math.sin(a) * ln * t + math.cos(a) * (off + bend * (1 - 4 * t**2))
            cv2.polylines(layer, [np.stack([px, py], 1).astype(np.int32)], False, 1.0, 2, cv2.LINE_AA)
    black = np.clip(black - np.clip(layer, 0, 1) + np.clip(-layer, 0, 1), 0, 1)

    tone = ident.white_tone + (ident.black_tone - ident.white_tone) * black
    tone = tone + 0.035 * _smooth_noise(rng, h // 3, w // 3, h, w)  # skin texture
    if ident.mottling:  # grey clouds in the white areas
        mott = np.clip(_smooth_noise(rng, h // 12, w // 12, h, w), 0, None)
        tone = tone - ident.mottling * mott * (1 - black)
    tone = tone * (1 - 0.25 * np.exp(-dist / 3.0))  # darker rim
    rgba = np.empty((h, w, 4), np.float32)
    rgba[..., 0] = tone * (1.0 + 0.015 * (1 - black))
    rgba[..., 1] = tone
    rgba[..., 2] = tone * (1.02 + 0.03 * black)
    rgba[..., 3] = mask8.astype(np.float32) / 255.0
    rgba[..., :3] = np.clip(rgba[..., :3], 0, 1)
    rgba.setflags(write=False)  # cached and shared
    return rgba


@functools.lru_cache(maxsize=64)
def _template_u8(ident: FlukeIdentity) -> np.ndarray:
    """:func:`fluke_template` as RGBA uint8 (what the photos warp: 4x less memory traffic)."""
    out = cv2.convertScaleAbs(fluke_template(ident), alpha=255.0)
    out.setflags(write=False)  # cached and shared
    return out


# ----------------------------------------------------------------------------------------------
# Scene
# ----------------------------------------------------------------------------------------------


def _sea(rng: np.random.Generator, size: Size) -> tuple[np.ndarray, int]:
    """Sea (and sometimes sky) background, RGB uint8; returns it and the horizon row.

    Drawn in float at half resolution, then enlarged as uint8 (the sea is smooth; this makes the
    background a quarter of the cost).
    """
    w, h = size
    w2, h2 = max(32, w // 2), max(32, h // 2)
    sea, horizon = _sea_small(rng, (w2, h2))
    sea8 = cv2.convertScaleAbs(np.clip(sea, 0, 1, out=sea), alpha=255.0)
    sea = cv2.resize(sea8, (w, h), interpolation=cv2.INTER_LINEAR)
    return sea, (int(round(horizon * h / h2)) if horizon > 0 else horizon)


def _sea_small(rng: np.random.Generator, size: Size) -> tuple[np.ndarray, int]:
    w, h = size
    horizon = int(rng.uniform(0.04, 0.35) * h) if rng.random() < 0.45 else -1
    deep = np.array([rng.uniform(0.02, 0.18), rng.uniform(0.12, 0.35), rng.uniform(0.25, 0.55)], np.float32)
    if rng.random() < 0.3:  # overcast grey-blue seas
        g = rng.uniform(0.15, 0.45)
        deep = np.float32([g * 0.85, g * 0.95, g * 1.08]) + rng.normal(0, 0.015, 3).astype(np.float32)
    light = np.clip(deep * rng.uniform(1.3, 2.0) + 0.05, 0, 1)
    rows = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    start = max(horizon, 0) / h
    t = np.clip((rows - start) / max(1e-3, 1 - start), 0, 1)
    base = light[None, None, :] * (1 - t[..., None]) ** 1.5 + deep[None, None, :] * (
        1 - (1 - t[..., None]) ** 1.5
    )
    base = np.broadcast_to(base, (h, w, 3))
    # Waves: horizontally stretched noise, finer near the horizon (perspective), plus crests.
    near = t
    coarse = _smooth_noise(rng, max(2, h // 12), max(2, w // 30), h, w)
    fine = _smooth_noise(rng, max(2, h // 3), max(2, w // 9), h, w)
    waves = (near * coarse + (1.2 - near) * fine) * rng.uniform(0.04, 0.11)
    sea = base + waves[..., None]
    crest = np.clip((fine - rng.uniform(1.8, 2.8)) * 0.6, 0, 1) * rng.uniform(0.2, 0.8)
    sea = sea + crest[..., None]
    # Glare: glitter where the fine waves peak, inside a soft patch.
    if rng.random() < 0.4:
        gx, gy = rng.uniform(0, w), rng.uniform(max(horizon, 0), h)
        yy, xx = np.ogrid[0:h, 0:w]
        patch = np.exp(-(((xx - gx) / (0.25 * w)) ** 2 + ((yy - gy) / (0.15 * h)) ** 2)).astype(np.float32)
        sparkle = np.clip(_smooth_noise(rng, int(h / 1.5), w // 3, h, w) - 1.8, 0, 1) * 2
        sea = sea + (patch * (0.15 + sparkle))[..., None] * rng.uniform(0.3, 0.9)
    sea = np.ascontiguousarray(sea, np.float32)
    if horizon > 0:
        g, blue = rng.uniform(0.5, 0.75), rng.uniform(0.0, 0.2)
        sky_top = np.float32([g, g + 0.4 * blue, g + blue])
        sky_bot = np.clip(sky_top + 0.15, 0, 1)
        tt = np.linspace(0, 1, horizon, dtype=np.float32)[:, None, None]
        sky = sky_top * (1 - tt) + sky_bot * tt
        sea[:horizon] = np.broadcast_to(sky, (horizon, w, 3))
        if rng.random() < 0.35:  # distant land strip
            land_h = int(rng.uniform(0.02, 0.08) * h)
            prof = (_smooth_noise(rng, 1, 6, 1, w)[0] * 0.5 + 0.5) * land_h
            yy = np.arange(horizon)[:, None]
            land = yy >= (horizon - prof[None, :])
            sea[:horizon][land] = np.array([0.22, 0.27, 0.25], np.float32) * rng.uniform(0.6, 1.3)
    return sea, horizon


# Standard normal quantiles at the 256 byte values (midpoints), for cheap Gaussian noise.
_GAUSS_QUANTILES = np.array([NormalDist().inv_cdf((i + 0.5) / 256) for i in range(256)])


def _finish(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Camera nuisance on an RGB uint8 image: exposure, contrast, colour cast, blur, noise.

    Tone changes are one 256-entry lookup table per channel (much faster than float powers over
    the whole frame).
    """
    img8 = img
    gain = rng.uniform(0.7, 1.25)
    gamma = rng.uniform(0.75, 1.35)
    contrast = rng.uniform(0.75, 1.2)
    cast = 1 + rng.normal(0, 0.04, 3)
    levels = np.arange(256) / 255.0
    tone = np.clip(levels * gain, 0, 1) ** gamma
    mean = float(np.interp(float(img8[::8, ::8].mean()), np.arange(256), tone * 255)) / 255.0
    tone = (tone - mean) * contrast + mean
    lut = np.clip(tone[:, None] * cast[None, :] * 255 + 0.5, 0, 255).astype(np.uint8)
    img8 = cv2.LUT(img8, lut.reshape(256, 1, 3))
    if rng.random() < 0.2:
        img8 = cv2.cvtColor(cv2.cvtColor(img8, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    r = rng.random()
    if r < 0.35:
        img8 = cv2.GaussianBlur(img8, (0, 0), rng.uniform(0.5, 1.8))
    elif r < 0.45:
        k = int(rng.integers(3, 9))
        kern = np.zeros((k, k), np.float32)
        kern[k // 2, :] = 1.0 / k
        m = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), float(rng.uniform(0, 180)), 1.0)
        kern = cv2.warpAffine(kern, m, (k, k))
        img8 = cv2.filter2D(img8, -1, kern / max(float(kern.sum()), 1e-6))
    # Sensor noise (luminance): positive and negative parts added with uint8 saturation.
    # Random bytes mapped through Gaussian quantiles: far cheaper than drawing normals.
    sigma = rng.uniform(0.5, 8.0)
    u = rng.integers(0, 256, img8.shape[:2], dtype=np.uint8)
    q = sigma * _GAUSS_QUANTILES
    pos = cv2.LUT(u, np.clip(np.round(q), 0, 255).astype(np.uint8))
    neg = cv2.LUT(u, np.clip(np.round(-q), 0, 255).astype(np.uint8))
    img8 = cv2.add(img8, cv2.merge([pos, pos, pos]))
    return cv2.subtract(img8, cv2.merge([neg, neg, neg]))


def render_sea(rng: np.random.Generator, size: Size = (768, 512)) -> np.ndarray:
    """A photo of sea (and maybe sky) with no whale: a negative for the fluke detector.

    Args:
        rng: the random generator (the photo depends only on its state).
        size: (width, height) in pixels.

    Returns:
        RGB uint8 [height, width, 3].
    """
    sea, _ = _sea(rng, size)
    return _finish(sea, rng)


def _placement(rng: np.random.Generator, size: Size) -> np.ndarray:
    """A homography from template pixels to photo pixels: scale, aspect, tilt, roll, position."""
    w, h = size
    fw = rng.uniform(0.42, 0.9) * w
    fh = fw * TEMPLATE_H / TEMPLATE_W * rng.uniform(0.75, 1.2)
    yaw = rng.uniform(-0.22, 0.22)  # one side further away
    pitch = rng.uniform(-0.12, 0.12)  # top edge narrower or wider than the bottom
    src = np.float32([[0, 0], [TEMPLATE_W, 0], [TEMPLATE_W, TEMPLATE_H], [0, TEMPLATE_H]])
    dst = np.float32(
        [
            [-fw / 2 * (1 - pitch), -fh / 2 * (1 - yaw)],
            [fw / 2 * (1 - pitch), -fh / 2 * (1 + yaw)],
            [fw / 2, fh / 2 * (1 + yaw)],
            [-fw / 2, fh / 2 * (1 - yaw)],
        ]
    )
    dst[:, 0] *= 1 - np.abs(yaw) * 0.5
    roll = math.radians(float(np.clip(rng.normal(0, 6), -15, 15)))
    rot = np.float32([[math.cos(roll), -math.sin(roll)], [math.sin(roll), math.cos(roll)]])
    dst = dst @ rot.T
    lo, hi = dst.min(0), dst.max(0)
    span = hi - lo
    scale = min(1.0, (w - 8) / span[0], (h - 8) / span[1])
    dst *= scale
    lo, hi = dst.min(0), dst.max(0)
    cx_lo, cy_lo = 4 - lo[0], 4 - lo[1]
    cx = rng.uniform(cx_lo, max(cx_lo, w - 4 - hi[0]))  # max(): rounding when the fluke fills the frame
    cy = rng.uniform(cy_lo, max(cy_lo, h - 4 - hi[1]))
    dst += np.float32([cx, cy])
    return cv2.getPerspectiveTransform(src, dst)


def render_fluke_photo(
    identity: FlukeIdentity, rng: np.random.Generator, size: Size = (768, 512)
) -> tuple[np.ndarray, PhotoBox]:
    """One photo of an individual's fluke in a fresh scene.

    Args:
        identity: the individual (see :func:`make_identity`).
        rng: the random generator for this photo's nuisance.
        size: (width, height) in pixels.

    Returns:
        RGB uint8 [height, width, 3] and the fluke's box ``(x0, y0, x1, y1)`` in pixels
        (x1, y1 exclusive): the tight box of the visible (above-water) fluke.
    """
    w, h = size
    sea, _horizon = _sea(rng, size)
    tmpl = _template_u8(identity)
    H = _placement(rng, size)
    # Work inside the fluke's bounding rectangle (plus room for foam) only.
    corners = cv2.perspectiveTransform(
        np.float32([[[0, 0], [TEMPLATE_W, 0], [TEMPLATE_W, TEMPLATE_H], [0, TEMPLATE_H]]]), H
    )[0]
    pad = 40
    rx0 = max(0, int(corners[:, 0].min()) - pad)
    ry0 = max(0, int(corners[:, 1].min()) - pad)
    rx1 = min(w, int(math.ceil(corners[:, 0].max())) + pad)
    ry1 = min(h, int(math.ceil(corners[:, 1].max())) + pad)
    rw, rh = rx1 - rx0, ry1 - ry0
    Hr = np.float64([[1, 0, -rx0], [0, 1, -ry0], [0, 0, 1]]) @ H
    warped = cv2.warpPerspective(
        tmpl, Hr, (rw, rh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    alpha = warped[..., 3].astype(np.float32)
    alpha *= 1.0 / 255.0
    # Lighting on the fluke: its own level (sometimes backlit); the camera's exposure comes later.
    level = rng.uniform(0.75, 1.15) * (0.45 if rng.random() < 0.08 else 1.0)
    rgb = cv2.convertScaleAbs(warped[..., :3], alpha=level)
    yy = np.arange(rh, dtype=np.float32)[:, None]
    xx = np.arange(rw, dtype=np.float32)[None, :]

    # Waterline: horizontal through the lower part of the fluke, with a ripple.
    pw = identity.peduncle_width * 0.485 * TEMPLATE_W
    base = cv2.perspectiveTransform(
        np.float32([[[TEMPLATE_W / 2 - pw, TEMPLATE_H], [TEMPLATE_W / 2 + pw, TEMPLATE_H]]]), Hr
    )[0]
    rows_any = np.flatnonzero(alpha.max(axis=1) > 0.5)
    top = float(rows_any[0]) if rows_any.size else 0.0
    bottom = float(base[:, 1].min()) - 3
    water_y = top + rng.uniform(0.65, 1.0) * max(1.0, bottom - top)
    amp, freq, ph = rng.uniform(0.5, 4), rng.uniform(0.01, 0.05), rng.uniform(0, 2 * np.pi)
    wl = water_y + amp * np.sin(xx * freq + ph)
    alpha[yy >= wl] = 0.0

    visible = alpha > 0.25  # include the anti-aliased fringe of thin tips
    cols = np.flatnonzero(visible.any(axis=0))
    rows = np.flatnonzero(visible.any(axis=1))
    if cols.size == 0:
        raise DataError(f"synthetic fluke of identity {identity.seed} fell outside the photo")
    bx0, by0, bx1, by1 = int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
    box = (bx0 + rx0, by0 + ry0, bx1 + rx0, by1 + ry0)

    roi = sea[ry0:ry1, rx0:rx1]
    img = cv2.blendLinear(rgb, roi, alpha, 1.0 - alpha)

    # Foam along the waterline and spray / splash over the lower fluke.
    # White water: a ragged band around the waterline, strongest where the body enters the water.
    px_c = float(base[:, 0].mean())
    thick = rng.uniform(3, 16)
    spread = rng.uniform(0.15, 0.7) * (bx1 - bx0)
    band = np.exp(-(((yy - water_y - thick * 0.5) / thick) ** 2)) * np.exp(-(((xx - px_c) / spread) ** 2))
    rag = _smooth_noise(rng, max(2, rh // 6), max(2, rw // 10), rh, rw)
    rag *= 0.9
    rag += 1.2
    rag *= band * rng.uniform(0.4, 1.3)
    foam = np.clip(rag, 0, 1, out=rag)
    if rng.random() < 0.5:  # water streaming off the trailing edge in thin curtains
        vis_cols = np.flatnonzero(visible.any(axis=0))
        tops = visible.argmax(axis=0)
        for x in rng.choice(
            vis_cols, size=min(len(vis_cols), int(rng.integers(3, 20))), replace=False
        ).tolist():
            y_top = int(tops[x]) + 3
            y_end = int(min(water_y, y_top + rng.uniform(0.3, 0.9) * max(10.0, water_y - y_top)))
            cv2.line(
                foam, (x, y_top), (x + int(rng.integers(-2, 3)), y_end), float(rng.uniform(0.25, 0.6)), 1
            )
    if rng.random() < 0.5:  # spray droplets
        n = int(rng.integers(50, 400))
        px = rng.uniform(bx0 + 8, max(bx0 + 9, bx1 - 8), n).astype(np.int32)  # over the fluke
        py = rng.uniform(by0 + 8, max(by0 + 9, water_y), n).astype(np.int32)
        rad = rng.integers(1, 3, n)
        val = rng.uniform(0.3, 0.9, n)
        for x, y, r, v in zip(px.tolist(), py.tolist(), rad.tolist(), val.tolist(), strict=True):
            cv2.circle(foam, (x, y), r, v, -1)
    foam = cv2.GaussianBlur(foam, (0, 0), rng.uniform(0.8, 2.0))
    white = np.full_like(img, 242)
    sea[ry0:ry1, rx0:rx1] = cv2.blendLinear(white, img, foam, 1.0 - foam)
    return _finish(sea, rng), box


# ----------------------------------------------------------------------------------------------
# Data sets
# ----------------------------------------------------------------------------------------------


def photo_counts(
    n_individuals: int, rng: np.random.Generator, *, min_photos: int = 1, max_photos: int = MAX_PHOTOS
) -> np.ndarray:
    """Photos per individual, long-tailed like real catalogs: many 1-3, a few 10 or more.

    P(n) is proportional to n^-1.6 on [min_photos, max_photos].
    """
    if min_photos < 1 or max_photos < min_photos:
        raise DataError(f"invalid photo counts: min_photos={min_photos}, max_photos={max_photos}")
    n = np.arange(min_photos, max_photos + 1)
    p = n.astype(float) ** -1.6
    return rng.choice(n, size=n_individuals, p=p / p.sum())


def _photo_rng(seed: int, individual: int, photo: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(individual), int(photo), 0x9E0]))


def identity_seed(seed: int, individual: int) -> int:
    """The identity seed of individual ``individual`` in a data set of seed ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(individual), 0x1D]).generate_state(1)[0])


def individual_name(seed: int, individual: int) -> str:
    """The individual_id written to labels.csv."""
    return f"syn{seed}:{individual:04d}"


def generate_dataset(
    out_dir: str | Path,
    individuals: int,
    seed: int = 0,
    photos: int | None = None,
    size: Size = (768, 512),
    progress: Callable[[float, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    *,
    min_photos: int = 1,
    max_photos: int = MAX_PHOTOS,
    jpeg_quality: tuple[int, int] = (60, 95),
) -> Path:
    """Write a synthetic photo-ID data set: ``out_dir/images/*.jpg`` and ``out_dir/labels.csv``.

    labels.csv has the columns image, individual_id, id_known, x0, y0, x1, y1 (the format of
    ../shared/data; image relative to ``images/``; boxes in pixels, x1/y1 exclusive).

    Args:
        out_dir: folder to write (created if needed; existing files of the same names are replaced;
            never a catalog's folder, see :func:`model.safe_io.check_output`).
        individuals: how many individuals.
        seed: the data set's seed; the same seed gives identical files.
        photos: photos per individual; ``None`` draws a long-tailed count for each.
        size: (width, height) of every photo.
        progress: called as ``progress(fraction, message)``.
        should_stop: polled between photos; when it returns True, :class:`Interrupted` is raised.
        min_photos: the least photos any individual gets when ``photos`` is None.
        max_photos: the most photos any individual gets when ``photos`` is None.
        jpeg_quality: range of JPEG qualities drawn per photo.

    Returns:
        The path of labels.csv.

    Raises:
        DataError: bad arguments or an unwritable folder.
        Interrupted: ``should_stop`` returned True.
    """
    if individuals < 1:
        raise DataError(f"individuals must be at least 1 (got {individuals})")
    w, h = int(size[0]), int(size[1])
    if w < 64 or h < 64:
        raise DataError(f"photo size {w}x{h} is too small (at least 64x64)")
    out = check_output(out_dir, folder=True, replace=True, what="data set folder")
    images = out / "images"
    try:
        images.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{images}: cannot create folder ({exc.strerror or exc})") from None
    check_output(out / "labels.csv", replace=True, what="labels file")
    if photos is not None:
        if photos < 1:
            raise DataError(f"photos must be at least 1 (got {photos})")
        counts = np.full(individuals, int(photos))
    else:
        counts = photo_counts(
            individuals,
            np.random.default_rng([int(seed), 0xC0]),
            min_photos=min_photos,
            max_photos=max_photos,
        )
    total = int(counts.sum())
    rows: list[LabelledPhoto] = []
    done = 0
    for i in range(individuals):
        ident = make_identity(identity_seed(seed, i))
        name = individual_name(seed, i)
        for j in range(int(counts[i])):
            if should_stop is not None and should_stop():
                raise Interrupted(f"synthetic data set in {out} stopped after {done} of {total} photos")
            rng = _photo_rng(seed, i, j)
            rgb, box = render_fluke_photo(ident, rng, (w, h))
            quality = int(rng.integers(jpeg_quality[0], jpeg_quality[1] + 1))
            fname = f"s{seed}_{i:04d}_{j:02d}.jpg"
            ok, buf = cv2.imencode(
                ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
            )
            if not ok:
                raise DataError(f"{images / fname}: JPEG encoding failed")
            try:
                (images / fname).write_bytes(buf.tobytes())
            except OSError as exc:
                raise DataError(f"{images / fname}: cannot write ({exc.strerror or exc})") from None
            rows.append(LabelledPhoto(images / fname, name, tuple(float(v) for v in box)))
            done += 1
            if progress is not None:
                progress(done / total, f"photo {done} of {total}")
    return write_labels(rows, out / "labels.csv", images)
