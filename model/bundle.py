"""Model bundles: one folder per trained version, written atomically, verified before use.

Layout (see docs and ARCHITECTURE.md)::

    <bundle>/manifest.json   format_version, version, created, preprocessing, branch, head,
                             detector, files {name: sha256}, training, config, metrics
    <bundle>/branch.onnx     [N,1,H,W] -> embedding [N,D], feature_map [N,C,h,w]
    <bundle>/head.onnx       embedding_a [N,D], embedding_b [N,D] -> probability [N]
    <bundle>/detector.onnx   optional: [N,1,h,w] -> box [N,4] (0..1), confidence [N]

A bundle is built in a temporary sibling folder, checked, then renamed into place: a reader
never sees a partial bundle under the final name. Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

from model.errors import BundleError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
REQUIRED_FILES = ("branch.onnx", "head.onnx")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def new_version_name(prefix: str = "m") -> str:
    """A sortable, unique-enough version name such as ``m20261128-203015``."""
    return f"{prefix}{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"


def staging_dir(final: str | Path) -> Path:
    """A fresh temporary folder beside ``final`` to build a bundle in."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.partial-{os.getpid()}-{time.monotonic_ns()}"
    tmp.mkdir()
    return tmp


def finalize_bundle(staging: str | Path, final: str | Path, manifest: dict) -> Path:
    """Checksum the files in ``staging``, write the manifest, verify, and rename to ``final``.

    ``manifest`` holds everything but ``files`` and ``format_version``, which are filled here.
    Raises BundleError (and removes the staging folder) if anything is wrong or ``final`` exists.
    """
    staging, final = Path(staging), Path(final)
    try:
        if final.exists():
            raise BundleError(f"{final}: a bundle with this version already exists (bundles are never overwritten)")
        files = {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file() and p.name != MANIFEST}
        full = {"format_version": FORMAT_VERSION, **manifest, "files": files}
        full.setdefault("version", final.name)
        full.setdefault("created", datetime.now(UTC).isoformat(timespec="seconds"))
        tmp_manifest = staging / (MANIFEST + ".tmp")
        tmp_manifest.write_text(json.dumps(full, indent=2, sort_keys=True))
        _fsync(tmp_manifest)
        os.replace(tmp_manifest, staging / MANIFEST)
        verify_bundle(staging)
        os.rename(staging, final)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def read_manifest(bundle: str | Path) -> dict:
    bundle = Path(bundle)
    mpath = bundle / MANIFEST
    if not bundle.is_dir():
        raise BundleError(f"{bundle}: model bundle folder not found")
    if not mpath.is_file():
        raise BundleError(f"{mpath}: manifest missing (partial or damaged bundle)")
    try:
        manifest = json.loads(mpath.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{mpath}: manifest is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{mpath}: manifest is not a JSON object")
    fv = manifest.get("format_version")
    if not isinstance(fv, int):
        raise BundleError(f"{mpath}: manifest has no format_version")
    if fv > FORMAT_VERSION:
        raise BundleError(
            f"{mpath}: bundle format {fv} is newer than this flukeid understands ({FORMAT_VERSION}); "
            "update flukeid to use this model"
        )
    return manifest


def verify_bundle(bundle: str | Path) -> dict:
    """Check manifest, required files and every checksum; return the manifest.

    Raises:
        BundleError: naming the bundle file and what is wrong with it.
    """
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{bundle / MANIFEST}: manifest lists no files")
    for name in REQUIRED_FILES:
        if name not in files:
            raise BundleError(f"{bundle}: manifest does not list required file {name}")
    for name, digest in files.items():
        p = bundle / name
        if Path(name).name != name:
            raise BundleError(f"{bundle / MANIFEST}: bad file name {name!r} in manifest")
        if not p.is_file():
            raise BundleError(f"{p}: file missing from bundle")
        if sha256_file(p) != digest:
            raise BundleError(f"{p}: checksum mismatch (file damaged or changed since export)")
    for key in ("preprocessing", "branch", "head"):
        if not isinstance(manifest.get(key), dict):
            raise BundleError(f"{bundle / MANIFEST}: manifest has no '{key}' section")
    return manifest


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        _fsync(path)
    except OSError:  # not supported on every platform/filesystem
        pass
