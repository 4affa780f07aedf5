"""One relay per data folder: an OS lock on ``DIR/relay.lock`` held while the relay runs.

Two relays on one folder would each fold their own writes, reap on their own
clock and overwrite each other's checkpoint (issue 12). ``flock`` is taken on
an open file description, so the kernel drops it when the process ends in any
way, ``kill -9`` included: a stale lock cannot outlive its holder, and the file
left behind is harmless (the next relay locks it again). The file holds the
holder's pid, only to name it in the refusal. ``relay audit`` never takes it:
it reads the log read-only beside a running relay. See ADR 0018.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_FILE = "relay.lock"


class DataFolderInUseError(Exception):
    """Raised when another live process holds the data folder's lock."""

    def __init__(self, folder: Path, pid: int | None) -> None:
        self.folder = folder
        self.pid = pid
        holder = f"process {pid}" if pid is not None else "another process"
        super().__init__(
            f"the data folder {folder} is in use by {holder} (another relay?); "
            "stop it first, or give this relay its own --data folder"
        )


class DataFolderLock:
    """The exclusive lock on one data folder, held from ``acquire`` to ``release``."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock now or raise ``DataFolderInUseError`` (never waits)."""
        if self._fd is not None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise DataFolderInUseError(self.folder.resolve(), pid) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Let the next relay in (the file stays: removing it would race a new holder)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the last descriptor drops the flock


def _read_pid(fd: int) -> int | None:
    """The holder's pid as it wrote it (None while it is still writing it)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
