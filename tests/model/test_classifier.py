"""The classifier baseline learns separable individuals and reports metrics on the seed protocol."""

from __future__ import annotations

import numpy as np
import pytest

from model.config import preset
from model.data.records import LabelledPhoto
from model.errors import DataError


def _patterns(tmp_path, n_ind: int = 6, per: int = 6, seed: int = 0) -> list[LabelledPhoto]:
    """Each individual is a fixed blob pattern; photos add noise and a small shift."""
    import cv2

    rng = np.random.default_rng(seed)
    recs = []
    for k in range(n_ind):
        base = cv2.GaussianBlur((rng.random((64, 64)) * 255).astype(np.uint8), (0, 0), 3)
        base = cv2.normalize(base, None, 0, 255, cv2.NORM_MINMAX)
        for j in range(per):
            dx, dy = rng.integers(-2, 3, 2)
            img = np.roll(base, (int(dy), int(dx)), axis=(0, 1)).astype(int) + rng.integers(-10, 11, base.shape)
            p = tmp_path / f"w{k}_{j}.png"
            cv2.imwrite(str(p), np.clip(img, 0, 255).astype(np.uint8))
            recs.append(LabelledPhoto(str(p), f"w{k}"))
    return recs


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread: on a busy 2-core machine two threads can be 40x slower (spinning)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cfg():
    cfg = preset("tiny")
    cfg.epochs, cfg.batch_size, cfg.lr, cfg.num_workers = 20, 8, 3e-3, 1
    cfg.input_height = cfg.input_width = 48
    return cfg


@pytest.mark.slow
def test_classifier_beats_chance_on_seed_protocol(tmp_path):
    from model.training.classifier import evaluate_classifier

    recs = _patterns(tmp_path)
    res = evaluate_classifier(recs, _cfg(), seed=0, flip=True)
    assert res.overall.n == 12  # 6 individuals x 2 queries each
    assert res.overall.top1 >= 0.5  # chance is 1/6
    assert res.info["classes"] == 6 and res.info["epochs"] == 20
    assert res.info["losses"][-1] < res.info["losses"][0]


def test_predict_proba_rows_sum_to_one_and_budget_stops(tmp_path):
    from model.training.classifier import predict_proba, train_classifier

    recs = _patterns(tmp_path, n_ind=3, per=3)
    cfg = _cfg()
    cfg.time_budget_s, cfg.batch_size = 1e-6, 4  # stop after the first of two steps
    model = train_classifier(recs, cfg)
    assert model.info["stopped_by_time_budget"] and model.info["epochs"] < 1
    p = predict_proba(model, recs[:4])
    assert p.shape == (4, 3)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)


def test_one_individual_is_a_data_error(tmp_path):
    from model.training.classifier import train_classifier

    recs = _patterns(tmp_path, n_ind=1, per=3)
    with pytest.raises(DataError):
        train_classifier(recs, _cfg())
