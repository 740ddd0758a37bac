"""Programs cca-hil starts and must never leave behind: own process group, logs from the first byte.

Shared by the simulation launchers (:mod:`cca_hil.fvp`, :mod:`cca_hil.qemu`).
A launched program gets its own session and process group, so Ctrl-C at the
terminal reaches only cca-hil (which then stops it deliberately) and the whole
group — the program and anything it forked — is signalled at once. Its stdout
and stderr are copied to log files by reader threads as the bytes arrive, so a
crash loses nothing. Stopping is SIGTERM, a bounded wait, then SIGKILL and
another bounded wait; a group that survives that is an error, never a hang.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Final

from cca_hil.errors import TransportError

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG: Final = 1
"""prctl(2) option: the signal a process gets when its parent thread dies (linux/prctl.h)."""

_MAX_LINE = 4096
"""Longest unterminated output kept for an error message while waiting for its newline."""


def signal_group(pgid: int, sig: int) -> bool:
    """Signal a process group; False when it no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        # A group we started cannot belong to someone else unless its number was reused.
        return False
    return True


def group_exists(pgid: int) -> bool:
    """True while any process (a zombie leader included) is in group ``pgid``."""
    return signal_group(pgid, 0)


def describe_exit(returncode: int | None, what: str) -> str:
    """People's words for a Popen return code (negative = killed by a signal)."""
    if returncode is None:
        return f"{what} still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"{what} killed by {name}"
    return f"{what} exited with status {returncode}"


class OutputPump:
    """Reader thread copying one pipe of a launched program to a log file as bytes arrive."""

    def __init__(
        self, stream: IO[bytes], log_path: Path, on_data: Callable[[bytes], None], *, name: str = "launch"
    ) -> None:
        self._stream = stream
        self._fd = stream.fileno()
        self._log = open(log_path, "ab", buffering=0)  # noqa: SIM115 - closed by the thread
        self._on_data = on_data
        self._stop = threading.Event()
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}-{log_path.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                # A bounded select instead of a blocking read: a stray process outside the
                # group that inherited the pipe must not keep this thread alive forever.
                ready, _, _ = select.select([self._fd], [], [], 0.1)
                if not ready:
                    if self._stop.is_set():
                        break
                    continue
                chunk = os.read(self._fd, 65536)
                if not chunk:
                    break
                self._log.write(chunk)
                self._on_data(chunk)
        except OSError as error:
            logger.debug("output pipe: %s", error)
        finally:
            self._log.close()
            self.done.set()

    def join(self, timeout: float) -> None:
        """Stop within ``timeout`` s (after draining what the program wrote) and close the pipe."""
        if not self.done.wait(timeout):
            self._stop.set()
            self._thread.join(1.0)
        self._thread.join(0.5)
        if not self._thread.is_alive():
            self._stream.close()


def wait_group_gone(proc: subprocess.Popen[bytes], pgid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` s until no process of group ``pgid`` is left; True when none is."""
    deadline = time.monotonic() + timeout
    while True:
        # Reap the leader: a zombie still counts as a member of its group.
        proc.poll()
        if not group_exists(pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def stop_group(
    proc: subprocess.Popen[bytes], pgid: int, *, grace: float, kill_wait: float, what: str
) -> None:
    """SIGTERM the group, wait ``grace`` s, SIGKILL, wait ``kill_wait`` s; TransportError if it survives."""
    if not group_exists(pgid):
        proc.poll()
        return
    signal_group(pgid, signal.SIGTERM)
    if wait_group_gone(proc, pgid, grace):
        return
    logger.warning("%s pid %d ignored SIGTERM for %g s; sending SIGKILL", what, proc.pid, grace)
    signal_group(pgid, signal.SIGKILL)
    if not wait_group_gone(proc, pgid, kill_wait):
        raise TransportError(f"the {what} process group {pgid} survived SIGKILL for {kill_wait:g} s")


class TailLines:
    """The last lines of output fed in arbitrary pieces (for error messages)."""

    def __init__(self, *, keep: int = 20) -> None:
        self._lines: deque[str] = deque(maxlen=keep)
        self._partial = bytearray()
        self._lock = threading.Lock()

    def feed(self, data: bytes) -> None:
        """Consume output."""
        with self._lock:
            self._partial += data
            *lines, rest = self._partial.split(b"\n")
            self._partial = bytearray(rest[-_MAX_LINE:])
            for raw in lines:
                line = raw.rstrip(b"\r")
                if line.strip():
                    self._lines.append(line.decode("utf-8", "replace"))

    def lines(self) -> tuple[str, ...]:
        """The last complete lines, plus any unterminated one."""
        with self._lock:
            out = list(self._lines)
            if self._partial.strip():
                out.append(self._partial.decode("utf-8", "replace"))
            return tuple(out)


def parent_death_signal(sig: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` giving the child ``sig`` when the launching thread dies (Linux), else None.

    PR_SET_PDEATHSIG (prctl(2)): a cca-hil killed outright (SIGKILL, the OOM
    killer) cannot stop its programs, so the kernel does. The signal follows the
    *thread* that started the program, so a program must be started and stopped
    by one thread. libc's prctl is looked up here, before the fork: the child only
    calls it.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:
            # The parent died between fork and prctl: nobody would ever stop this program.
            os._exit(1)

    return arm


class GroupProcess:
    """A program in its own process group, stdout and stderr logged from the first byte.

    ``pass_fds`` are inherited by the program (a listening socket it serves, for
    instance). Nothing it prints is lost: the pumps write to the logs before
    anything else looks at the bytes. With ``die_with_parent`` the program gets
    SIGTERM from the kernel should this process die without stopping it.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        stdout_log: Path,
        stderr_log: Path,
        cwd: Path,
        what: str,
        pass_fds: Iterable[int] = (),
        kill_wait: float = 5.0,
        die_with_parent: bool = False,
    ) -> None:
        self.argv = list(argv)
        self.what = what
        self.stdout_log = stdout_log
        self.stderr_log = stderr_log
        self.stdout_tail = TailLines()
        self.stderr_tail = TailLines()
        self._closed = False
        try:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                pass_fds=tuple(pass_fds),
                start_new_session=True,
                # Safe with threads here: the child only calls prctl and getppid, both resolved
                # before the fork; it imports nothing and takes no lock.
                preexec_fn=parent_death_signal(signal.SIGTERM) if die_with_parent else None,  # noqa: PLW1509
            )
        except OSError as error:
            raise TransportError(f"cannot start {what} ({shlex.join(self.argv[:1])}): {error}") from error
        self.pid = self._proc.pid
        self.pgid = self._proc.pid
        assert self._proc.stdout is not None and self._proc.stderr is not None
        pumps: list[OutputPump] = []
        try:
            pumps.append(OutputPump(self._proc.stdout, stdout_log, self.stdout_tail.feed, name=what))
            pumps.append(OutputPump(self._proc.stderr, stderr_log, self.stderr_tail.feed, name=what))
        except BaseException:
            # No log, no program: something nobody captures must not be left running.
            signal_group(self.pgid, signal.SIGKILL)
            wait_group_gone(self._proc, self.pgid, kill_wait)
            for pump in pumps:
                pump.join(kill_wait)
            self._proc.stdout.close()
            self._proc.stderr.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=0.1)
            raise
        self._pumps = tuple(pumps)

    @property
    def returncode(self) -> int | None:
        """The exit status once the program has exited (negative: killed by that signal), else None."""
        return self._proc.poll()

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` s for the program to exit by itself; its status, or None if it runs on."""
        try:
            return self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def settle_output(self, timeout: float = 1.0) -> None:
        """After an exit, give the pumps a moment to log the program's last words."""
        for pump in self._pumps:
            pump.done.wait(timeout)

    def output_tail(self) -> tuple[str, ...]:
        """The last lines the program printed (stdout, then stderr marked as such)."""
        return self.stdout_tail.lines() + tuple(f"stderr: {line}" for line in self.stderr_tail.lines())

    def status(self) -> str:
        """Exit status in words and the last output lines."""
        tail = " | ".join(self.output_tail()[-5:])
        return f"{describe_exit(self._proc.poll(), self.what)}; last output: {tail or '(none)'}"

    def close(self, *, grace: float, kill_wait: float) -> int | None:
        """Stop the process group (SIGTERM, bounded wait, SIGKILL) and finish the logs; idempotent."""
        if self._closed:
            return self._proc.returncode
        self._closed = True
        try:
            stop_group(self._proc, self.pgid, grace=grace, kill_wait=kill_wait, what=self.what)
        except KeyboardInterrupt:
            # A second Ctrl-C while shutting down means "now": no grace period.
            signal_group(self.pgid, signal.SIGKILL)
            wait_group_gone(self._proc, self.pgid, kill_wait)
            raise
        finally:
            for pump in self._pumps:
                pump.join(2.0)
            # Popen.__del__ would warn about a process nobody waited for.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=0.1)
        return self._proc.returncode
