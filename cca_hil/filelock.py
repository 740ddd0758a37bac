"""An exclusive ``flock`` on a lock file, waited for with a deadline (never a hang)."""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def exclusive(
    path: Path, timeout: float, *, poll: float, on_timeout: Callable[[], Exception]
) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block.

    Polls every ``poll`` seconds; when the lock is still held by another process after ``timeout``
    seconds, raises the exception ``on_timeout()`` makes (each caller says what was busy, its way).
    OSError from creating the lock file reaches the caller.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise on_timeout() from None
                time.sleep(poll)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
