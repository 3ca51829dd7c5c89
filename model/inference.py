"""Torch-free inference: a verified model bundle run by onnxruntime (numpy + OpenCV preprocessing).

:class:`Engine` loads a bundle (checksums first), opens the branch and head as onnxruntime
sessions on CUDA when asked for and available, else on the CPU, and reports what the session
actually runs on. It takes photos and boxes (or embedding matrices) and returns numpy arrays; it
does no I/O besides reading the bundle.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from model.bundle import MANIFEST, manifest_number, verify_bundle
from model.errors import BundleError, Interrupted
from model.preprocess import Box, Preprocessing, prepare_batch
from model.separable import SeparableHead, from_onnx

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
PROVIDER_NAMES = {
    "CUDAExecutionProvider": "GPU (CUDA)",
    "TensorrtExecutionProvider": "GPU (TensorRT)",
    "CPUExecutionProvider": "CPU",
}
# Pairs per head.onnx call: large enough to amortise the call, small enough to stay in cache.
# Pairs per head.onnx call. On the CPU small chunks keep the per-position intermediates
# ([chunk, D, hidden]) in cache (128 measured best on a 2-core CPU); a GPU wants large batches.
HEAD_CHUNK = 128
HEAD_CHUNK_GPU = 16384


def provider_label(provider: str) -> str:
    """A user-facing name for an onnxruntime execution provider ("GPU (CUDA)", "CPU", ...)."""
    return PROVIDER_NAMES.get(provider, provider.removesuffix("ExecutionProvider"))


def _session_options(threads: int | None) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.log_severity_level = 3  # errors only: no CUDA-missing warnings in the user's terminal
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # No busy-waiting between ops: on a loaded 2-core machine spinning threads halved the head's
    # throughput per CPU second (measured), and the app shares the CPU with its GUI.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        so.intra_op_num_threads = threads
    return so


def _open_session(path: Path, device: str, threads: int | None) -> ort.InferenceSession:
    """An onnxruntime session for ``path``; CUDA first when ``device`` allows it and it is there."""
    providers = ["CPUExecutionProvider"]
    if device in ("auto", "cuda") and cuda_available():
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    so = _session_options(threads)
    try:
        if providers[0] == "CPUExecutionProvider":
            return ort.InferenceSession(str(path), sess_options=so, providers=providers)
        # A CUDA library that fails to load is logged at ERROR level: hide it, the note says it.
        ort.set_default_logger_severity(4)
        so.log_severity_level = 4
        try:
            return ort.InferenceSession(str(path), sess_options=so, providers=providers)
        finally:
            ort.set_default_logger_severity(3)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        if providers[0] != "CPUExecutionProvider":
            try:  # a broken CUDA install must not stop the app: fall back to the CPU
                return ort.InferenceSession(str(path), sess_options=_session_options(threads),
                                            providers=["CPUExecutionProvider"])
            except Exception:
                pass
        raise BundleError(f"{path}: onnxruntime cannot load this model ({exc})") from None


def _check_io(session: ort.InferenceSession, path: Path, inputs: tuple[str, ...], outputs: tuple[str, ...]) -> None:
    have_in = {i.name for i in session.get_inputs()}
    have_out = {o.name for o in session.get_outputs()}
    missing = [n for n in inputs if n not in have_in] + [n for n in outputs if n not in have_out]
    if missing:
        raise BundleError(f"{path}: model lacks the contract's input/output {', '.join(missing)} "
                          f"(has inputs {sorted(have_in)}, outputs {sorted(have_out)})")


def _check_input_size(session: ort.InferenceSession, path: Path, prep: Preprocessing) -> None:
    """Refuse a branch whose fixed image size disagrees with the manifest's preprocessing."""
    shape = next(i.shape for i in session.get_inputs() if i.name == "image")
    want = {2: prep.input_height, 3: prep.input_width}
    bad = [(axis, shape[axis]) for axis in want if len(shape) > axis and isinstance(shape[axis], int)
           and shape[axis] != want[axis]]
    if len(shape) != 4 or bad:
        raise BundleError(f"{path}: input 'image' has shape {list(shape)} but the manifest's preprocessing "
                          f"asks for [N, 1, {prep.input_height}, {prep.input_width}]")


def _check_embedding_dim(branch: ort.InferenceSession, head: ort.InferenceSession, bundle_dir: Path,
                         manifest: dict) -> None:
    """Refuse a manifest embedding_dim that disagrees with the fixed sizes of branch.onnx / head.onnx."""
    dim = manifest_number(manifest, "branch", "embedding_dim", bundle_dir / MANIFEST)
    shapes = [("branch.onnx", "embedding", next(o.shape for o in branch.get_outputs() if o.name == "embedding"))]
    shapes += [("head.onnx", i.name, i.shape) for i in head.get_inputs() if i.name in ("embedding_a", "embedding_b")]
    for fname, name, shape in shapes:
        if len(shape) == 2 and isinstance(shape[1], int) and shape[1] != dim:
            raise BundleError(f"{bundle_dir / fname}: '{name}' has {shape[1]} values per photo but the manifest's "
                              f"branch.embedding_dim is {dim}")


@dataclass
class Engine:
    """A loaded, verified bundle ready to embed photos and score pairs (torch-free).

    Attributes:
        bundle_dir: the bundle folder.
        manifest: the verified manifest.
        provider: what the sessions actually run on, "GPU (CUDA)" or "CPU".
        device_note: one line for the user saying where inference runs and why.
    """

    bundle_dir: Path
    manifest: dict
    branch: ort.InferenceSession
    head: ort.InferenceSession
    provider: str
    device_note: str
    batch_size: int = 16
    head_chunk: int = HEAD_CHUNK
    _separable: object = field(default=False, init=False, repr=False)  # False: not read yet

    @classmethod
    def load(cls, bundle_dir: str | Path, device: str = "auto", *, threads: int | None = None,
             batch_size: int = 16) -> Engine:
        """Verify a bundle and open its branch and head with onnxruntime.

        Args:
            bundle_dir: the bundle folder (manifest.json, branch.onnx, head.onnx).
            device: "auto" (CUDA if onnxruntime finds a working GPU, else CPU), "cuda" (the same,
                with a note when it falls back) or "cpu".
            threads: onnxruntime intra-op threads (default: onnxruntime's choice).
            batch_size: photos per branch call in :meth:`embed`.

        Raises:
            BundleError: the bundle is missing, damaged, partial, of a newer format, or its
                models do not follow the ONNX contract (the message names the file).
        """
        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, not {device!r}")
        bundle_dir = Path(bundle_dir)
        manifest = verify_bundle(bundle_dir)
        ort.set_default_logger_severity(3)
        branch_path, head_path = bundle_dir / "branch.onnx", bundle_dir / "head.onnx"
        branch = _open_session(branch_path, device, threads)
        head = _open_session(head_path, device, threads)
        _check_io(branch, branch_path, ("image",), ("embedding", "feature_map"))
        _check_io(head, head_path, ("embedding_a", "embedding_b"), ("probability",))
        _check_input_size(branch, branch_path, Preprocessing.from_dict(manifest["preprocessing"]))
        _check_embedding_dim(branch, head, bundle_dir, manifest)
        actual = branch.get_providers()[0]
        provider = provider_label(actual)
        if actual == "CPUExecutionProvider":
            if device == "cpu":
                note = "Inference runs on the CPU (as requested)."
            elif cuda_available():
                note = "Inference runs on the CPU: onnxruntime could not start CUDA on this GPU."
            elif "CUDAExecutionProvider" in ort.get_available_providers():
                note = "Inference runs on the CPU (no NVIDIA GPU driver found)."
            else:
                note = "Inference runs on the CPU (this onnxruntime has no CUDA support)."
        else:
            note = f"Inference runs on the {provider}."
        log.info("%s: %s", bundle_dir.name, note)
        chunk = HEAD_CHUNK if actual == "CPUExecutionProvider" else HEAD_CHUNK_GPU
        return cls(bundle_dir, manifest, branch, head, provider, note, batch_size, chunk)

    # -- manifest views ------------------------------------------------------------------------
    @property
    def version(self) -> str:
        """The bundle's version name (also the catalog's key for cached embeddings)."""
        return str(self.manifest.get("version", self.bundle_dir.name))

    @property
    def preprocessing(self) -> Preprocessing:
        """The crop/normalisation the network was trained with."""
        return Preprocessing.from_dict(self.manifest["preprocessing"])

    @property
    def new_individual_threshold(self) -> float:
        """Best-match probability under which a photo is suggested as a new individual."""
        value = manifest_number(self.manifest, None, "new_individual_threshold", self.bundle_dir / MANIFEST)
        return 0.5 if value is None else value

    @property
    def embedding_dim(self) -> int:
        """D, the length of an embedding."""
        return manifest_number(self.manifest, "branch", "embedding_dim", self.bundle_dir / MANIFEST)

    # -- branch --------------------------------------------------------------------------------
    def embed(self, images: list[np.ndarray], boxes: list[Box | None] | None = None, *,
              progress: Callable[[float, str], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> np.ndarray:
        """Embeddings [N, D] float32 of the photos' boxes (``None``: the whole photo).

        ``progress``/``should_stop`` as in :meth:`embed_with_maps`.
        """
        return self.embed_with_maps(images, boxes, keep_maps=False, progress=progress, should_stop=should_stop)[0]

    def embed_with_maps(self, images: list[np.ndarray], boxes: list[Box | None] | None = None,
                        *, keep_maps: bool = True, progress: Callable[[float, str], None] | None = None,
                        should_stop: Callable[[], bool] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Embeddings [N, D] and the last batch-norm feature maps [N, C, h, w] (float32).

        Args:
            images: RGB uint8 [H, W, 3] (or gray [H, W]) photos.
            boxes: one box (x0, y0, x1, y1 in photo pixels) or None per photo.
            keep_maps: False to drop the feature maps (then the second value is None).
            progress: called with (fraction done, message) after each batch.
            should_stop: checked before each batch.

        Raises:
            Interrupted: ``should_stop()`` returned True.
        """
        if boxes is None:
            boxes = [None] * len(images)
        if len(boxes) != len(images):
            raise ValueError(f"{len(images)} images but {len(boxes)} boxes")
        prep = self.preprocessing
        embs, maps = [], []
        for i in range(0, len(images), self.batch_size):
            if should_stop is not None and should_stop():
                raise Interrupted(f"embedding stopped after {i} of {len(images)} photos")
            x = prepare_batch(images[i:i + self.batch_size], boxes[i:i + self.batch_size], prep)
            e, f = self.branch.run(["embedding", "feature_map"], {"image": x})
            embs.append(e.astype(np.float32, copy=False))
            if keep_maps:
                maps.append(f.astype(np.float32, copy=False))
            if progress is not None:
                done = min(i + self.batch_size, len(images))
                progress(done / len(images), f"embedded {done} of {len(images)} photos")
        d = self.embedding_dim
        emb = np.concatenate(embs) if embs else np.zeros((0, d), np.float32)
        fmap = (np.concatenate(maps) if maps else np.zeros((0, 0, 0, 0), np.float32)) if keep_maps else None
        return emb, fmap

    # -- head ----------------------------------------------------------------------------------
    def score_pairs(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Same-whale probability [N] of row-aligned embedding pairs a[i], b[i]."""
        a = np.ascontiguousarray(a, dtype=np.float32)
        b = np.ascontiguousarray(b, dtype=np.float32)
        out = np.empty(len(a), np.float32)
        c = self.head_chunk
        for i in range(0, len(a), c):
            out[i:i + c] = self.head.run(
                ["probability"], {"embedding_a": a[i:i + c], "embedding_b": b[i:i + c]})[0].reshape(-1)
        return out

    def separable_head(self) -> SeparableHead | None:
        """The head as a sum of per-position terms (model.separable), read from head.onnx and
        checked against it on first use; None when the head is not of that form."""
        if self._separable is False:
            kind = str(self.manifest.get("head", {}).get("kind", ""))
            self._separable = from_onnx(self.bundle_dir / "head.onnx", self.embedding_dim, kind, self.score_pairs)
            if self._separable is None:
                log.info("%s: the head is scored with head.onnx over every photo", self.bundle_dir.name)
        return self._separable

    def score(self, query_emb: np.ndarray, gallery: np.ndarray) -> np.ndarray:
        """Probabilities that each query shows the same whale as each gallery photo.

        Args:
            query_emb: one embedding [D] or several [Q, D].
            gallery: gallery embeddings [M, D] (float32 or float16).

        Returns:
            [M] for one query, [Q, M] for several (float32).
        """
        q = np.asarray(query_emb, dtype=np.float32)
        single = q.ndim == 1
        q = q.reshape(-1, q.shape[-1])
        m = len(gallery)
        out = np.empty((len(q), m), np.float32)
        chunk = min(self.head_chunk, max(m, 1))
        qrep = [np.broadcast_to(qi, (chunk, qi.shape[0])).copy() for qi in q]
        for j in range(0, m, chunk):
            g = np.ascontiguousarray(gallery[j:j + chunk], dtype=np.float32)
            n = len(g)
            for qi in range(len(q)):
                out[qi, j:j + n] = self.head.run(
                    ["probability"], {"embedding_a": qrep[qi][:n], "embedding_b": g})[0].reshape(-1)
        return out[0] if single else out


def _nvidia_driver_present() -> bool:
    """Whether the NVIDIA driver library loads (onnxruntime's CUDA provider needs it)."""
    names = {"win32": ["nvcuda.dll"], "darwin": []}.get(sys.platform, ["libcuda.so.1", "libcuda.so"])
    for name in names:
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def cuda_available() -> bool:
    """Whether this onnxruntime build has CUDA and an NVIDIA driver is installed.

    A GPU may still fail to start; :attr:`Engine.provider` says what the session really uses.
    """
    return "CUDAExecutionProvider" in ort.get_available_providers() and _nvidia_driver_present()


def default_threads() -> int:
    """The CPU count onnxruntime would use (for benchmarks' reports)."""
    return os.cpu_count() or 1
