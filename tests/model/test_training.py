"""Siamese training on tiny synthetic flukes: learning, resume parity, DDP, bad input, CLI."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from model.config import preset
from model.data.records import LabelledPhoto, read_labels
from model.data.synthetic import generate_dataset
from model.errors import CheckpointError, ConfigError, DataError, Interrupted
from model.training.common import embed_all
from model.training.siamese import (
    load_checkpoint,
    model_from_checkpoint,
    train,
)


def _fast_cfg(**kw):
    cfg = preset("tiny")
    cfg.epochs = 2
    cfg.mining.rounds = 1
    cfg.val_fraction = 0.0
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> list[LabelledPhoto]:
    """6 synthetic individuals x 3 photos (small photos: loading is instant)."""
    d = tmp_path_factory.mktemp("syn_small")
    csv = generate_dataset(d, 6, seed=3, photos=3, size=(144, 96))
    return read_labels(csv, d / "images").records


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoint.pt")["model"]


def test_run_folder_events_and_checkpoint(small_set, tmp_path):
    events = []
    cfg = _fast_cfg(val_fraction=0.4)
    res = train(cfg, small_set, tmp_path / "run", events=events.append)
    run = tmp_path / "run"
    assert json.loads((run / "config.json").read_text())["epochs"] == 2
    assert [e["event"] for e in events] == ["start", "epoch", "epoch", "done"]
    ep = events[1]
    for key in ("epoch", "epochs", "loss", "images_per_s", "eta_s", "val_top5"):
        assert key in ep, key
    assert events[-1]["run_dir"] == str(run)
    assert len((run / "history.jsonl").read_text().splitlines()) == 2
    ck = load_checkpoint(run / "checkpoint.pt")
    assert ck["epoch"] == 2 and isinstance(ck["config"], dict)
    assert res.val_individuals == 2 and res.train_individuals == 4
    assert 0.0 <= res.new_individual_threshold <= 1.0
    assert json.loads((run / "summary.json").read_text())["epochs_done"] == 2


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(small_set, tmp_path):
    train(_fast_cfg(), small_set, tmp_path / "straight")
    split = tmp_path / "split"
    with pytest.raises(Interrupted):  # interrupted once the first epoch's checkpoint is written
        train(_fast_cfg(), small_set, split, should_stop=lambda: (split / "checkpoint.pt").exists())
    one = _weights(split)
    train(_fast_cfg(), small_set, tmp_path / "split", resume=True)
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "split")
    assert any(not torch.equal(one[k], b[k]) for k in b)  # the second epoch did change the weights
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5), k
    assert load_checkpoint(tmp_path / "split" / "checkpoint.pt")["epoch"] == 2


def test_bad_input_gets_clear_errors(small_set, tmp_path):
    cfg = _fast_cfg(epochs=1)
    one = [r for r in small_set if r.individual == small_set[0].individual]
    with pytest.raises(DataError, match="only one individual"):
        train(cfg, one, tmp_path / "a")
    singles = list({r.individual: r for r in small_set}.values())
    with pytest.raises(DataError, match="two or more photos"):
        train(cfg, singles, tmp_path / "b")
    missing = [LabelledPhoto(tmp_path / f"nope{i}.jpg", r.individual, r.box) for i, r in enumerate(small_set)]
    with pytest.raises(DataError, match="nope0.jpg"):
        train(cfg, missing, tmp_path / "c")
    with pytest.raises(CheckpointError, match="not found"):
        train(cfg, small_set, tmp_path / "d", resume=True)
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "checkpoint.pt").write_bytes(b"garbage, not a zip")
    with pytest.raises(CheckpointError, match="damaged"):
        train(cfg, small_set, tmp_path / "e", resume=True)
    with pytest.raises(ConfigError, match="--resume"):
        train(cfg, small_set, tmp_path / "e")


def test_a_few_missing_photos_are_skipped_and_reported(small_set, tmp_path):
    recs = list(small_set) + [LabelledPhoto(tmp_path / "gone.jpg", small_set[0].individual, None)]
    res = train(_fast_cfg(epochs=1), recs, tmp_path / "run")
    assert len(res.problems) == 1 and "gone.jpg" in res.problems[0]
    assert res.train_images == len(small_set)


def test_cli_train_progress_json_and_export(small_set, tmp_path, capsys):
    from app.cli import main
    from model.data.records import write_labels

    csv = tmp_path / "labels.csv"
    write_labels(small_set, csv, Path(small_set[0].path).parent)
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    rc = main(["train", "--data", str(csv), "--images", str(Path(small_set[0].path).parent), "--config", "tiny",
               "--epochs", "1", "--set", "val_fraction=0.0", "--out", str(run), "--progress-json"])
    out = capsys.readouterr().out
    assert rc == 0, out
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [e["event"] for e in events] == ["start", "epoch", "done"]
    assert main(["export", str(run), "--out", str(bundle)]) == 2  # the catalog's CSV export points the way
    assert f"flukeid export-model {run} --out BUNDLE" in capsys.readouterr().err and not bundle.exists()
    assert main(["export-model", str(run), "--out", str(bundle)]) == 0
    assert (bundle / "branch.onnx").is_file() and (bundle / "manifest.json").is_file()
    rc = main(["train", "--data", str(csv), "--config", "tiny", "--set", "epochz=1", "--out", str(tmp_path / "x"),
               "--progress-json"])
    captured = capsys.readouterr()
    assert rc == 2 and "epochz" in captured.err
    last = json.loads(captured.out.strip().splitlines()[-1])
    assert last["event"] == "error" and "epochz" in last["message"]


@pytest.mark.slow
def test_tiny_config_learns_synthetic_flukes_well_above_chance(tmp_path):
    """The tiny config (augmentation off, to fit CPU seconds) learns to match its training photos.

    Leave-one-out over the training photos: each photo against all the others, individuals ranked
    by their best photo. Generalising to new photos of synthetic flukes needs far more training
    than a unit test has (that is measured in docs/BENCHMARKS.md); this checks that the loop,
    the miner and the head really learn.
    """
    csv = generate_dataset(tmp_path / "syn", 6, seed=11, photos=4, size=(192, 128))
    recs = read_labels(csv, tmp_path / "syn" / "images").records
    cfg = preset("tiny")
    cfg.val_fraction = 0.0
    cfg.epochs = 8
    cfg.augment.enabled = False
    res = train(cfg, recs, tmp_path / "run")
    assert res.history[-1]["loss"] < res.history[0]["loss"] - 0.1
    model, _ = model_from_checkpoint(load_checkpoint(tmp_path / "run" / "checkpoint.pt"))
    from model.data.dataset import dataset_from_crops, load_records
    from model.preprocess import Preprocessing

    prep = Preprocessing(cfg.input_height, cfg.input_width, cfg.margin)
    ok, crops, _ = load_records(recs, prep)
    emb = embed_all(model, dataset_from_crops(ok, crops, prep, [0] * len(ok)), torch.device("cpu"), cfg)
    names = np.array([r.individual for r in ok])
    uniq = np.unique(names)
    top1 = 0
    with torch.no_grad():
        for i in range(len(ok)):
            s = torch.sigmoid(model.head(emb[i:i + 1].expand(len(ok), -1), emb)).numpy()
            s[i] = -np.inf
            best = np.array([s[names == n].max() for n in uniq])
            top1 += uniq[int(np.argmax(best))] == names[i]
    acc = top1 / len(ok)
    assert acc >= 3 / len(uniq), f"top-1 {acc:.0%} vs chance {1 / len(uniq):.0%}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, recs, out: str, result_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    import torch.distributed as dist

    torch.set_num_threads(1)
    try:
        cfg = _fast_cfg(epochs=2, device="cpu")
        res = train(cfg, recs, out)
        torch.save({"world": res.world_size, "epochs": res.epochs_done, "weights": res.weights_sha256},
                   Path(result_dir) / f"rank{rank}.pt")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_ddp_on_cpu(small_set, tmp_path):
    import torch.multiprocessing as mp

    out = tmp_path / "run"
    mp.spawn(_ddp_worker, args=(2, _free_port(), small_set, str(out), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0 == r1  # both ranks end with bit-identical weights
    assert (r0["world"], r0["epochs"]) == (2, 2)
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 2


def test_dataset_normalisation_matches_inference_preprocessing(small_set):
    from model.data.dataset import CropDataset
    from model.preprocess import Preprocessing, load_image, prepare_batch

    prep = Preprocessing(48, 96, 0.05)
    ds = CropDataset(small_set[:2], prep)
    x, label = ds[1]
    ref = prepare_batch([load_image(small_set[1].path)], [small_set[1].box], prep)[0]
    assert x.shape == (1, 48, 96) and label == ds.labels[1]
    # the cache keeps uint8 crops: within one grey level of inference's float crop
    assert np.abs(x.numpy() - ref).max() < 0.05
    assert ds.crop(1) is ds.crop(1)  # decoded once


def test_augmentation_is_seeded_identity_when_off_and_moves_content():
    from model.config import AugmentConfig
    from model.training.augment import augment_batch

    x = torch.zeros(2, 1, 32, 32)
    x[:, :, 12:20, 12:20] = 1.0
    none = AugmentConfig(zoom=0, shift=0, rotation=0, shear=0, brightness=0, contrast=0, blur_p=0)
    assert torch.allclose(augment_batch(x, none, torch.Generator().manual_seed(0)), x, atol=1e-5)
    cfg = AugmentConfig(shift=0.2, rotation=20)
    a = augment_batch(x, cfg, torch.Generator().manual_seed(1))
    b = augment_batch(x, cfg, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)  # parameters come from the CPU generator: same on any device
    assert not torch.allclose(a, x, atol=1e-2)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    with pytest.raises(ValueError, match=r"\[N,1,H,W\]"):
        augment_batch(torch.zeros(2, 3, 8, 8), cfg, torch.Generator())


def test_random_erasing_sets_one_rectangle_to_the_photo_mean_and_is_off_by_default():
    from model.config import AugmentConfig
    from model.training.augment import augment_batch

    torch.manual_seed(0)
    x = torch.rand(16, 1, 40, 60)
    still = dict(zoom=0, shift=0, rotation=0, shear=0, brightness=0, contrast=0, blur_p=0)
    plain = augment_batch(x, AugmentConfig(**still), torch.Generator().manual_seed(3))
    assert torch.allclose(plain, x, atol=1e-5)  # erase_p defaults to 0: nothing erased
    y = augment_batch(x, AugmentConfig(**still, erase_p=1.0, erase_max=0.2), torch.Generator().manual_seed(3))
    for i in range(len(x)):
        changed = (y[i, 0] - plain[i, 0]).abs() > 1e-6
        rows, cols = torch.nonzero(changed, as_tuple=True)
        assert len(rows) > 0
        box = changed[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.float().mean() > 0.9  # one rectangle (a pixel equal to the mean may stay "unchanged")
        assert 0.015 <= box.numel() / changed.numel() <= 0.21
        assert torch.allclose(y[i, 0][changed], plain[i].mean().expand(int(changed.sum())), atol=1e-5)
    half = augment_batch(x, AugmentConfig(**still, erase_p=0.5), torch.Generator().manual_seed(4))
    erased = [bool(((half[i] - plain[i]).abs() > 1e-6).any()) for i in range(len(x))]
    assert 0 < sum(erased) < len(x)
