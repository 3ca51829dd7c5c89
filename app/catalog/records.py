"""Plain records read from the catalog (frozen dataclasses; no database handles inside)."""

from __future__ import annotations

from dataclasses import dataclass, field

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels of the EXIF-oriented photo


@dataclass(frozen=True)
class Photo:
    """A photo of the catalog. ``path`` is absolute, or relative to the catalog when ``copied``."""

    id: int
    path: str
    sha256: str
    size: int
    width: int | None
    height: int | None
    taken_at: str | None
    latitude: float | None
    longitude: float | None
    camera: str | None
    orientation: int | None
    imported_at: str
    copied: bool = False


@dataclass(frozen=True)
class BoxRecord:
    """One version of a photo's fluke box (the current box is the latest row)."""

    id: int
    photo_id: int
    box: Box | None  # None: no box (not detected yet, or cleared)
    source: str  # auto | manual | classical | imported | none
    confidence: float | None
    confirmed: bool
    junk: bool
    who: str | None
    created_at: str
    action_id: int | None = None


@dataclass(frozen=True)
class Individual:
    """A whale of the catalog."""

    id: int
    code: str
    name: str | None
    notes: str | None
    created_at: str
    merged_into: int | None = None


@dataclass(frozen=True)
class Identification:
    """Photo -> individual (``individual_id`` None: unidentified). The current one is the latest row."""

    id: int
    photo_id: int
    individual_id: int | None
    how: str  # imported | manual | confirmed_match | new_individual | merge | undo | redo
    who: str | None
    at: str
    model_version: str | None
    action_id: int | None = None


@dataclass(frozen=True)
class MatchDecision:
    """A reviewer's decision on a candidate. Rows with ``decision == "undo"`` reverse ``reverses``."""

    id: int
    action_id: int | None
    query_photo_id: int
    individual_id: int | None
    rank: int | None
    score: float | None
    decision: str  # confirm | reject | new | skip | undo
    model_version: str | None
    who: str | None
    at: str
    reverses: int | None = None


@dataclass(frozen=True)
class Action:
    """One entry of the audit log: a user action, an undo or a redo."""

    id: int
    kind: str
    photo_id: int | None
    who: str | None
    at: str
    description: str
    reverses: int | None = None  # for undo: the action undone
    redoes: int | None = None  # for redo: the undo action redone
    effects: list = field(default_factory=list)


@dataclass(frozen=True)
class ModelRecord:
    """A model bundle registered in the catalog."""

    version: str
    path: str  # absolute, or relative to the catalog folder
    metrics: dict
    created_at: str
    active: bool = False


@dataclass(frozen=True)
class LocalFeatureRecord:
    """A photo's stored local features (the bytes :meth:`model.api.LocalFeatures.to_bytes` wrote).

    ``box`` is the box they were computed on (None: the whole photo); when the photo's current
    box differs, or ``feature_version`` is not the program's, they are stale and recomputed.
    """

    photo_id: int
    feature_version: int
    n: int
    data: bytes
    box: Box | None
    computed_at: str


@dataclass(frozen=True)
class CalibrationRecord:
    """A fitted calibrator stored in the catalog (the latest row of a ``kind`` is the current one).

    Attributes:
        kind: what it calibrates: ``"local"`` (local features alone) or ``"fused:<model version>"``.
        data: the calibrator's ``to_dict()``.
        source: where it came from: ``"catalog"`` (refitted from this catalog's decisions) or a
            file name (a shipped default).
    """

    id: int
    kind: str
    created_at: str
    format_version: int | None
    n_pairs: int
    n_same: int
    n_different: int
    data: dict
    source: str | None
