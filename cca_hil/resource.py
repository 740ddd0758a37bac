"""Things that are opened and closed: one context-manager shape for targets, links, probes and views."""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Self


class Resource(abc.ABC):
    """Opened by :meth:`open` (or ``with``), released by :meth:`close` whatever happened inside the block.

    ``close`` must be idempotent and bounded in time (STYLE.md: no teardown without a bound).
    """

    @abc.abstractmethod
    def open(self) -> object:
        """Acquire what the resource needs; idempotent (may return what it learnt, e.g. a handshake)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release everything; idempotent and bounded in time."""

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
