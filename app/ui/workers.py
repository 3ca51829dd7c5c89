"""Run Qt-free job functions off the GUI thread.

A job is a plain function ``fn(progress, should_stop) -> result`` (the shape every long job of
the services has; ``progress.event(obj)`` also passes any object to the GUI thread, e.g. the
training events). :class:`JobRunner` runs it on a :class:`QThreadPool` and always ends with
exactly one of ``result`` or ``error`` (an :class:`model.api.Interrupted` counts as
``cancelled``), then ``finished``. Progress is throttled so a chatty job cannot flood the
event loop.

A job never outlives its owner: the owner calls :meth:`JobRunner.shutdown` before its catalog
closes (cancel, wait, and from then on drop every late signal), and a runner given
``alive=lambda: not catalog.closed`` drops the signals of a job that ends after its catalog was
closed by someone else. A dropped signal never reaches the caller's slots.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
import warnings
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
    event = Signal(object)
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
    settled: bool = False  # its result, error or cancellation has reached the GUI thread
    done: bool = False  # its ``finished`` has too (or its runner shut down)

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


class _Progress:
    """What a job gets as ``progress``: ``progress(fraction, message)`` and ``progress.event(obj)``."""

    def __init__(self, signals: JobSignals, min_interval: float):
        self._signals = signals
        self._min_interval = min_interval
        self._last = 0.0

    def __call__(self, fraction: float, message: str = "") -> None:
        now = time.monotonic()
        if fraction >= 1.0 or now - self._last >= self._min_interval:
            self._last = now
            self._signals.progress.emit(float(fraction), str(message))

    def event(self, obj: Any) -> None:
        """Pass ``obj`` to the GUI thread (never throttled)."""
        self._signals.event.emit(obj)


class _Runnable(QRunnable):
    def __init__(self, fn: JobFn, job: Job, min_interval: float, low_priority: bool):
        super().__init__()
        self.setAutoDelete(True)
        self._fn = fn
        self._job = job
        self._progress = _Progress(job.signals, min_interval)
        self._low_priority = low_priority

    def run(self) -> None:  # noqa: D401 - Qt override
        sig = self._job.signals
        if self._low_priority:
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
            # the pool may keep this runnable's wrapper after it ran: hold nothing of the job
            self._fn = self._job = self._progress = None


def _release(signals: JobSignals) -> None:
    """Disconnect a finished job's slots: Qt holds them (out of the garbage collector's sight) and
    they hold the job and whatever they captured (a session, its descriptor index), so without this
    every job ever run stayed in memory."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a signal with no slot connected
        for sig in (signals.progress, signals.event, signals.result, signals.error, signals.cancelled,
                    signals.finished):
            try:
                sig.disconnect()
            except (RuntimeError, TypeError):
                pass


class JobRunner(QObject):
    """Submits jobs to a thread pool and reports every failure through ``job_failed``.

    Args:
        max_threads: worker threads for this runner (thumbnails use their own pool).
        alive: while it returns False (e.g. ``lambda: not catalog.closed``), signals of jobs are
            dropped instead of reaching their slots.
        low_priority: run the jobs at a lower priority than the GUI thread (False for a job that
            starts a process which should not inherit it, e.g. training).
    """

    job_started = Signal(object)  # Job
    job_finished = Signal(object)  # Job
    job_failed = Signal(str, object)  # job name, exception

    def __init__(self, parent: QObject | None = None, max_threads: int = 2,
                 alive: Callable[[], bool] | None = None, low_priority: bool = True):
        super().__init__(parent)
        self._low_priority = low_priority
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(max_threads)
        self._jobs: set[Job] = set()
        self._alive = alive
        self._closed = False
        self.dropped = 0  # signals dropped because the owner or its catalog had gone (for tests)
        self.destroyed.connect(self._on_destroyed)

    def _on_destroyed(self) -> None:
        self._closed = True  # deleted with its owner: a job still queued must not call back

    # -- the guard every slot goes through --------------------------------------------------
    def accepting(self, alive: Callable[[], bool] | None = None) -> bool:
        """True while job signals may reach their slots (not shut down, the owner's catalog open)."""
        alive = alive or self._alive
        return not self._closed and (alive is None or bool(alive()))

    def submit(
        self,
        name: str,
        fn: JobFn,
        *,
        on_result: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_progress: Callable[[float, str], None] | None = None,
        on_event: Callable[[Any], None] | None = None,
        on_cancelled: Callable[[], None] | None = None,
        on_finished: Callable[[], None] | None = None,
        report_errors: bool = True,
        progress_interval: float = 0.05,
        alive: Callable[[], bool] | None = None,
    ) -> Job:
        """Run ``fn(progress, should_stop)`` in the pool.

        Args:
            name: shown to the user in progress and error messages.
            fn: the Qt-free job.
            on_result / on_error / on_progress / on_event / on_cancelled / on_finished: GUI-thread
                slots; none runs after :meth:`shutdown` or while ``alive()`` is False.
            report_errors: also emit ``job_failed`` (the window shows it) on error.
            progress_interval: minimum seconds between progress signals.
            alive: this job's own guard, instead of the runner's (e.g. a job that opens a catalog
                does not depend on the one open now).

        Returns:
            The job handle (``cancel()`` asks it to stop).

        After :meth:`shutdown` nothing runs: the handle returned is already done.
        """
        if self._closed:
            job = Job(name, JobSignals())
            job.stop_event.set()
            job.settled = job.done = True
            return job
        job = Job(name, JobSignals())
        sig = job.signals

        def guard(slot: Callable[..., None]) -> Callable[..., None]:
            def call(*args) -> None:
                if self.accepting(alive):
                    slot(*args)
                else:
                    self.dropped += 1

            return call

        def settle(slot: Callable[..., None] | None) -> Callable[..., None]:
            # the job counts as settled even when its slot is dropped
            guarded = guard(slot) if slot is not None else None

            def call(*args) -> None:
                job.settled = True
                if guarded is not None:
                    guarded(*args)

            return call

        if on_progress:
            sig.progress.connect(guard(on_progress))
        if on_event:
            sig.event.connect(guard(on_event))
        sig.result.connect(settle(on_result))
        sig.cancelled.connect(settle(on_cancelled))
        sig.error.connect(settle(on_error))
        if report_errors:
            sig.error.connect(guard(lambda exc, n=name: self.job_failed.emit(n, exc)))

        def finished(j: Job = job) -> None:
            j.settled = j.done = True
            self._jobs.discard(j)
            try:
                if self.accepting(alive):
                    if on_finished:
                        on_finished()
                    self.job_finished.emit(j)
                else:
                    self.dropped += 1
            finally:
                _release(j.signals)

        sig.finished.connect(finished)
        self._jobs.add(job)
        self.job_started.emit(job)
        self.pool.start(_Runnable(fn, job, progress_interval, self._low_priority))
        return job

    @property
    def running(self) -> list[Job]:
        """Jobs submitted and not yet finished."""
        return [j for j in self._jobs if not j.done]

    @property
    def unsettled(self) -> list[Job]:
        """Jobs whose result, error or cancellation has not reached the GUI thread yet."""
        return [j for j in self._jobs if not j.settled]

    def cancel_all(self) -> None:
        """Ask every running job to stop."""
        for j in list(self._jobs):
            j.cancel()

    def wait(self, msecs: int = 30000) -> bool:
        """Block until the pool is idle (for shutdown and tests)."""
        return self.pool.waitForDone(msecs)

    def shutdown(self, msecs: int = 30000, *, cancel: bool = True) -> bool:
        """Before the owner's catalog closes: stop taking jobs, cancel (unless ``cancel=False``:
        a write in progress is let finish), wait for the pool, then drop every late signal.

        Returns:
            True when every job ended within ``msecs``.
        """
        self._closed = True
        if cancel:
            self.cancel_all()
        ended = self.pool.waitForDone(msecs)
        for j in self._jobs:
            j.settled = j.done = True
            if ended:
                _release(j.signals)  # (a job still running keeps its signals: it emits into them)
        self._jobs.clear()
        return ended
