"""``cca-hil shell``: the interactive RMI session of :mod:`cca_hil.shell` on the selected target.

``cli.py`` registers it with ``app.command("shell")(shell)``. On a terminal the
lines are read through prompt_toolkit (line editing, Tab completion, history
kept across runs in :func:`history_path`); with stdin not a terminal they are
read one by one and echoed, so a session can be scripted. prompt_toolkit, rich
and the target are imported inside the command.
"""

from __future__ import annotations

import contextlib
import os
import sys
import termios
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from prompt_toolkit import PromptSession
    from rich.console import Console

    from cca_hil.shell import Shell

HISTORY_ENV = "CCA_HIL_HISTORY"
HISTORY_NAME = "shell_history"
EXIT_REFUSED = 2
EXIT_FAILED = 3


def history_path(env: Mapping[str, str] | None = None) -> Path:
    """Where the shell keeps its history: ``$CCA_HIL_HISTORY``, else the XDG state directory."""
    env = os.environ if env is None else env
    explicit = env.get(HISTORY_ENV)
    if explicit:
        return Path(explicit).expanduser()
    state = env.get("XDG_STATE_HOME") or str(Path("~/.local/state").expanduser())
    return Path(state) / "cca-hil" / HISTORY_NAME


def shell(ctx: typer.Context) -> None:
    """An interactive RMI/RSI session with completion and history; `save FILE` writes a sequence to replay."""
    from cca_hil.cli import default_run_dir, settings_of
    from cca_hil.profiles import build_target
    from cca_hil.report import stdout_console
    from cca_hil.shell import Shell

    settings = settings_of(ctx)
    profile = settings.load_profile()
    # Targets reached through a transport keep their logs in a run folder; the model has none to keep.
    folder = settings.run_dir or (default_run_dir("shell") if profile.kind != "model" else None)
    console = stdout_console()
    with build_target(profile, run_dir=folder) as target:
        session = Shell(target)
        if sys.stdin.isatty():
            code = _interactive(session, console, prompt=f"cca-hil {profile.name}> ")
        else:
            code = _scripted(session, console)
    if code:
        raise typer.Exit(code)


def _interactive(session: Shell, console: Console, *, prompt: str) -> int:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory

    from cca_hil.errors import InputError
    from cca_hil.shell import ShellCompleter

    path = history_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab"):
            pass
    except OSError as exc:
        raise InputError(
            f"cannot keep the shell history there: {exc.strerror}; set ${HISTORY_ENV} to a writable file",
            where=str(path),
        ) from exc
    history = FileHistory(str(path))
    reader: PromptSession[str] = PromptSession(
        history=history, completer=ShellCompleter(session), complete_while_typing=False
    )
    console.print(
        f"cca-hil shell on {session.target.name}: `help` lists the commands, Tab completes, Ctrl-D leaves",
        markup=False,
        highlight=False,
    )
    with _typeahead_kept(sys.stdin.fileno()):
        _read_lines(session, console, reader, prompt)
    _unsaved_hint(session, console)
    return 0


@contextlib.contextmanager
def _typeahead_kept(fd: int) -> Iterator[None]:
    """Between prompts, no echo and no line discipline (Ctrl-C still interrupts); restored at the end.

    The line editor sets the terminal raw only while it prompts. Keys typed while a
    call runs would otherwise meet the tty's cooked mode: echoed into the output,
    and a Ctrl-D there swallowed as end-of-file. Kept raw, they reach the next prompt.
    """
    saved = termios.tcgetattr(fd)
    quiet = termios.tcgetattr(fd)
    quiet[3] &= ~(termios.ECHO | termios.ICANON)
    quiet[6][termios.VMIN] = 1
    quiet[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, quiet)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _read_lines(session: Shell, console: Console, reader: PromptSession[str], prompt: str) -> None:
    from cca_hil.shell import ShellExit, execute

    while True:
        try:
            line = reader.prompt(prompt)
        except KeyboardInterrupt:
            continue
        except EOFError:
            break
        try:
            execute(session, line, console, history=reader.history.get_strings)
        except ShellExit:
            break
        except KeyboardInterrupt:
            # Ctrl-C during a call ends the call's wait, not the session (as in a shell).
            console.print("interrupted", style="red", highlight=False)


def _scripted(session: Shell, console: Console) -> int:
    from prompt_toolkit.history import FileHistory

    from cca_hil.shell import ShellExit, execute

    def earlier() -> list[str]:
        # Scripted lines are not added to the history; earlier interactive ones are shown.
        return list(reversed(list(FileHistory(str(history_path())).load_history_strings())))

    code = 0
    for raw in sys.stdin:
        line = raw.rstrip("\n")
        if line.strip():
            console.print(f"> {line}", markup=False, highlight=False, style="dim")
        try:
            outcome = execute(session, line, console, history=earlier)
        except ShellExit:
            break
        if outcome.kind == "refused":
            code = max(code, EXIT_REFUSED)
        elif outcome.kind == "failed":
            code = EXIT_FAILED
    return code


def _unsaved_hint(session: Shell, console: Console) -> None:
    if session.record and session.saved != len(session.record):
        console.print(
            f"{len(session.record) - session.saved} call(s) not saved (save FILE writes them as a sequence)",
            markup=False,
            highlight=False,
        )
