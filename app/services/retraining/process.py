"""The training child process: its JSON-lines progress protocol and the runner that reads it.

:func:`run_training_process` starts a command (``python -m app train ... --progress-json``,
``export-model``, ``train-detector``) in its own process group, turns every output line into a
:class:`TrainingEvent`, polls ``should_stop`` to stop it gently (SIGINT, SIGTERM, kill) and turns
a crash (non-zero exit, no ``done`` event) into :class:`TrainingFailed`.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from model.api import FlukeidError, Interrupted

# How long a stopped training process gets to save and exit after SIGINT, then after SIGTERM.
STOP_GRACE_S = (15.0, 5.0)

EventFn = Callable[["TrainingEvent"], None]
StopFn = Callable[[], bool]


class TrainingFailed(FlukeidError):
    """The training (or export/evaluation) process failed; the active model is unchanged."""


# --- the JSON-lines protocol -------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingEvent:
    """One progress event of the training process.

    ``kind`` is ``start``, ``epoch``, ``done``, ``error`` or ``log`` (a non-JSON output line,
    kept so the user can see what the process said). ``data`` is the JSON object as sent.
    """

    kind: str
    data: dict = field(default_factory=dict)

    @property
    def message(self) -> str:
        return str(self.data.get("message", ""))

    def fraction(self) -> float | None:
        """Fraction of training done after an ``epoch`` event (None for other events)."""
        if self.kind != "epoch":
            return None
        try:
            return max(0.0, min(1.0, float(self.data["epoch"]) / float(self.data["epochs"])))
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            return None


def parse_event_line(line: str) -> TrainingEvent | None:
    """Parse one output line of ``flukeid train --progress-json``.

    Returns None for a blank line, a ``log`` event for any line that is not a JSON object with
    an event name (``event``, or ``type``/``kind``), else the event.
    """
    text = line.strip()
    if not text:
        return None
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            kind = obj.get("event", obj.get("type", obj.get("kind")))
            if isinstance(kind, str) and kind:
                return TrainingEvent(kind, {k: v for k, v in obj.items() if k not in ("event", "type", "kind")})
    return TrainingEvent("log", {"message": text})


def _repo_root() -> str:
    """Where ``python -m app`` finds this checkout's packages (harmless when installed)."""
    return str(Path(__file__).resolve().parents[3])


# --- running a child process with progress -------------------------------------------------------


def _reader(stream, lines: queue.Queue) -> None:
    try:
        for line in iter(stream.readline, ""):
            lines.put(line)
    finally:
        lines.put(None)


def _stop_process(proc: subprocess.Popen, grace: tuple[float, float] = STOP_GRACE_S) -> None:
    """Ask ``proc`` (and its process group) to stop: SIGINT, then SIGTERM, then kill."""
    if proc.poll() is not None:
        return
    if os.name == "posix":
        steps = [(signal.SIGINT, grace[0]), (signal.SIGTERM, grace[1]), (signal.SIGKILL, 5.0)]
        for sig, wait in steps:
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                proc.send_signal(sig)
            try:
                proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue
    else:  # Windows: CTRL_BREAK to the new process group, then terminate
        try:
            proc.send_signal(signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]
            proc.wait(grace[0])
            return
        except (subprocess.TimeoutExpired, OSError, ValueError):
            proc.kill()
            proc.wait(5.0)


def run_training_process(
    cmd: Sequence[str],
    *,
    on_event: EventFn | None = None,
    should_stop: StopFn | None = None,
    log_path: str | Path | None = None,
    env: dict | None = None,
    cwd: str | Path | None = None,
    require_done: bool = True,
    what: str = "training",
) -> TrainingEvent | None:
    """Run ``cmd`` (a process that prints JSON-lines events) to its end.

    Args:
        cmd: the command line (first item: the Python).
        on_event: called in this thread for every event, ``log`` lines included.
        should_stop: polled about ten times a second; when true the process is asked to stop
            (SIGINT so it can keep its last checkpoint; then SIGTERM; then killed) and
            :class:`Interrupted` is raised.
        log_path: the process's stderr goes there (and its stdout lines are appended too).
        require_done: a process that exits 0 without a ``done`` event is a failure.
        what: names the step in error messages ("training", "export").

    Returns:
        The ``done`` event (None when ``require_done`` is false and there was none).

    Raises:
        TrainingFailed: the process could not start, exited non-zero, or reported an error.
        Interrupted: ``should_stop`` became true.
    """
    log_file = open(log_path, "a", encoding="utf-8") if log_path else None  # noqa: SIM115
    stderr_tail: deque[str] = deque(maxlen=20)
    popen_kw: dict = {"start_new_session": True} if os.name == "posix" else {
        "creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
    }
    full_env = dict(os.environ if env is None else env)
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    try:
        try:
            proc = subprocess.Popen(
                list(cmd),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
                encoding="utf-8",
                errors="replace",
                bufsize=1,
                env=full_env,
                cwd=str(cwd) if cwd else _repo_root(),
                **popen_kw,
            )
        except OSError as exc:
            raise TrainingFailed(f"{cmd[0]}: cannot start the {what} process ({exc})") from None
        lines: queue.Queue = queue.Queue()
        err_lines: queue.Queue = queue.Queue()
        threads = [
            threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True),
            threading.Thread(target=_reader, args=(proc.stderr, err_lines), daemon=True),
        ]
        for t in threads:
            t.start()
        done: TrainingEvent | None = None
        error: TrainingEvent | None = None
        open_streams = 1
        last_log = ""
        try:
            while open_streams:
                if should_stop is not None and should_stop():
                    _stop_process(proc)
                    raise Interrupted(f"{what} cancelled")
                _drain_stderr(err_lines, stderr_tail, log_file)
                try:
                    line = lines.get(timeout=0.1)
                except queue.Empty:
                    continue
                if line is None:
                    open_streams -= 1
                    continue
                if log_file:
                    log_file.write(line if line.endswith("\n") else line + "\n")
                ev = parse_event_line(line)
                if ev is None:
                    continue
                if ev.kind == "log":
                    last_log = ev.message
                elif ev.kind == "done":
                    done = ev
                elif ev.kind == "error":
                    error = ev
                if on_event is not None:
                    on_event(ev)
            while proc.poll() is None:
                if should_stop is not None and should_stop():
                    _stop_process(proc)
                    raise Interrupted(f"{what} cancelled")
                time.sleep(0.05)
        except BaseException:
            _stop_process(proc, (2.0, 2.0))
            raise
        for t in threads:
            t.join(timeout=2.0)
        _drain_stderr(err_lines, stderr_tail, log_file)
        rc = proc.returncode
    finally:
        if log_file:
            log_file.close()
    if error is not None or rc != 0 or (require_done and done is None):
        if error is not None and error.message:
            reason = error.message
        elif stderr_tail:
            reason = stderr_tail[-1]
        elif last_log:
            reason = last_log
        else:
            reason = "no output"
        how = f"exited with code {rc}" if rc != 0 else "ended without finishing"
        where = f"; full log: {log_path}" if log_path else ""
        raise TrainingFailed(f"the {what} process {how}: {reason}{where}. The active model is unchanged.")
    return done


def _drain_stderr(err_lines: queue.Queue, tail: deque, log_file) -> None:
    while True:
        try:
            line = err_lines.get_nowait()
        except queue.Empty:
            return
        if line is None:
            continue
        text = line.rstrip("\n")
        if text.strip():
            tail.append(text.strip())
        if log_file:
            log_file.write(text + "\n")
