"""A catalog's model versions (Qt-free): add a bundle from a folder, list them, switch between them.

Every bundle a catalog uses lives in ``<catalog>/models/<version>/`` and is registered in the
catalog; the active one is a pointer there. Three ways bring a bundle in:

- :func:`add_bundle` (``flukeid model add``, Model versions ▸ Add model…): a bundle folder from
  anywhere (the shipped demo, a colleague's export, ``flukeid export-model``);
- :func:`create_catalog` (``flukeid new``, File ▸ New catalog…): the program's default bundle,
  when the program declares one (:func:`app.paths.default_bundle_dir`);
- retraining (:mod:`app.services.retraining`), which builds its own bundle in place.

A bundle is checked before anything changes (checksums, onnxruntime loads both networks, one
test photo runs through them), copied into a hidden staging folder beside its final place,
checked again and renamed into place, so the catalog never holds a partial bundle under a
version's name; a version that is already there is never overwritten. Activation
(:func:`activate`) embeds the photos with the new model while the old one serves, and moves the
pointer last: a failure or a cancel at any step leaves the previous model active.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.services.jobs import ProgressFn, StopFn
from model.api import BundleError, FlukeidError, Interrupted

MANIFEST = "manifest.json"


# --- checking and installing a bundle -------------------------------------------------------------


def check_bundle(bundle: str | Path) -> dict:
    """Check a bundle folder as the app will use it; return its manifest.

    Checksums and manifest (:func:`model.api.verify_bundle`), then onnxruntime opens the branch
    and head and checks their inputs and outputs (:meth:`model.api.Engine.load`, on the CPU),
    then one synthetic photo runs through both: the embedding must have the manifest's size and
    be finite, the head's probability must lie in [0, 1].

    Raises:
        BundleError: naming the file and what is wrong with it.
    """
    from model.api import Engine

    bundle = Path(bundle)
    engine = Engine.load(bundle, device="cpu")
    prep = engine.preprocessing
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (prep.input_height * 2, prep.input_width * 2, 3), dtype=np.uint8)
    try:
        emb = np.asarray(engine.embed([photo]))
    except Exception as exc:  # onnxruntime raises its own types
        raise BundleError(f"{bundle / 'branch.onnx'}: fails on a test photo ({exc})") from None
    if emb.shape != (1, engine.embedding_dim) or not np.isfinite(emb).all():
        raise BundleError(f"{bundle / 'branch.onnx'}: gives an embedding of shape {list(emb.shape)}"
                          f"{'' if np.isfinite(emb).all() else ' with NaN or infinite values'}; the "
                          f"manifest says [1, {engine.embedding_dim}]")
    try:
        prob = np.asarray(engine.score_pairs(emb, emb))
    except Exception as exc:
        raise BundleError(f"{bundle / 'head.onnx'}: fails on a test pair ({exc})") from None
    if prob.shape != (1,) or not np.isfinite(prob).all() or not (0.0 <= float(prob[0]) <= 1.0):
        raise BundleError(f"{bundle / 'head.onnx'}: gives {prob.tolist()} for a test pair, not one "
                          "probability between 0 and 1")
    return engine.manifest


def bundle_version(manifest: dict, bundle: str | Path) -> str:
    """The version a bundle is installed under: its manifest's ``version`` (else its folder name).

    Raises:
        BundleError: the version cannot be a folder name (path separators, hidden, empty).
    """
    bundle = Path(bundle)
    version = str(manifest.get("version") or bundle.resolve().name)
    if not version.strip() or version.startswith(".") or Path(version).name != version or "\\" in version:
        raise BundleError(f"{bundle / MANIFEST}: version {version!r} cannot name a folder under models/")
    return version


@dataclass(frozen=True)
class Installed:
    """A bundle in the catalog after :func:`install_bundle`.

    Attributes:
        version: its version (the folder name under ``models/``).
        path: the catalog's copy.
        copied: False when the catalog already held an identical copy.
    """

    version: str
    path: Path
    copied: bool


def _require_writable(catalog) -> None:
    if catalog.readonly:
        from app.catalog import ReadOnlyError

        raise ReadOnlyError(f"{catalog.root}: the catalog is read-only ({catalog.readonly_reason}): models "
                            "cannot be added or switched")


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # not supported for folders on every platform
        pass
    finally:
        os.close(fd)


def install_bundle(catalog, source: str | Path, *, progress: ProgressFn | None = None) -> Installed:
    """Check the bundle folder ``source`` and copy it into ``<catalog>/models/<version>``, registered.

    Nothing changes when the check fails. The copy goes into a hidden staging folder beside its
    final place, is verified again, and is renamed into place. A version the catalog already has
    is accepted only when it is the same bundle (same manifest, intact copy); it is never
    overwritten. The new bundle is registered, not activated.

    Raises:
        BundleError: the bundle is damaged (the message names the file), or the catalog holds
            a different bundle under the same version.
        CatalogError: the catalog is open read-only.
    """
    from model.api import staging_dir, verify_bundle

    progress = progress or (lambda f, m: None)
    source = Path(source)
    _require_writable(catalog)
    progress(0.0, f"Checking {source}…")
    manifest = check_bundle(source)
    version = bundle_version(manifest, source)
    final = catalog.models_dir / version
    registered = next((m for m in catalog.models() if m.version == version), None)
    existing = catalog.model_path(registered) if registered is not None else final
    if registered is not None or final.exists():
        try:
            same = verify_bundle(existing) == manifest
        except FlukeidError:
            same = False
        if not same:
            raise BundleError(f"{source}: the catalog already has a different (or damaged) model named "
                              f"{version} in {existing}; a model version is never overwritten: give this "
                              f"bundle another version in its {MANIFEST}")
        if registered is None:
            catalog.add_model(version, existing, metrics=manifest.get("metrics") or {})
        progress(1.0, f"Model {version} is already in the catalog.")
        return Installed(version, existing, copied=False)
    names = [*manifest["files"], MANIFEST]
    staging = staging_dir(final)
    try:
        for i, name in enumerate(names):
            progress(0.1 + 0.8 * i / len(names), f"Copying {name}…")
            shutil.copyfile(source / name, staging / name)
            _fsync(staging / name)
        if verify_bundle(staging) != manifest:  # the copy is exactly what was checked
            raise BundleError(f"{source}: changed while it was being copied; try again")
        if final.exists():
            raise BundleError(f"{final}: appeared while the bundle was being copied; it is left as it is")
        os.rename(staging, final)
        _fsync(final.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    catalog.add_model(version, final, metrics=manifest.get("metrics") or {})
    progress(1.0, f"Model {version} copied into the catalog.")
    return Installed(version, final, copied=True)


# --- adding, activating, listing -------------------------------------------------------------------


def activate(catalog, version: str, *, progress: ProgressFn | None = None,
             should_stop: StopFn | None = None) -> dict:
    """Make ``version`` the catalog's active model, safely.

    The bundle is verified first; then every photo is embedded with it while the current model
    keeps serving; only then is the active-model pointer moved (one transaction). A failure or a
    cancel at any step leaves the current model active.

    Returns:
        The embedding report of :func:`app.services.matching.embed_missing` (``embedded``,
        ``errors``: photos whose file could not be read).

    Raises:
        BundleError: the bundle is missing or damaged (the active model is unchanged).
        Interrupted: cancelled while embedding.
    """
    from model.api import Engine, verify_bundle

    progress = progress or (lambda f, m: None)
    record = next((m for m in catalog.models() if m.version == version), None)
    if record is None:
        raise BundleError(f"{catalog.root}: no model {version!r} in this catalog")
    _require_writable(catalog)
    path = catalog.model_path(record)
    progress(0.0, f"Verifying {version}…")
    verify_bundle(path)
    engine = Engine.load(path)
    from app.services.matching import embed_missing

    report = embed_missing(catalog, engine, version, progress=progress, should_stop=should_stop or (lambda: False))
    if should_stop is not None and should_stop():
        raise Interrupted("activation cancelled")
    catalog.set_active_model(version)
    progress(1.0, f"Model {version} is active.")
    return report if isinstance(report, dict) else {}


_activate = activate  # add_bundle's ``activate`` argument hides the function


@dataclass(frozen=True)
class AddResult:
    """What :func:`add_bundle` did.

    Attributes:
        version, path, copied: as in :class:`Installed`.
        active: the bundle is now the catalog's active model.
        embedded: photos embedded with it now.
        errors: (file, problem) for photos that could not be embedded (the rest were).
    """

    version: str
    path: Path
    copied: bool
    active: bool
    embedded: int = 0
    errors: list = field(default_factory=list)


def _sub(progress: ProgressFn, lo: float, hi: float) -> ProgressFn:
    return lambda f, m: progress(lo + (hi - lo) * f, m)


def add_bundle(catalog, source: str | Path, *, activate: bool = False, embed: bool = False,
               progress: ProgressFn | None = None, should_stop: StopFn | None = None) -> AddResult:
    """Add a bundle folder to the catalog (:func:`install_bundle`), then activate it or embed with it.

    Args:
        catalog: an open, writable catalog.
        source: the bundle folder.
        activate: make it the active model (its embeddings are computed first; see :func:`activate`).
        embed: compute the catalog photos' embeddings with it without activating it (so a later
            switch is immediate). Implied by ``activate``.
        progress / should_stop: the job callbacks.

    Raises:
        BundleError, CatalogError: as :func:`install_bundle`; the active model is unchanged.
        Interrupted: cancelled while embedding (the bundle stays added; the active model is unchanged).
    """
    progress = progress or (lambda f, m: None)
    split = 0.2 if activate or embed else 1.0  # the share of the progress bar that installing takes
    installed = install_bundle(catalog, source, progress=_sub(progress, 0.0, split))
    report: dict = {"embedded": [], "errors": []}
    if activate:
        report = _activate(catalog, installed.version, progress=_sub(progress, split, 1.0), should_stop=should_stop)
    elif embed:
        from app.services import matching
        from model.api import Engine

        engine = Engine.load(installed.path)
        report = matching.embed_missing(catalog, engine, installed.version, progress=_sub(progress, split, 1.0),
                                        should_stop=should_stop)
    active = catalog.active_model()
    return AddResult(installed.version, installed.path, installed.copied,
                     active is not None and active.version == installed.version,
                     len(report.get("embedded", [])), list(report.get("errors", [])))


METRIC_NAMES = (("top1", "top-1"), ("top5", "top-5"), ("map5", "MAP@5"))


@dataclass(frozen=True)
class Verification:
    """The evaluation a model was verified with: identification scores and on what."""

    top1: float | None
    top5: float | None
    map5: float | None
    queries: int | None
    what: str


def verification_of(metrics: dict | None) -> Verification | None:
    """The evaluation recorded with a model, whichever way it was registered (None: none recorded).

    A retrained model records its held-out comparison at the top level (``top1``, ``top5``,
    ``map5``, ``n_queries``); a shipped or added bundle records its manifest's evaluations, one
    dict per protocol (``{"synthetic_heldout_seed": {"top1": .., "n": .., "what": ..}, ...}``):
    the first that is not a baseline is the one it was verified with.
    """
    if not metrics:
        return None

    def scores(d: dict) -> bool:
        return any(d.get(k) is not None for k, _ in METRIC_NAMES)

    if scores(metrics):
        n = metrics.get("n_queries")
        return Verification(metrics.get("top1"), metrics.get("top5"), metrics.get("map5"), n,
                            "held-out confirmed photos of this catalog")
    for key, d in metrics.items():
        if isinstance(d, dict) and scores(d) and "baseline" not in key:
            what = str(d.get("what") or key.replace("_", " "))
            return Verification(d.get("top1"), d.get("top5"), d.get("map5"), d.get("n", d.get("n_queries")), what)
    return None


@dataclass(frozen=True)
class ModelVersion:
    """A bundle registered in the catalog, for the Model versions list."""

    version: str
    path: Path
    created: str | None
    active: bool
    metrics: dict
    problem: str | None = None  # why it cannot be used (damaged, missing), None when fine

    @property
    def verification(self) -> Verification | None:
        """The evaluation the model was verified with (see :func:`verification_of`)."""
        return verification_of(self.metrics)


def list_model_versions(catalog, *, verify: bool = True) -> list[ModelVersion]:
    """Every registered bundle with its metrics; damaged or missing ones say why (newest first)."""
    from model.api import verify_bundle

    out = []
    for m in catalog.models():
        path = catalog.model_path(m)
        problem = None
        if verify:
            try:
                verify_bundle(path)
            except FlukeidError as exc:
                problem = str(exc)
        out.append(ModelVersion(m.version, path, m.created_at, m.active, dict(m.metrics or {}), problem))
    out.sort(key=lambda v: v.created or "", reverse=True)
    return out


# --- a new catalog ----------------------------------------------------------------------------------


@dataclass
class NewCatalog:
    """What :func:`create_catalog` made.

    Attributes:
        catalog: the open catalog (the caller closes it).
        model: the version of the default model now active, or None.
        problem: why the program's default model could not be installed (None when it was, or
            when the program has no default).
    """

    catalog: object
    model: str | None = None
    problem: str | None = None


def create_catalog(folder: str | Path, *, progress: ProgressFn | None = None) -> NewCatalog:
    """Create an empty catalog and give it the program's default model, when the program has one.

    The default is :func:`app.paths.default_bundle_dir` (None: the catalog starts without a
    model). A default bundle that cannot be installed does not stop the catalog being created:
    the reason is returned in ``problem``.

    Raises:
        CatalogError: the catalog cannot be created.
    """
    from app.catalog import Catalog
    from app.paths import default_bundle_dir

    new = NewCatalog(Catalog.create(folder))
    bundle = default_bundle_dir()
    if bundle is None:
        return new
    try:
        new.model = add_bundle(new.catalog, bundle, activate=True, progress=progress).version
    except FlukeidError as exc:
        new.problem = f"the program's default model could not be installed ({exc}); the catalog has no model yet"
    except BaseException:
        new.catalog.close()
        raise
    return new
