"""Python's cyclic garbage collector runs on the GUI thread only.

Python collects reference cycles in whichever thread happens to allocate when a generation's
threshold is crossed. A cycle that holds a Qt object created on the GUI thread (a dialog kept by
a lambda connected to one of its own signals, a job's signal object holding a slot that holds its
owner ...) can therefore be destroyed from a worker thread; Qt objects must be destroyed on the
thread that owns them, and destroying a widget elsewhere crashes. It did: the test suite died
with ``Segmentation fault`` in a retraining worker that was "Garbage-collecting" while another
worker started a process (CI of stop 20).

:func:`install` switches the automatic collector off and collects from a GUI-thread timer
instead, with the same thresholds the automatic collector uses, so memory is reclaimed as before
and every cycle is destroyed on the GUI thread. Reference counting (which frees almost everything)
is untouched. No library offers this (it is a few lines around :mod:`gc`), hence our own.
"""

from __future__ import annotations

import gc
import threading

from PySide6.QtCore import QObject, QTimer

INTERVAL_MS = 500

_collector: _Collector | None = None


def collect_if_due() -> int:
    """On the GUI thread: collect the generation whose threshold is crossed; returns the number freed.

    Does nothing on another thread (a worker must never be the one that destroys a cycle).
    """
    if threading.current_thread() is not threading.main_thread():
        return 0
    counts = gc.get_count()
    thresholds = gc.get_threshold()
    generation = -1
    for g in range(3):
        if thresholds[g] and counts[g] > thresholds[g]:
            generation = g
    if generation < 0:
        return 0
    return gc.collect(generation)


class _Collector(QObject):
    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.timer = QTimer(self)
        self.timer.setInterval(INTERVAL_MS)
        self.timer.timeout.connect(collect_if_due)
        self.timer.start()


def install(parent: QObject | None = None) -> bool:
    """Collect cycles only on the GUI thread from now on; idempotent. Call it on the GUI thread.

    Returns True when it was installed by this call.
    """
    global _collector
    if _collector is not None:
        return False
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("install the GUI-thread garbage collector from the GUI thread")
    gc.disable()
    _collector = _Collector(parent)
    if parent is not None:
        _collector.destroyed.connect(_forget)
    return True


def _forget(*_args) -> None:
    global _collector
    _collector = None
    gc.enable()


def installed() -> bool:
    """True while the GUI-thread collector is in charge (automatic collection off)."""
    return _collector is not None and not gc.isenabled()
