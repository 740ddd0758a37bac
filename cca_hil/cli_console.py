"""``cca-hil console``: attach the terminal to the target's console (see :mod:`cca_hil.console`).

``cli.py`` registers it with ``app.command("console")(console)``. The command
takes the profile from the root context; everything but typer is imported
inside it.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated

import typer

EXIT_SIGNALLED = 128
"""Added to the number of the signal (SIGTERM, SIGHUP) that ended a session, as shells do."""


def console(  # noqa: PLR0917  (typer reads options from the signature)
    ctx: typer.Context,
    uart: Annotated[
        int | None,
        typer.Option(
            "--uart", metavar="N", help="UART of a target with several (FVP: 0-3; default: the agent's)."
        ),
    ] = None,
    terminal: Annotated[
        str | None,
        typer.Option("--terminal", metavar="NAME", help="An FVP terminal by name: terminal_0 … terminal_3."),
    ] = None,
    log: Annotated[
        Path | None,
        typer.Option("--log", metavar="FILE", help="Append what the console shows to FILE as it arrives."),
    ] = None,
    timestamps: Annotated[
        bool, typer.Option("--timestamps", help="Prefix every line with the seconds since attaching.")
    ] = False,
    hide_frames: Annotated[
        bool,
        typer.Option(
            "--hide-frames", help="Show no agent-link frames (default: a dim one-line summary each)."
        ),
    ] = False,
) -> None:
    """Attach to the target's console: raw, both ways; Ctrl-] quits. Frames show as one-line summaries."""
    from cca_hil.cli import check_output_path, default_run_dir, settings_of
    from cca_hil.console import (
        ESCAPE_NAME,
        ConsoleLine,
        ConsoleOptions,
        Hangup,
        hangup_ends_session,
        run_console,
        stdin_fd,
        stdout_fd,
        uart_of,
    )

    settings = settings_of(ctx)
    index = uart_of(uart, terminal)
    check_output_path(log, "--log")
    profile = settings.load_profile()
    folder = settings.run_dir or default_run_dir("console")
    folder.mkdir(parents=True, exist_ok=True)
    options = ConsoleOptions(hide_frames=hide_frames, timestamps=timestamps, log=log)
    say = sys.stderr.write
    try:
        with hangup_ends_session(), ConsoleLine(profile, uart=index, folder=folder) as line:
            assert line.stream is not None
            if not settings.quiet:
                say(f"cca-hil: console of {profile.name} on {line.description}; {ESCAPE_NAME} quits\r\n")
                sys.stderr.flush()
            outcome = run_console(
                line.stream, options=options, stdin_fd=stdin_fd(), stdout_fd=stdout_fd(), folder=folder
            )
    except Hangup as hangup:
        # After SIGHUP the terminal may be gone: the exit status still says what ended the session.
        with contextlib.suppress(OSError):
            say(f"\r\ncca-hil: connection closed ({hangup.args[0]})\n")
            sys.stderr.flush()
        raise typer.Exit(EXIT_SIGNALLED + hangup.signum) from None
    if not settings.quiet:
        say(f"\r\ncca-hil: connection closed ({outcome.reason})\n")
