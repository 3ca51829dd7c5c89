"""Moved to :mod:`app.services.review` (Qt-free); this name stays for the views' and tests' imports."""

from app.services.review import (  # noqa: F401
    EVIDENCE_LINES,
    HEATMAP_SIDE,
    Session,
    describe_import,
    import_had_errors,
    pair_lines,
)
