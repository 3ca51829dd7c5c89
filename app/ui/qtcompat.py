"""A guard against a defect of PySide6 6.12.0 on Python 3.11, measured at start-up, never assumed.

PySide6/shiboken6 6.12.0 return ``None`` from every void Qt call (``processEvents()``,
``setText()``, a Python slot or event handler called back by Qt ...) and ``True`` from
``Signal.emit()`` without taking a new reference to them: each call takes one reference away.
On Python 3.11 ``None``, ``True`` and ``False`` are ordinary reference-counted objects: once
enough calls have run (a few minutes of review work, or the few thousand references the
interpreter drops while it shuts down) a count reaches zero and Python aborts with
``Fatal Python error: bool_dealloc`` (or ``none_dealloc``), exit 134. That was the crash on
quitting after some review work. Python 3.12 made these objects immortal, so there the lost
references are harmless.

pyproject.toml excludes that release; :func:`guard_refcounts` protects an installation that has
it anyway (an older build environment, ``pip install --no-deps``, a shared virtual environment):
it measures the loss once and, only where one is seen, gives ``None``, ``True`` and ``False``
the very large reference count that Python 3.12 gives them, so no number of lost references
can bring them to zero.
"""

from __future__ import annotations

import ctypes
import sys

from PySide6.QtCore import QObject, Signal

_PROBE_CALLS = 16
_RESERVE = 1 << 40  # references added: far more than any session can lose
_SINGLETONS = (None, True, False)
_guarded: bool | None = None


class _Probe(QObject):
    ping = Signal()


def lost_references() -> int:
    """References to None/True/False that one Qt call takes away (0 on a sound PySide6)."""
    probe = _Probe()
    before = [sys.getrefcount(o) for o in _SINGLETONS]
    for _ in range(_PROBE_CALLS):
        probe.ping.emit()  # returns True
        probe.setObjectName("probe")  # returns None
    after = [sys.getrefcount(o) for o in _SINGLETONS]
    return max(0, max(b - a for b, a in zip(before, after))) // _PROBE_CALLS


def guard_refcounts() -> bool:
    """Protect None/True/False from PySide6 6.12.0's lost references; True when a guard was needed.

    Idempotent and cheap after the first call; call it on the GUI thread (``application()`` and
    ``MainWindow`` do).
    """
    global _guarded
    if _guarded is not None:
        return _guarded
    _guarded = False
    if sys.version_info >= (3, 12) or hasattr(sys, "getobjects"):
        return False  # immortal singletons: nothing to protect (or a trace-refs build: another layout)
    if lost_references() == 0:
        return False
    # CPython 3.11 lays out every object as (ob_refcnt, ob_type, ...): raise the count in place,
    # as Python 3.12 does for its immortal objects
    for obj in _SINGLETONS:
        before = sys.getrefcount(obj)
        ctypes.c_ssize_t.from_address(id(obj)).value += _RESERVE
        if sys.getrefcount(obj) - before != _RESERVE:
            raise RuntimeError("unexpected object layout: cannot guard against PySide6 6.12.0's defect")
    _guarded = True
    return True
