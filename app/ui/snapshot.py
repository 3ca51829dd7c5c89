"""Moved to :mod:`app.services.snapshot` (Qt-free); this name stays for existing imports."""

from app.services.snapshot import Snapshot, individual_label, read_snapshot  # noqa: F401
