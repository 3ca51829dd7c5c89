"""Plain data the views display; the window fills them from the services' records.

Views never talk to the catalog: they receive these and emit signals with ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Box = tuple[float, float, float, float]

BOX_UNCHECKED = "box"
UNIDENTIFIED = "unidentified"
IDENTIFIED = "identified"
JUNK = "junk"

STATUS_LABELS = {
    BOX_UNCHECKED: "Box to check",
    UNIDENTIFIED: "Unidentified",
    IDENTIFIED: "Identified",
    JUNK: "No fluke",
}
STATUS_COLOURS = {
    BOX_UNCHECKED: "#e8a33d",
    UNIDENTIFIED: "#4a90d9",
    IDENTIFIED: "#3fae6a",
    JUNK: "#8a8f96",
}


@dataclass
class PhotoCard:
    """One photo as the grid and the review views show it."""

    photo_id: int
    path: str
    status: str
    individual_id: int | None = None
    individual: str | None = None  # code (and name) of the identified individual
    date: str | None = None  # ISO date of the sighting
    box: Box | None = None  # photo pixels
    box_confidence: float | None = None
    box_source: str | None = None  # auto, classical, whole, imported, manual, ...
    box_to_check: bool = False  # in the box review (see app.services.importing.box_needs_check)
    missing: bool = False
    thumb: str | None = None  # the catalog's small copy, when it has one

    @property
    def file_name(self) -> str:
        return self.path.replace("\\", "/").rsplit("/", 1)[-1]


@dataclass
class CandidateCard:
    """One of the five individuals proposed for a query photo."""

    individual_id: int
    label: str
    score: float
    photo_id: int
    photo_path: str
    photo_box: Box | None
    photo_count: int
    last_seen: str | None = None
    probability: float | None = None  # calibrated P(same individual); None: ``score`` is a plain score
    score_text: str = ""  # the score as shown: "87%" only when calibrated, else a plain score
    score_short: str = ""  # the same for a card: the number alone
    inliers: int | None = None  # verified correspondences with ``photo_id`` (None: not checked)
    evidence: list[EvidenceLine] | None = None  # those correspondences as lines (None: ask the model)


@dataclass
class MatchTask:
    """A query photo and its ranked candidates.

    ``verdict`` says what may be claimed (see :func:`app.services.matching.verdict`): "best_match",
    "new", "unsure", "unverified", "ranking", "empty"; "" for the embedding alone (``suggest_new``).
    """

    photo: PhotoCard
    candidates: list[CandidateCard]
    suggest_new: bool
    threshold: float | None = None
    remaining: int = 0
    model_version: str | None = None
    rejected: set[int] = field(default_factory=set)  # individuals the catalog has rejected for this photo
    calibrated: bool = False
    best_match_threshold: float | None = None
    verdict: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class IndividualRow:
    """An individual in the individuals list."""

    individual_id: int
    code: str
    name: str = ""
    notes: str = ""
    photo_count: int = 0
    first_seen: str | None = None
    last_seen: str | None = None
    photos: list[PhotoCard] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.code} — {self.name}" if self.name else self.code


@dataclass
class EvidenceLine:
    """A matched mark: a point on the query crop and one on the candidate crop (fractions 0..1)."""

    ax: float
    ay: float
    bx: float
    by: float
    weight: float = 1.0


CROP_MARGIN = 0.08  # the views show a photo's box plus this fraction of its size on each side


def crop_rect(box: Box | None, width: int, height: int, margin: float = CROP_MARGIN) -> tuple[int, int, int, int]:
    """The (x0, y0, x1, y1) pixel rectangle a view shows for ``box`` on a width x height image."""
    if box is None:
        return 0, 0, width, height
    x0, y0, x1, y1 = box
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    r = max(0, int(x0 - mx)), max(0, int(y0 - my)), min(width, int(x1 + mx)), min(height, int(y1 + my))
    if r[2] - r[0] < 2 or r[3] - r[1] < 2:
        return 0, 0, width, height
    return r
