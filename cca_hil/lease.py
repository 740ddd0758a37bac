"""Exclusive leases on shared targets: one user per board, never stuck (docs/farm.md "Leases").

A lease is a JSON file ``<key>.lease`` in the lease directory (``$CCA_HIL_LEASE_DIR``,
else ``${XDG_CACHE_HOME:-~/.cache}/cca-hil/leases``) saying who holds the target: owner
(user), pid, host, since, heartbeat, command line. Every change to a lease file —
take, recover, heartbeat, release, break — happens under ``fcntl.flock`` on the key's
``<key>.lock`` file, which is held only for those few milliseconds, so two waiters
never both take one lease. The content is written to a temporary file and renamed
over the lease, so a reader without the lock never sees half a file.

While a lease is held a thread refreshes its heartbeat every ``heartbeat_interval``
seconds. A lease is *stale*, and the next user takes it over, when its holder's
process has ended (same host: the pid is gone, a zombie, or another process with
that pid) or its heartbeat is older than the ``stale_after`` the holder wrote into
the lease (a hung or stopped holder, or one on another host sharing the directory).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import getpass
import json
import logging
import os
import shlex
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from cca_hil import filelock
from cca_hil.errors import InputError, ProfileError, TargetError

LEASE_DIR_ENV = "CCA_HIL_LEASE_DIR"
LEASE_SUFFIX = ".lease"
LOCK_SUFFIX = ".lock"

DEFAULT_TIMEOUT = 0.0
"""Seconds a user waits for a busy target by default: none, fail at once naming the holder."""
HEARTBEAT_INTERVAL = 2.0
"""Seconds between heartbeats of a held lease."""
STALE_AFTER = 20.0
"""A heartbeat older than this (seconds) makes a lease stale: ten missed beats, so a holder on a
loaded machine is never taken for dead, and a hung one is recovered within half a minute."""
POLL_INTERVAL = 0.1
"""Seconds between looks at a busy lease while waiting (a dead holder is noticed this fast)."""
GUARD_TIMEOUT = 10.0
"""Longest wait for a key's lock file; it is held for milliseconds, so this only ends a stuck holder."""

LEASE_PARAMS: Mapping[str, Any] = {"timeout": float, "key": str}
"""A profile's ``lease:`` section: how long to wait for the target, and its identity if not derived."""

log = logging.getLogger(__name__)


def default_directory() -> Path:
    """``$CCA_HIL_LEASE_DIR``, else ``${XDG_CACHE_HOME:-~/.cache}/cca-hil/leases``."""
    explicit = os.environ.get(LEASE_DIR_ENV)
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "cca-hil" / "leases"


def check_lease_section(section: Mapping[str, Any], *, where: str) -> None:
    """Values of a validated ``lease:`` section that types alone do not rule out."""
    timeout = section.get("timeout")
    if timeout is not None and not timeout >= 0:
        raise ProfileError(f"lease.timeout must be 0 or more seconds, got {timeout!r}", where=where)
    key = section.get("key")
    if key is not None and not str(key).strip():
        raise ProfileError("lease.key must not be empty", where=where)


def _iso(epoch: float) -> str:
    stamp = _dt.datetime.fromtimestamp(epoch, _dt.UTC).isoformat(timespec="seconds")
    return stamp.replace("+00:00", "Z")


def _process_start(pid: int) -> str | None:
    """The start time of ``pid`` (field 22 of /proc/PID/stat), or None where /proc cannot say."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is parenthesised and may hold spaces and parentheses.
    fields = text.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def _process_gone(pid: int, start: str | None) -> bool:
    """True when no process ``pid`` runs here any more (exited, a zombie, or the pid was reused)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # another user's process: it exists
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        # Gone in between, or a system without /proc, where the signal's answer is all we have.
        return Path("/proc/self/stat").exists()
    except OSError:
        return False
    after = text.rpartition(")")[2].split()
    if after and after[0] in ("Z", "X"):
        return True
    return start is not None and len(after) > 19 and after[19] != start


def machine_id() -> str | None:
    """This kernel boot and PID namespace: where a pid means the same process (None without /proc).

    Two containers with one host name, sharing a lease directory, do not see each other's pids.
    """
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    return f"{boot}/{namespace}"


@dataclass(frozen=True)
class LeaseInfo:
    """What a lease file says: the key, its holder, when it was taken and last heard of."""

    key: str
    owner: str
    pid: int
    host: str
    since: float
    """Epoch seconds when the lease was taken."""
    heartbeat: float
    """Epoch seconds of the holder's last heartbeat."""
    command: str
    token: str
    """Unique per taking: a holder only ever refreshes or removes its own lease."""
    heartbeat_interval: float = HEARTBEAT_INTERVAL
    stale_after: float = STALE_AFTER
    pid_start: str | None = None
    """The holder's process start time (Linux), to tell it from a later process with the same pid."""
    recovered: str = ""
    """Why the previous holder's lease was taken over, when it was."""
    machine: str | None = None
    """The holder's :func:`machine_id`: its pid is checked only where that is the same."""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready mapping (times also in ISO 8601 for people)."""
        data = asdict(self)
        data["since_iso"] = _iso(self.since)
        data["heartbeat_iso"] = _iso(self.heartbeat)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LeaseInfo:
        """Parse a lease file's mapping (ValueError/KeyError/TypeError when it is not one)."""
        return cls(
            key=str(data["key"]),
            owner=str(data["owner"]),
            pid=int(data["pid"]),
            host=str(data["host"]),
            since=float(data["since"]),
            heartbeat=float(data["heartbeat"]),
            command=str(data.get("command", "")),
            token=str(data["token"]),
            heartbeat_interval=float(data.get("heartbeat_interval", HEARTBEAT_INTERVAL)),
            stale_after=float(data.get("stale_after", STALE_AFTER)),
            pid_start=None if data.get("pid_start") is None else str(data["pid_start"]),
            recovered=str(data.get("recovered", "")),
            machine=None if data.get("machine") is None else str(data["machine"]),
        )

    def stale_reason(self, *, now: float | None = None, host: str | None = None) -> str | None:
        """Why this lease no longer holds (its holder died or went silent), or None while it is live."""
        if not self.token:
            return "the lease file is unreadable"
        here = socket.gethostname() if host is None else host
        same_machine = self.machine is None or self.machine == machine_id()
        if self.host == here and same_machine and _process_gone(self.pid, self.pid_start):
            return f"holder pid {self.pid} on {self.host} has ended"
        silent = (time.time() if now is None else now) - self.heartbeat
        if silent > self.stale_after:
            return f"no heartbeat for {silent:.0f} s (limit {self.stale_after:g} s)"
        return None

    def describe(self) -> str:
        """The holder in one phrase: owner, pid, host, since, command."""
        command = f", running {self.command}" if self.command else ""
        return f"{self.owner} (pid {self.pid} on {self.host}, since {_iso(self.since)}{command})"


class LeaseBusyError(TargetError):
    """The target is leased by someone else (and stayed so for as long as we were willing to wait)."""

    def __init__(self, key: str, holder: LeaseInfo, *, waited: float, hint: str = "") -> None:
        self.key = key
        self.holder = holder
        self.waited = waited
        how_long = f"waited {waited:.1f} s" if waited >= 0.05 else "not waiting (timeout 0)"
        text = f"target {key!r} is leased by {holder.describe()}; {how_long}"
        super().__init__(f"{text}; {hint}" if hint else text)


class LeaseStore:
    """The lease directory: one ``<key>.lease`` per held target and its ``<key>.lock`` guard."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory if directory is not None else default_directory()

    # -- files --------------------------------------------------------------------------------------

    def path_for(self, key: str) -> Path:
        """The lease file of ``key`` (the key percent-encoded into one file name)."""
        return self.directory / (quote(key, safe="") + LEASE_SUFFIX)

    def _lock_path(self, key: str) -> Path:
        return self.directory / (quote(key, safe="") + LOCK_SUFFIX)

    @contextlib.contextmanager
    def guard(self, key: str, *, timeout: float = GUARD_TIMEOUT) -> Iterator[None]:
        """Hold the key's lock file (flock) while a lease file is read and changed."""
        lock = self._lock_path(key)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            lock.touch(exist_ok=True)
        except OSError as exc:
            raise TargetError(f"cannot use the lease directory {self.directory}: {exc}") from exc

        def stuck() -> TargetError:
            return TargetError(
                f"the lease lock {lock} stayed held for {timeout:g} s "
                "(a process stopped while changing the lease?)"
            )

        with filelock.exclusive(lock, timeout, poll=0.01, on_timeout=stuck):
            yield

    def read(self, key: str) -> LeaseInfo | None:
        """The lease on ``key``, or None; an unreadable file reads as a lease with no heartbeat."""
        return self._read_path(self.path_for(key), key)

    def _read_path(self, path: Path, key: str) -> LeaseInfo | None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise TargetError(f"cannot read lease {path}: {exc}") from exc
        try:
            return LeaseInfo.from_json(json.loads(text))
        except (ValueError, KeyError, TypeError):
            # Damaged from outside (we only ever rename whole files in): recoverable at once.
            return LeaseInfo(
                key=key, owner="?", pid=0, host="?", since=0.0, heartbeat=0.0, command="", token=""
            )

    def _write(self, info: LeaseInfo) -> None:
        path = self.path_for(info.key)
        temporary = path.with_name(f".{path.name}.{info.token}.tmp")
        try:
            temporary.write_text(json.dumps(info.to_json(), indent=2) + "\n", encoding="utf-8")
            os.replace(temporary, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
            raise TargetError(f"cannot write lease {path}: {exc}") from exc

    def list(self) -> list[LeaseInfo]:
        """Every lease in the directory, by key."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.glob(f"*{LEASE_SUFFIX}")):
            info = self._read_path(path, unquote(path.name.removesuffix(LEASE_SUFFIX)))
            if info is not None:
                found.append(info)
        return found

    # -- taking, giving back, breaking ---------------------------------------------------------------

    def acquire(
        self,
        key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        stale_after: float = STALE_AFTER,
        command: str | None = None,
        hint: str = "",
    ) -> Lease:
        """Take the lease on ``key``: at once when free or stale, else waiting up to ``timeout`` seconds.

        LeaseBusyError (naming the holder) when it is still held at the deadline. Waiting
        and recovering a stale lease are logged (``cca_hil.lease``, level warning).
        """
        deadline = time.monotonic() + timeout
        started = time.monotonic()
        announced = False
        while True:
            with self.guard(key):
                holder = self.read(key)
                reason = holder.stale_reason() if holder is not None else None
                if holder is None or reason is not None:
                    info = self._new_info(
                        key,
                        command=command,
                        heartbeat_interval=heartbeat_interval,
                        stale_after=stale_after,
                        recovered=f"{holder.describe()}: {reason}" if holder and reason else "",
                    )
                    self._write(info)
                    if holder is not None:
                        log.warning("lease %s: recovered from %s (%s)", key, holder.describe(), reason)
                    return Lease(self, info)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LeaseBusyError(key, holder, waited=time.monotonic() - started, hint=hint)
            if not announced:
                announced = True
                log.warning("lease %s: held by %s; waiting up to %g s", key, holder.describe(), timeout)
            time.sleep(min(POLL_INTERVAL, remaining))

    @staticmethod
    def _new_info(
        key: str, *, command: str | None, heartbeat_interval: float, stale_after: float, recovered: str
    ) -> LeaseInfo:
        now = time.time()
        try:
            owner = getpass.getuser()
        except (KeyError, OSError):
            owner = f"uid {os.getuid()}"
        return LeaseInfo(
            key=key,
            owner=owner,
            pid=os.getpid(),
            host=socket.gethostname(),
            since=now,
            heartbeat=now,
            command=command if command is not None else shlex.join(sys.argv)[:300],
            token=uuid.uuid4().hex,
            heartbeat_interval=heartbeat_interval,
            stale_after=stale_after,
            pid_start=_process_start(os.getpid()),
            recovered=recovered,
            machine=machine_id(),
        )

    def refresh(self, info: LeaseInfo) -> LeaseInfo | None:
        """Write a new heartbeat into our lease; None when it is no longer ours (it was broken)."""
        with self.guard(info.key):
            current = self.read(info.key)
            if current is None or current.token != info.token:
                return None
            fresh = LeaseInfo(**{**asdict(info), "heartbeat": time.time()})
            self._write(fresh)
            return fresh

    def release(self, info: LeaseInfo) -> bool:
        """Remove our lease (not one that replaced it after a break); True when it was still ours."""
        with self.guard(info.key):
            current = self.read(info.key)
            if current is None or current.token != info.token:
                return False
            self.path_for(info.key).unlink(missing_ok=True)
            return True

    def break_lease(self, key: str, *, force: bool = False) -> tuple[LeaseInfo, str | None]:
        """Remove the lease on ``key``: a stale one always, a live one only with ``force``.

        Returns the lease removed and why it was stale (None: it was live). InputError when
        there is no such lease; LeaseBusyError for a live one without ``force``.
        """
        with self.guard(key):
            holder = self.read(key)
            if holder is None:
                raise InputError(
                    f"no lease on {key!r}", where=str(self.directory), valid=[i.key for i in self.list()]
                )
            reason = holder.stale_reason()
            if reason is None and not force:
                raise LeaseBusyError(
                    key, holder, waited=0, hint="its holder is alive; add --force to break it anyway"
                )
            try:
                self.path_for(key).unlink(missing_ok=True)
            except OSError as exc:
                raise TargetError(f"cannot remove lease {self.path_for(key)}: {exc}") from exc
            return holder, reason


class Lease:
    """A held lease: a heartbeat thread keeps it fresh until :meth:`release` (idempotent, bounded)."""

    def __init__(self, store: LeaseStore, info: LeaseInfo) -> None:
        self.store = store
        self.info = info
        self.lost = False
        """Set when the lease was found broken (by a heartbeat or at release): it is not ours any more."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-heartbeat {info.key}", daemon=True)
        self._thread.start()

    @property
    def key(self) -> str:
        """The leased target's key."""
        return self.info.key

    def _beat(self) -> None:
        while not self._stop.wait(self.info.heartbeat_interval):
            try:
                fresh = self.store.refresh(self.info)
            except TargetError as exc:
                log.warning("lease %s: heartbeat skipped: %s", self.key, exc)
                continue
            except OSError as exc:
                log.warning("lease %s: heartbeat failed: %s", self.key, exc)
                continue
            if fresh is None:
                self.lost = True
                log.warning("lease %s: broken by another user; no longer held", self.key)
                return
            self.info = fresh

    def release(self) -> None:
        """Stop the heartbeat and remove the lease file if it is still ours."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=GUARD_TIMEOUT + 1.0)
        if not self.lost:
            try:
                if not self.store.release(self.info):
                    self.lost = True  # broken (and maybe retaken) since the last heartbeat
            except (TargetError, OSError) as exc:
                # Left behind, the file is recovered as stale (dead pid) by the next user.
                log.warning("lease %s: not removed: %s", self.key, exc)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
