"""Synthetic flukes: determinism, exact boxes, long-tailed counts, identities, the synth command."""

from __future__ import annotations

import csv
from collections import Counter

import numpy as np
import pytest

from model.data import synthetic
from model.data.records import read_labels
from model.data.synthetic import (
    fluke_template,
    generate_dataset,
    identity_seed,
    make_identity,
    photo_counts,
    render_fluke_photo,
    render_sea,
)
from model.errors import DataError, Interrupted

SMALL = (192, 128)


def _rows(labels):
    with open(labels, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_same_seed_gives_identical_files(tmp_path):
    a = generate_dataset(tmp_path / "a", 4, seed=7, photos=2, size=SMALL)
    b = generate_dataset(tmp_path / "b", 4, seed=7, photos=2, size=SMALL)
    assert a.read_bytes() == b.read_bytes()
    names = sorted(p.name for p in (tmp_path / "a" / "images").iterdir())
    assert len(names) == 8
    for name in names:
        assert (tmp_path / "a" / "images" / name).read_bytes() == (
            tmp_path / "b" / "images" / name
        ).read_bytes()
    c = generate_dataset(tmp_path / "c", 4, seed=8, photos=2, size=SMALL)
    assert _rows(c) != _rows(a)


def test_fifty_individuals_read_back_with_exact_boxes(tmp_path):
    labels = generate_dataset(tmp_path, 50, seed=3, photos=1, size=SMALL)
    loaded = read_labels(labels)
    assert loaded.problems == []
    assert len(loaded.individuals) == 50
    assert len(loaded.records) == 50
    rows = {r["image"]: r for r in _rows(labels)}
    assert list(rows["s3_0000_00.jpg"]) == ["image", "individual_id", "id_known", "x0", "y0", "x1", "y1"]
    for rec in loaded.records:
        x0, y0, x1, y1 = rec.box
        assert 0 <= x0 < x1 <= SMALL[0] and 0 <= y0 < y1 <= SMALL[1]
        # A fluke fills a good part of the frame but is never a sliver.
        assert (x1 - x0) > 0.25 * SMALL[0] and (y1 - y0) > 5
    # The written box is the box the renderer reports for that photo.
    for i in (0, 17, 49):
        _, box = render_fluke_photo(make_identity(identity_seed(3, i)), synthetic._photo_rng(3, i, 0), SMALL)
        r = rows[f"s3_{i:04d}_00.jpg"]
        assert box == tuple(int(r[k]) for k in ("x0", "y0", "x1", "y1"))


def _plain_finish(img, rng):
    return img


@pytest.mark.parametrize("photo", range(16))
def test_box_is_tight_around_the_fluke(monkeypatch, photo):
    """With camera effects off, the same seed draws the same sea with and without the whale:
    the difference is the fluke (plus foam below it), inside the box and touching all its sides."""
    monkeypatch.setattr(synthetic, "_finish", _plain_finish)
    size = (384, 256)
    ident = make_identity(identity_seed(11, photo))
    img, (x0, y0, x1, y1) = render_fluke_photo(ident, np.random.default_rng(photo), size)
    sea = render_sea(np.random.default_rng(photo), size)
    diff = np.abs(img.astype(int) - sea.astype(int)).sum(axis=2)
    outside = np.ones_like(diff, bool)
    outside[max(0, y0 - 2) : y1 + 2, max(0, x0 - 2) : x1 + 2] = False  # anti-aliased fringe
    outside[max(0, y1 - 40) :, :] = False  # white water spreads around the waterline
    assert diff[outside].max() <= 8
    # Tight: within 2 px of every side there is fluke.
    assert diff[y0 : y0 + 2, x0:x1].max() > 10
    assert diff[y0:y1, x0 : x0 + 2].max() > 10
    assert diff[y0:y1, x1 - 2 : x1].max() > 10
    assert diff[y1 - 2 : y1, x0:x1].max() > 10


def test_photo_counts_are_long_tailed():
    counts = photo_counts(3000, np.random.default_rng(0))
    few = np.mean(counts <= 3)
    many = np.mean(counts >= 10)
    assert few > 0.6
    assert 0.02 < many < 0.2
    assert counts.min() == 1
    at_least_two = photo_counts(500, np.random.default_rng(0), min_photos=2)
    assert at_least_two.min() >= 2
    with pytest.raises(DataError):
        photo_counts(3, np.random.default_rng(0), min_photos=0)


def test_dataset_respects_min_photos(tmp_path):
    labels = generate_dataset(tmp_path, 12, seed=1, size=(128, 96), min_photos=2, max_photos=4)
    per = Counter(r["individual_id"] for r in _rows(labels))
    assert len(per) == 12
    assert min(per.values()) >= 2 and max(per.values()) <= 4


def test_identities_are_stable_and_distinct():
    a1, a2, b = make_identity(5), make_identity(5), make_identity(6)
    assert a1 == a2
    assert a1 != b
    ta, tb = fluke_template(a1), fluke_template(b)
    assert ta.shape == (synthetic.TEMPLATE_H, synthetic.TEMPLATE_W, 4)
    # Pigmentation and outline differ between individuals.
    assert np.abs(ta[..., 3] - tb[..., 3]).mean() > 0.01
    both = (ta[..., 3] > 0.5) & (tb[..., 3] > 0.5)
    assert np.abs(ta[..., 0][both] - tb[..., 0][both]).mean() > 0.1


def test_two_photos_of_one_whale_differ(tmp_path):
    ident = make_identity(1)
    a, box_a = render_fluke_photo(ident, np.random.default_rng(1), SMALL)
    b, box_b = render_fluke_photo(ident, np.random.default_rng(2), SMALL)
    assert a.shape == (SMALL[1], SMALL[0], 3) and a.dtype == np.uint8
    assert box_a != box_b
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 5


def test_render_sea_is_deterministic():
    s1 = render_sea(np.random.default_rng(4), (200, 100))
    s2 = render_sea(np.random.default_rng(4), (200, 100))
    assert s1.shape == (100, 200, 3) and s1.dtype == np.uint8
    assert np.array_equal(s1, s2)


def test_progress_and_stop(tmp_path):
    seen = []
    generate_dataset(tmp_path / "p", 2, photos=2, size=(96, 64), progress=lambda f, m: seen.append(f))
    assert seen == [0.25, 0.5, 0.75, 1.0]
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Interrupted, match="2 of 4"):
        generate_dataset(tmp_path / "s", 2, photos=2, size=(96, 64), should_stop=stop)


@pytest.mark.parametrize(
    "kwargs", [{"individuals": 0}, {"individuals": 2, "photos": 0}, {"individuals": 2, "size": (32, 32)}]
)
def test_bad_arguments_are_refused(tmp_path, kwargs):
    with pytest.raises(DataError):
        generate_dataset(tmp_path, **kwargs)


def test_synth_command(tmp_path, capsys):
    from app.cli import main

    out = tmp_path / "set"
    rc = main(
        ["synth", "--individuals", "3", "--out", str(out), "--size", "128x96", "--photos", "2", "--seed", "2"]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "wrote 6 photos of 3 individuals" in text and "photos/s" in text
    assert len(list((out / "images").glob("*.jpg"))) == 6


@pytest.mark.parametrize("size", [(1024, 300), (64, 64), (300, 700)])
def test_any_frame_shape_holds_the_fluke(size):
    """Wide, tiny and portrait frames: the fluke is scaled to fit and its box stays inside."""
    for k in (6, 12, 24, 55):  # seeds that once drew an empty placement range at 1024x300
        img, (x0, y0, x1, y1) = render_fluke_photo(
            make_identity(k * 7 + size[0]), np.random.default_rng(k), size
        )
        assert img.shape == (size[1], size[0], 3)
        assert 0 <= x0 < x1 <= size[0] and 0 <= y0 < y1 <= size[1]
