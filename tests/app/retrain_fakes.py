"""What the retraining tests share (tests/app/test_retraining.py, tests/ui/test_retrain_dialog.py).

A small synthetic catalog with a tiny untrained model, the ``catalog`` fixture that hands each test
a fresh copy of it, and a *fake training Python* (a script that answers ``-m app train|export|
train-detector`` quickly and hands anything else to the real Python). A test module uses the
fixture by importing ``catalog_fixture``.
"""

from __future__ import annotations

import hashlib
import stat
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]

# --- a small synthetic catalog --------------------------------------------------------------------


_TINY_BUNDLE: list[Path] = []


def tiny_bundle_source() -> Path:
    """An untrained tiny bundle, built once per test session (torch export takes seconds)."""
    if not _TINY_BUNDLE:
        import tempfile

        from tests.model.tiny_models import build_tiny_bundle

        _TINY_BUNDLE.append(build_tiny_bundle(Path(tempfile.mkdtemp(prefix="flukeid-tiny-")) / "tiny"))
    return _TINY_BUNDLE[0]


def make_catalog(root: Path, *, individuals: int = 4, photos_each: int = 4, size=(384, 256), bundle: bool = True):
    """A catalog of synthetic fluke photos, every photo identified, with boxes (some manual).

    With ``bundle`` an untrained tiny bundle is registered as the active model.
    """
    from app.catalog import Catalog
    from model.api import make_identity, render_fluke_photo

    photo_dir = root / "photos"
    photo_dir.mkdir(parents=True)
    cat = Catalog.create(root / "catalog")
    for k in range(individuals):
        ident = make_identity(1000 + k)
        iid = cat.add_individual(f"W{k:03d}")
        for j in range(photos_each):
            img, box = render_fluke_photo(ident, np.random.default_rng(100 * k + j), size)
            path = photo_dir / f"w{k}_{j}.jpg"
            Image.fromarray(img).save(path, quality=90)
            data = path.read_bytes()
            pid = cat.add_photo(path=str(path), sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                                width=size[0], height=size[1])
            cat.add_box(pid, box, source="manual" if j == 0 else "auto", confirmed=True)
            cat.add_identification(pid, iid, how="imported")
    if bundle:
        import shutil

        path = shutil.copytree(tiny_bundle_source(), cat.models_dir / "m-initial")
        cat.add_model("m-initial", path, metrics={}, activate=True)
    return cat


FAKE_PYTHON = textwrap.dedent('''\
    #!{python}
    """A stand-in training Python: fast answers for -m app train/export/train-detector."""
    import json, os, signal, sys, time
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as app.cli.interruptible in the real one
    args = sys.argv[1:]
    if args[:2] != ["-m", "app"]:
        os.execv({python!r}, [{python!r}] + args)
    sys.path.insert(0, {repo!r})
    cmd, rest = args[2], args[3:]
    def opt(name, default=None):
        return rest[rest.index(name) + 1] if name in rest else default
    mode = os.environ.get("FAKE_TRAIN_MODE", "ok")
    if cmd == "train":
        out = opt("--out")
        os.makedirs(out, exist_ok=True)
        epochs = int(opt("--epochs", 3))
        start = 1
        if "--resume" in rest and os.path.exists(os.path.join(out, "last.ckpt")):
            start = int(open(os.path.join(out, "last.ckpt")).read()) + 1
        print(json.dumps({{"event": "start", "epochs": epochs, "resumed_from": start - 1}}), flush=True)
        for e in range(start, epochs + 1):
            time.sleep(float(os.environ.get("FAKE_EPOCH_S", "0.05")))
            with open(os.path.join(out, "last.ckpt"), "w") as f:
                f.write(str(e))
            print(json.dumps({{"event": "epoch", "epoch": e, "epochs": epochs, "loss": 1.0 / e,
                              "val_top5": min(1.0, 0.2 * e), "images_per_s": 50.0,
                              "eta_s": 0.05 * (epochs - e)}}), flush=True)
            if mode == "crash" and e == 2:
                print("Traceback (most recent call last):\\nRuntimeError: CUDA out of memory", file=sys.stderr)
                sys.exit(1)
        if mode == "no-done":
            sys.exit(0)
        print(json.dumps({{"event": "done", "run_dir": out}}), flush=True)
    elif cmd == "export-model":
        if mode == "export-fails":
            print("export: parity check failed", file=sys.stderr)
            sys.exit(1)
        import shutil
        shutil.copytree(os.environ["FAKE_BUNDLE"], opt("--out"))
    elif cmd == "train-detector":
        print("[ 50.0%] epoch 1/2", flush=True)
        if mode == "detector-fails":
            print("detector: no photo could be read", file=sys.stderr)
            sys.exit(1)
        out = opt("--out")
        os.makedirs(out)
        open(os.path.join(out, "detector.onnx"), "wb").write(b"fake detector")
        json.dump({{"detector": {{"input_size": 96}}, "format_version": 1}}, open(os.path.join(out, "manifest.json"), "w"))
    else:
        sys.exit(2)
''')


def make_fake_python(folder: Path) -> str:
    path = folder / "fake-python"
    path.write_text(FAKE_PYTHON.format(python=sys.executable, repo=str(REPO)))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


_TEMPLATE: list[Path] = []


def catalog_copy(dest: Path):
    """A fresh copy of a catalog made once per session (the photos stay shared, read-only)."""
    import shutil
    import tempfile

    from app.catalog import Catalog

    if not _TEMPLATE:
        root = Path(tempfile.mkdtemp(prefix="flukeid-retrain-cat-"))
        make_catalog(root).close()
        _TEMPLATE.append(root / "catalog")
    shutil.copytree(_TEMPLATE[0], dest)
    return Catalog.open(dest)


@pytest.fixture(name="catalog")
def catalog_fixture(tmp_path):
    """``catalog``: a fresh copy of the synthetic retraining catalog (tiny model active), closed afterwards.

    Named apart from its fixture name so that a module imports it without shadowing test arguments.
    """
    cat = catalog_copy(tmp_path / "catalog")
    yield cat
    cat.close()


# --- the fake training Python's environment ---------------------------------------------------------


def fake_training_env(tmp_path: Path, monkeypatch) -> str:
    """Point the settings at a scratch folder and the fake trainer at the tiny bundle; returns the
    path of a fake training Python made in ``tmp_path``."""
    monkeypatch.setenv("FLUKEID_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("FAKE_BUNDLE", str(tiny_bundle_source()))
    return make_fake_python(tmp_path)
