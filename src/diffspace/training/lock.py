"""One trainer per run directory: an exclusive lock on `<run>/train.lock`.

`RunLock` holds `fcntl.flock(LOCK_EX)` on the lock file while a run trains and writes into it
the owner's pid, host and start time (JSON), which the messages quote. The kernel drops a flock
when its process dies, so a lock file that still holds a record but no flock was left by a
process that ended without releasing it (SIGKILL, power loss): on the same host it is taken
over with a message. A record from another host is not taken over, because whether flock
reaches across hosts depends on the shared file system; the message says how to clear it.
Releasing clears the record and drops the flock; the (empty) file stays, so that two starters
never race on creating it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from diffspace.checkpoint import RunError

LOCK_FILE = "train.lock"


def _stderr(line: str) -> None:
    """Print one line on stderr."""
    print(line, file=sys.stderr, flush=True)


def _describe(owner: dict[str, Any]) -> str:
    """"pid P on host H (since YYYY-MM-DD HH:MM:SS)" for a lock record."""
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("started", 0)))
    return f"pid {owner.get('pid', '?')} on host {owner.get('host', '?')} (since {since})"


def _alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """The lock of one run directory, as a context manager: `with RunLock(run_dir): train...`.

    Entering creates the run directory if needed and takes the lock, or raises RunError naming the
    owner; leaving releases it (and removes the directory again when the lock file is all it holds
    and this lock created it, e.g. after a config error)."""

    def __init__(self, run_dir: str | Path, report: Callable[[str], None] = _stderr) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.report = report
        self.fd: int | None = None
        self.created = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock; RunError if another live trainer holds it."""
        self.created = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read(fd)
            os.close(fd)
            raise RunError(
                f"{self.run_dir} is being trained by {_describe(owner) if owner else 'another process'}; "
                "wait for it to finish or stop it, or train into another --run-dir"
            ) from None
        try:
            self._take_over(_read(fd))
        except BaseException:
            os.close(fd)
            raise
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        os.fsync(fd)
        self.fd = fd

    def _take_over(self, previous: dict[str, Any] | None) -> None:
        """Report taking over a record left by an ended process; RunError for one from another host."""
        if not previous:
            return
        if previous.get("host") != socket.gethostname():
            raise RunError(
                f"{self.path} says {_describe(previous)} trains {self.run_dir}, and this host cannot check that "
                f"process; if no trainer runs there, delete {self.path} and start again"
            )
        why = "which holds no lock on it (pid reused)" if _alive(int(previous.get("pid", 0))) else \
            "which is no longer running"
        self.report(f"taking over the lock of {self.run_dir} from {_describe(previous)}, {why}")

    def release(self) -> None:
        """Clear the record and drop the lock (a no-op when not held)."""
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        if self.created and [p.name for p in self.run_dir.iterdir()] == [LOCK_FILE]:
            self.path.unlink(missing_ok=True)
            self.run_dir.rmdir()


def _read(fd: int) -> dict[str, Any] | None:
    """The record in an open lock file, or None when it is empty or unreadable."""
    data = os.pread(fd, 4096, 0)
    try:
        record = json.loads(data) if data.strip() else None
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
