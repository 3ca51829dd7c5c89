"""Advisory write lock of a catalog: one writer at a time, with a message naming the holder.

The lock file ``<catalog>/flukeid.lock`` holds JSON (pid, host, user, since). Liveness comes
from an OS lock on that file (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows), which
the kernel drops when the holder dies, even by SIGKILL; so a stale file never blocks anyone and
a reused pid is never mistaken for the holder.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt

LOCK_NAME = "flukeid.lock"


def current_user() -> str:
    """The login name of this process's user ("unknown" if it cannot be found)."""
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - getpass raises several kinds when no user is set
        return "unknown"


@dataclass(frozen=True)
class LockHolder:
    """Who holds a catalog's write lock."""

    pid: int | None
    host: str | None
    user: str | None
    since: str | None

    def describe(self) -> str:
        who = self.user or "another user"
        where = f" on {self.host}" if self.host else ""
        pid = f" (process {self.pid})" if self.pid else ""
        since = f" since {self.since}" if self.since else ""
        return f"{who}{where}{pid}{since}"


class WriteLock:
    """The write lock of one catalog folder, held by this process while the catalog is open."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> LockHolder | None:
        """Take the lock. Returns None on success, or who holds it when another process does.

        A holder writes its details just after taking the lock and empties the file just before
        dropping it; when the file names nobody, the lock is tried again for a moment, so the
        answer is either the lock or a holder with its process id.
        """
        for attempt in range(50):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                else:  # pragma: no cover - Windows
                    os.lseek(fd, 0, os.SEEK_SET)
                    msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                break
            except OSError:
                os.close(fd)
                holder = self.holder()
                if holder.pid is not None or attempt == 49:
                    return holder
                time.sleep(0.005)
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "user": current_user(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        data = json.dumps(info).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0) if hasattr(os, "pwrite") else os.write(fd, data)
        self._fd = fd
        return None

    def holder(self) -> LockHolder:
        """Who the lock file says holds the lock (fields None when unreadable)."""
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            info = {}
        return LockHolder(info.get("pid"), info.get("host"), info.get("user"), info.get("since"))

    def release(self) -> None:
        """Drop the lock (the file stays, emptied: deleting it would race with a new holder)."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        if fcntl is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None
