"""Moved to :mod:`app.services.viewdata` (Qt-free plain data); this name stays for the views' imports."""

from app.services.viewdata import (  # noqa: F401
    BOX_UNCHECKED,
    CROP_MARGIN,
    IDENTIFIED,
    JUNK,
    STATUS_COLOURS,
    STATUS_LABELS,
    UNIDENTIFIED,
    Box,
    CandidateCard,
    EvidenceLine,
    IndividualRow,
    MatchTask,
    PhotoCard,
    crop_rect,
)
