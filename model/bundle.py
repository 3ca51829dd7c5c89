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
import math
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
    external: list[str] = []
    for name, digest in files.items():
        p = bundle / name
        if Path(name).name != name:
            raise BundleError(f"{bundle / MANIFEST}: bad file name {name!r} in manifest")
        if not p.is_file():
            raise BundleError(f"{p}: file missing from bundle")
        actual, marked = _sha256_and_scan(p, _EXTERNAL_DATA_MARK if name.endswith(".onnx") else None)
        if actual != digest:
            raise BundleError(f"{p}: checksum mismatch (file damaged or changed since export)")
        if marked:
            external.append(name)
    for name in external:  # only models whose bytes mention external data are parsed
        for location in _external_data_locations(bundle / name):
            if location not in files:
                raise BundleError(f"{bundle / name}: reads external data from {location!r}, which the manifest "
                                  "does not list (so it is not checksummed); re-export the bundle")
    for key in ("preprocessing", "branch", "head"):
        if not isinstance(manifest.get(key), dict):
            raise BundleError(f"{bundle / MANIFEST}: manifest has no '{key}' section")
    check_manifest_numbers(manifest, bundle / MANIFEST)
    return manifest


# A TensorProto's external_data entry {key: "location", ...} as protobuf bytes (field 1, length 8).
_EXTERNAL_DATA_MARK = b"\x0a\x08location"


def _sha256_and_scan(path: Path, mark: bytes | None, chunk: int = 1 << 20) -> tuple[str, bool]:
    """SHA-256 of a file and whether ``mark`` occurs in it, in one pass."""
    h = hashlib.sha256()
    found = False
    tail = b""
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
            if mark and not found:
                found = mark in tail + block
                tail = block[-len(mark):]
    return h.hexdigest(), found


def _external_data_locations(path: Path) -> set[str]:
    """The external data files an ONNX model refers to (parsed with onnx, external data not loaded).

    Raises:
        BundleError: the model cannot be parsed, or a location leaves the bundle folder.
    """
    import onnx
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others
        raise BundleError(f"{path}: not a readable ONNX model ({exc})") from None
    out = set()
    for tensor in _get_all_tensors(model):
        if uses_external_data(tensor):
            loc = next((e.value for e in tensor.external_data if e.key == "location"), "")
            if not loc or Path(loc).name != loc:
                raise BundleError(f"{path}: external data location {loc!r} is not a file inside the bundle")
            out.add(loc)
    return out


# (section, key) -> (type, low, high, required): every number a bundle manifest gives the program.
MANIFEST_NUMBERS = {
    ("preprocessing", "input_height"): (int, 8, 8192, True),
    ("preprocessing", "input_width"): (int, 8, 8192, True),
    ("preprocessing", "margin"): (float, 0.0, 1.0, False),
    ("preprocessing", "eps"): (float, 1e-12, 1.0, False),
    ("branch", "embedding_dim"): (int, 1, 65536, True),
    ("branch", "feature_channels"): (int, 1, 65536, False),
    (None, "new_individual_threshold"): (float, 0.0, 1.0, False),
    ("detector", "input_size"): (int, 8, 4096, False),
}


def manifest_number(manifest: dict, section: str | None, key: str, mpath: Path):
    """One number of a manifest, checked against :data:`MANIFEST_NUMBERS` (None when optional and absent).

    Raises:
        BundleError: naming the manifest file and the field: not a number (text such as "128" or
            "abc", a boolean), not whole where it must be, not finite (NaN, inf), or out of range.
    """
    kind, lo, hi, required = MANIFEST_NUMBERS[(section, key)]
    where = manifest.get(section) if section else manifest
    field = f"{section}.{key}" if section else key
    if not isinstance(where, dict) or key not in where:
        if required:
            raise BundleError(f"{mpath}: {field} is missing")
        return None
    v = where[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise BundleError(f"{mpath}: {field} must be a number, not {v!r}")
    if kind is int and not isinstance(v, int):
        raise BundleError(f"{mpath}: {field} must be a whole number, not {v!r}")
    if not math.isfinite(v):
        raise BundleError(f"{mpath}: {field} must be finite, not {v!r}")
    if not lo <= v <= hi:
        raise BundleError(f"{mpath}: {field} = {v!r} is out of range ({lo:g} to {hi:g})")
    return kind(v)


def check_manifest_numbers(manifest: dict, mpath: Path) -> None:
    """Check every number in :data:`MANIFEST_NUMBERS` (see :func:`manifest_number`)."""
    for section, key in MANIFEST_NUMBERS:
        manifest_number(manifest, section, key, mpath)


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
