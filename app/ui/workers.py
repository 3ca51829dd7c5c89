"""Run Qt-free job functions off the GUI thread.

A job is a plain function ``fn(progress, should_stop) -> result`` (the shape every long job of
the services has). :class:`JobRunner` runs it on a :class:`QThreadPool` and always ends with
exactly one of ``result`` or ``error`` (an :class:`model.api.Interrupted` counts as
``cancelled``), then ``finished``. Progress is throttled so a chatty job cannot flood the
event loop.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThread, QThreadPool, Signal

from model.api import Interrupted

ProgressFn = Callable[[float, str], None]
StopFn = Callable[[], bool]
JobFn = Callable[[ProgressFn, StopFn], Any]


class JobSignals(QObject):
    """Signals of one job; they live in the GUI thread and are emitted from the worker."""

    progress = Signal(float, str)
    result = Signal(object)
    error = Signal(object)  # the exception; its ``formatted_traceback`` attribute has details
    cancelled = Signal()
    finished = Signal()


@dataclass(eq=False)
class Job:
    """A handle on a submitted job: its signals and a way to ask it to stop."""

    name: str
    signals: JobSignals
    stop_event: threading.Event = field(default_factory=threading.Event)
    done: bool = False

    def cancel(self) -> None:
        """Ask the job to stop (it raises Interrupted at its next ``should_stop`` check)."""
        self.stop_event.set()


def lower_thread_priority() -> None:
    """Make the calling worker thread yield to the GUI thread when the CPUs are busy.

    On Linux, Qt's thread priorities do not apply to normal threads, so the thread's nice value is
    raised instead (a worker thread is only ever used for background work, so it stays lowered).
    """
    if sys.platform.startswith("linux"):
        try:
            tid = threading.get_native_id()
            if os.getpriority(os.PRIO_PROCESS, tid) < 10:
                os.setpriority(os.PRIO_PROCESS, tid, 10)
        except OSError:
            pass
    else:
        QThread.currentThread().setPriority(QThread.Priority.LowPriority)


class _Runnable(QRunnable):
    def __init__(self, fn: JobFn, job: Job, min_interval: float):
        super().__init__()
        self.setAutoDelete(True)
        self._fn = fn
        self._job = job
        self._min_interval = min_interval
        self._last = 0.0

    def _progress(self, fraction: float, message: str = "") -> None:
        now = time.monotonic()
        if fraction >= 1.0 or now - self._last >= self._min_interval:
            self._last = now
            self._job.signals.progress.emit(float(fraction), str(message))

    def run(self) -> None:  # noqa: D401 - Qt override
        sig = self._job.signals
        lower_thread_priority()
        try:
            value = self._fn(self._progress, self._job.stop_event.is_set)
        except Interrupted:
            sig.cancelled.emit()
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the user
            exc.formatted_traceback = traceback.format_exc()  # type: ignore[attr-defined]
            sig.error.emit(exc)
        else:
            if self._job.stop_event.is_set() and value is None:
                sig.cancelled.emit()
            else:
                sig.result.emit(value)
        finally:
            sig.finished.emit()


class JobRunner(QObject):
    """Submits jobs to a thread pool and reports every failure through ``job_failed``.

    Args:
        max_threads: worker threads for this runner (thumbnails use their own pool).
    """

    job_started = Signal(object)  # Job
    job_finished = Signal(object)  # Job
    job_failed = Signal(str, object)  # job name, exception

    def __init__(self, parent: QObject | None = None, max_threads: int = 2):
        super().__init__(parent)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(max_threads)
        self._jobs: set[Job] = set()

    def submit(
        self,
        name: str,
        fn: JobFn,
        *,
        on_result: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_progress: Callable[[float, str], None] | None = None,
        on_cancelled: Callable[[], None] | None = None,
        on_finished: Callable[[], None] | None = None,
        report_errors: bool = True,
        progress_interval: float = 0.05,
    ) -> Job:
        """Run ``fn(progress, should_stop)`` in the pool.

        Args:
            name: shown to the user in progress and error messages.
            fn: the Qt-free job.
            on_result / on_error / on_progress / on_cancelled / on_finished: GUI-thread slots.
            report_errors: also emit ``job_failed`` (the window shows it) on error.
            progress_interval: minimum seconds between progress signals.

        Returns:
            The job handle (``cancel()`` asks it to stop).
        """
        job = Job(name, JobSignals())
        sig = job.signals
        if on_progress:
            sig.progress.connect(on_progress)
        if on_result:
            sig.result.connect(on_result)
        if on_cancelled:
            sig.cancelled.connect(on_cancelled)
        if on_error:
            sig.error.connect(on_error)
        if report_errors:
            sig.error.connect(lambda exc, n=name: self.job_failed.emit(n, exc))

        def _done(j: Job = job) -> None:
            j.done = True
            self._jobs.discard(j)
            if on_finished:
                on_finished()
            self.job_finished.emit(j)

        sig.finished.connect(_done)
        self._jobs.add(job)
        self.job_started.emit(job)
        self.pool.start(_Runnable(fn, job, progress_interval))
        return job

    @property
    def running(self) -> list[Job]:
        """Jobs submitted and not yet finished."""
        return [j for j in self._jobs if not j.done]

    def cancel_all(self) -> None:
        """Ask every running job to stop."""
        for j in list(self._jobs):
            j.cancel()

    def wait(self, msecs: int = 30000) -> bool:
        """Block until the pool is idle (for shutdown and tests)."""
        return self.pool.waitForDone(msecs)
