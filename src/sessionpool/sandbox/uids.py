"""Host uids for jailed sessions: no two live sessions on this host ever share one."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from pathlib import Path

from sessionpool import errors

LOCK_DIR = Path("/run/sessionpool/uids")


class UidClaims:
    """Hands out indexes into ``base .. base+count-1``, one per live session.

    An exclusive flock on ``<lock_dir>/<uid>``, held for the session's life, decides: flock
    locks belong to the open file, so they exclude other servers on the host and other
    backends in this process alike. Without a lock file no uid is handed out: nothing would
    stop another server from using it too.
    """

    def __init__(self, base: int, count: int, lock_dir: Path = LOCK_DIR) -> None:
        self.base = base
        self.count = count
        self.lock_dir = lock_dir
        self._held: dict[int, int] = {}  # index -> lock fd
        self._next = 0
        self._lock = threading.Lock()  # slots are made and released in worker threads

    def claim(self) -> int | None:
        """A free index (the uid is ``base + index``), or None when every uid is taken."""
        with self._lock:
            with contextlib.suppress(OSError):
                self.lock_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            for step in range(self.count):
                index = (self._next + step) % self.count
                if index in self._held:
                    continue
                try:
                    fd = os.open(
                        self.lock_dir / str(self.base + index),
                        os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                        0o600,
                    )
                except OSError as exc:  # refuse rather than risk sharing a uid
                    raise errors.SandboxError(
                        f"cannot lock session uids in {self.lock_dir} ({exc.strerror}); the "
                        "server needs root and a writable /run"
                    ) from None
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    continue  # held by another server, or another backend of this process
                self._held[index] = fd
                self._next = index + 1
                return index
            return None

    def release(self, index: int) -> None:
        with self._lock:
            fd = self._held.pop(index, -1)
        if fd >= 0:
            os.close(fd)
