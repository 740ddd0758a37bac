"""``cca-hil fvp start | stop | ports``: an FVP that outlives one command (DESIGN.md "The command line").

``fvp start`` launches the model of the selected FVP profile in its own session
and records it in ``fvp-session.json`` in the runs root (``--run-dir`` if given,
else ``$CCA_HIL_RUNS`` or ``./cca-hil-runs``); the model's logs go to the
``fvp-session/`` folder beside it. Later commands with the same profile find the
state file there (a run folder's parent is the runs root) and use the running
model instead of launching one. ``fvp ports`` shows the recorded ports, ``fvp
stop`` stops the model's process group (SIGTERM, bounded wait, SIGKILL) and
forgets the session.

The lead's ``cli.py`` adds :data:`fvp_app` with ``app.add_typer(fvp_app, name="fvp")``;
the commands read the global options (profile, ``--set``, ``--run-dir``) from
the root context object.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol

import typer

from cca_hil.errors import InputError

if TYPE_CHECKING:
    from cca_hil.fvp import FvpConfig, FvpSession
    from cca_hil.profiles import Profile

SESSION_FOLDER = "fvp-session"
DEFAULT_FVP_PROFILE = "fvp-base-rme"

fvp_app = typer.Typer(
    name="fvp",
    help="Manage an FVP session of an FVP profile: start, ports, stop.",
    no_args_is_help=True,
    add_completion=False,
)


class GlobalOptions(Protocol):
    """What the commands need from the root context object (``cca_hil.cli.Settings`` has it)."""

    @property
    def run_dir(self) -> Path | None:
        """``--run-dir``."""
        ...

    def load_profile(self) -> Profile:
        """The selected profile with its overrides."""
        ...


@dataclass(frozen=True)
class _Defaults:
    """Global options when the sub-app runs without a root that set them: the default FVP profile."""

    run_dir: Path | None = None

    def load_profile(self) -> Profile:
        """The profile named by ``$CCA_HIL_PROFILE``, else ``fvp-base-rme``."""
        from cca_hil.profiles import load_profile

        return load_profile(os.environ.get("CCA_HIL_PROFILE") or DEFAULT_FVP_PROFILE)


def _options(ctx: typer.Context) -> GlobalOptions:
    obj = ctx.find_root().obj
    if obj is None:
        return _Defaults()
    if not hasattr(obj, "load_profile") or not hasattr(obj, "run_dir"):
        raise TypeError(f"root context object {type(obj).__name__} carries no global options")
    options: GlobalOptions = obj
    return options


def runs_root(options: GlobalOptions) -> Path:
    """Where the session file lives: ``--run-dir``, else the runs root of every command."""
    if options.run_dir is not None:
        return options.run_dir
    from cca_hil.cli import DEFAULT_RUNS_ROOT, RUNS_ENV

    return Path(os.environ.get(RUNS_ENV) or DEFAULT_RUNS_ROOT)


def state_file(options: GlobalOptions) -> Path:
    """The ``fvp-session.json`` the commands (and FVP targets) use."""
    from cca_hil.targets.fvp import SESSION_FILE

    return runs_root(options) / SESSION_FILE


def fvp_config(profile: Profile) -> FvpConfig:
    """The launcher's configuration of an ``fvp`` profile (InputError for another kind)."""
    from cca_hil.fvp import FvpConfig

    if profile.kind != "fvp":
        raise InputError(
            f"profile {profile.name!r} is of kind {profile.kind!r}; fvp commands need an FVP profile",
            where="--profile",
            valid=["fvp-base-rme", "fvp-base-rme-mec"],
        )
    section = {k: v for k, v in profile.params.items() if k != "link"}
    return FvpConfig.from_section(section, where=profile.source)


def _session_json(session: FvpSession, state: Path, *, running: bool) -> dict[str, Any]:
    return {
        "state_file": str(state),
        "running": running,
        "pid": session.pid,
        "pgid": session.pgid,
        "ports": dict(session.ports),
        "agent_uart": session.agent_uart,
        "run_dir": session.run_dir,
        "started": session.started,
    }


def _print_session(session: FvpSession, state: Path, *, running: bool, header: str) -> None:
    from cca_hil.report import stdout_console

    console = stdout_console()
    console.print(header, markup=False, highlight=False)
    console.print(
        f"  pid {session.pid} (process group {session.pgid}), started {session.started}", markup=False
    )
    for name, port in sorted(session.ports.items()):
        agent = "  (agent)" if name == f"terminal_{session.agent_uart}" else ""
        console.print(f"  {name}: 127.0.0.1:{port}{agent}", markup=False, highlight=False)
    console.print(f"  logs: {session.run_dir}", markup=False, highlight=False)
    console.print(f"  state: {state}" + ("" if running else "  (model no longer running)"), markup=False)


@contextlib.contextmanager
def _booting(binary: str) -> Iterator[None]:
    """A spinner while the model starts and prints its ports, on an interactive terminal only."""
    from cca_hil.report import stdout_console

    console = stdout_console()
    if not console.is_terminal or console.is_dumb_terminal:
        yield
        return
    with console.status(f"starting {binary}: waiting for its terminal ports…"):
        yield


AsJson = Annotated[bool, typer.Option("--json", help="Print the session as JSON.")]


@fvp_app.command("start")
def start(ctx: typer.Context, as_json: AsJson = False) -> None:
    """Launch the profile's FVP and leave it running for later commands; print its ports."""
    from cca_hil.fvp import start_session

    options = _options(ctx)
    config = fvp_config(options.load_profile())
    state = state_file(options)
    # A session still running there is refused by start_session, naming its pid and ports.
    with _booting(config.binary or "the FVP"):
        session = start_session(config, run_dir=state.parent / SESSION_FOLDER, state_path=state)
    if as_json:
        sys.stdout.write(json.dumps(_session_json(session, state, running=True), indent=2) + "\n")
    else:
        _print_session(session, state, running=True, header="FVP started")


@fvp_app.command("ports")
def ports(ctx: typer.Context, as_json: AsJson = False) -> None:
    """Show the terminal ports of the running FVP session."""
    from cca_hil.fvp import load_session

    state = state_file(_options(ctx))
    session = load_session(state)
    running = session.is_running()
    if as_json:
        sys.stdout.write(json.dumps(_session_json(session, state, running=running), indent=2) + "\n")
    else:
        _print_session(session, state, running=running, header="FVP session")


@fvp_app.command("stop")
def stop(ctx: typer.Context) -> None:
    """Stop the FVP session's model (its whole process group) and forget the session."""
    from cca_hil.fvp import load_session, stop_session
    from cca_hil.report import stdout_console

    options = _options(ctx)
    state = state_file(options)
    session = load_session(state)
    try:
        timeouts = fvp_config(options.load_profile()).timeouts
        shutdown, kill = timeouts.shutdown, timeouts.kill
    except InputError:
        # Stopping must work whatever profile is selected now: use the launcher's defaults.
        shutdown, kill = 10.0, 5.0
    stopped = stop_session(state, shutdown=shutdown, kill=kill)
    what = "stopped" if stopped else "was no longer running"
    stdout_console().print(f"FVP (pid {session.pid}) {what}; session forgotten", markup=False)
