"""Drive a real command on a real pseudo-terminal, the way a person at a keyboard would.

A :class:`PtyProcess` starts a program with a fresh pty as its controlling
terminal (stdin, stdout and stderr), reads everything it prints in the
background, and lets a test type keys and wait for text::

    with PtyProcess.spawn([sys.executable, "-m", "cca_hil", "shell"], env=env) as term:
        term.expect("cca-hil> ")
        term.send("granule_d\\t")              # Tab asks for completion
        term.expect("granule_delegate")
        term.send(CTRL_D)
        assert term.wait() == 0

Like a terminal emulator, it answers cursor-position requests (``ESC [6n``),
so line editors such as prompt_toolkit run as they do on a real terminal.
Such editors draw only what changed (a completed word's rest, not the whole
line) and put the terminal back in cooked mode between prompts: wait for the
next prompt (or the drawn change) before typing on, as a person would, and
match with :meth:`PtyProcess.mark` / ``since=`` so earlier output does not count
(:meth:`PtyProcess.expect_in_order` waits for an answer and then the next prompt).
Every wait has a deadline and a timeout says what the program printed last.
:meth:`PtyProcess.close` (also on leaving the ``with`` block) ends a program
still running (SIGTERM, then SIGKILL) and closes the pty.

Only the standard library is used, so tests of any part may import it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

CTRL_C = b"\x03"
CTRL_D = b"\x04"
ESCAPE = b"\x1d"
"""Ctrl-]: the console's escape key (telnet's)."""
UP = b"\x1b[A"
DOWN = b"\x1b[B"
TAB = b"\t"
ENTER = b"\r"
"""What Enter sends: a carriage return (a tty in cooked mode turns it into a newline)."""

DEFAULT_TIMEOUT = 60.0
"""Seconds any single wait may take: generous, because a loaded CI machine is slow."""

_ANSI = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
_CPR_REQUEST = b"\x1b[6n"
_POLL = 0.1
"""Seconds the reader waits for output before it checks whether it was asked to stop."""


_TRAMPOLINE = (
    "import fcntl, os, sys, termios; "
    "fcntl.ioctl(0, termios.TIOCSCTTY, 0); os.execvp(sys.argv[1], sys.argv[1:])"
)
"""Run in the new session before the program: stdin (the pty) becomes the controlling terminal.
(A ``preexec_fn`` would do the same, but is unsafe in a process with threads, as a test process has.)"""


def strip_ansi(data: bytes) -> bytes:
    """``data`` without terminal control sequences (colours, cursor moves, titles)."""
    return _ANSI.sub(b"", data)


class PtyTimeout(AssertionError):
    """A wait on a :class:`PtyProcess` ran out; the message shows the end of what was printed."""


TermAttrs = list[int | list[int | bytes]]
"""What :func:`termios.tcgetattr` returns."""


class PtyProcess:
    """A program running on a pseudo-terminal; keys go in with :meth:`send`, output comes back."""

    def __init__(self, proc: subprocess.Popen[bytes], master: int) -> None:
        self.proc = proc
        self.master = master
        self._output = bytearray()
        self._cond = threading.Condition()
        self._eof = False
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read_loop, name="pty-reader", daemon=True)
        self._reader.start()

    @classmethod
    def spawn(
        cls,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        rows: int = 40,
        cols: int = 120,
    ) -> PtyProcess:
        """Start ``argv`` with a new pty of ``rows`` x ``cols`` as its controlling terminal.

        ``env`` replaces the environment (``TERM`` defaults to ``xterm-256color``).
        """
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        environment = dict(os.environ if env is None else env)
        environment.setdefault("TERM", "xterm-256color")
        environment["LINES"], environment["COLUMNS"] = str(rows), str(cols)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", _TRAMPOLINE, *argv],
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=environment,
                cwd=cwd,
                # A session of its own whose controlling terminal is the pty (as a login shell's is),
                # so that job control, Ctrl-C and window-size signals reach it as they would.
                start_new_session=True,
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            # Only the program holds the slave: the master reads EOF (EIO) once it and its children end.
            os.close(slave)
        return cls(proc, master)

    # -- output ---------------------------------------------------------------------------------

    def _read_loop(self) -> None:
        while True:
            # A bounded wait, so that hangup() can stop the reader before it closes the master.
            ready, _, _ = select.select([self.master], [], [], _POLL)
            if self._stop.is_set():
                return
            if not ready:
                continue
            try:
                data = os.read(self.master, 4096)
            except OSError as exc:
                if exc.errno not in (errno.EIO, errno.EBADF):
                    raise
                data = b""
            if data and _CPR_REQUEST in data:
                # Answer as a terminal would: the cursor is somewhere sensible (row 1, column 1).
                with contextlib.suppress(OSError):
                    os.write(self.master, b"\x1b[1;1R" * data.count(_CPR_REQUEST))
            with self._cond:
                if not data:
                    self._eof = True
                    self._cond.notify_all()
                    return
                self._output += data
                self._cond.notify_all()

    @property
    def output(self) -> bytes:
        """Everything the program printed so far, control sequences included."""
        with self._cond:
            return bytes(self._output)

    @property
    def text(self) -> str:
        """Everything printed so far as text, without control sequences, ``\\r`` removed."""
        return strip_ansi(self.output).decode("utf-8", "replace").replace("\r", "")

    def mark(self) -> int:
        """A position in the output: :meth:`expect` with ``since=`` looks only at what came after it."""
        with self._cond:
            return len(self._output)

    def expect(
        self,
        pattern: str | bytes | re.Pattern[bytes],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        since: int = 0,
        plain: bool = True,
    ) -> re.Match[bytes]:
        """Wait until the output after ``since`` matches ``pattern`` (a str or bytes is literal text).

        With ``plain`` (the default) control sequences are removed before matching,
        so colours and cursor moves between the characters do not matter.
        """
        if isinstance(pattern, str):
            pattern = pattern.encode()
        regex = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                seen = bytes(self._output[since:])
                if plain:
                    seen = strip_ansi(seen)
                match = regex.search(seen)
                if match is not None:
                    return match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._eof:
                    break
                self._cond.wait(min(remaining, 0.5))
        state = "the program ended" if self._eof else f"not within {timeout:g} s"
        raise PtyTimeout(f"no {regex.pattern!r} in the output ({state}); last output:\n{self._tail()}")

    def expect_in_order(
        self, *texts: str, timeout: float = DEFAULT_TIMEOUT, since: int = 0
    ) -> re.Match[bytes]:
        """Wait until ``texts`` have all appeared after ``since``, in order (an answer, then a prompt).

        This is how to know a line editor is ready for the next line: its answer, then
        its prompt *after* that answer (the echo of the line typed shows the prompt too).
        """
        pattern = rb"[\s\S]*?".join(re.escape(t.encode()) for t in texts)
        return self.expect(re.compile(pattern), timeout=timeout, since=since)

    def _tail(self, size: int = 1500) -> str:
        return strip_ansi(self.output)[-size:].decode("utf-8", "replace")

    # -- input ----------------------------------------------------------------------------------

    def send(self, keys: str | bytes) -> None:
        """Type ``keys`` (text is UTF-8; use the constants here for special keys)."""
        data = keys.encode() if isinstance(keys, str) else keys
        view = memoryview(data)
        while view:
            view = view[os.write(self.master, view) :]

    def sendline(self, line: str) -> None:
        """Type ``line`` and press Enter."""
        self.send(line.encode() + ENTER)

    # -- the terminal ---------------------------------------------------------------------------

    def termios(self) -> TermAttrs:
        """The terminal's current settings (what ``stty -a`` shows), to compare before and after."""
        # On Linux the master reports the settings of the pair (the slave's), even after the program ended.
        attrs: TermAttrs = termios.tcgetattr(self.master)
        return attrs

    # -- the process ----------------------------------------------------------------------------

    def wait(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """The exit status once the program ends (``-N`` for signal N); PtyTimeout if it does not."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise PtyTimeout(
                f"the program did not end within {timeout:g} s; last output:\n{self._tail()}"
            ) from None

    def hangup(self) -> None:
        """Close the terminal under the program, as closing its window does: it gets SIGHUP."""
        self._stop.set()
        self._reader.join(timeout=5)
        with self._cond:
            self._eof = True
            self._cond.notify_all()
        if self.master >= 0:
            os.close(self.master)
            self.master = -1

    def close(self) -> None:
        """End the program if it still runs (SIGTERM, then SIGKILL), close the pty; idempotent."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._reader.join(timeout=5)
        if self.master >= 0 and not self._reader.is_alive():
            os.close(self.master)
            self.master = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
