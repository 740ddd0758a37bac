"""``cca-hil farm run``: the same sequences on many boards in parallel (docs/farm.md "farm run").

The root app adds :data:`farm_app` with ``app.add_typer(farm_app, name="farm")``;
the command reads the global options (``--set`` for every board, ``--run-dir``
for the farm folder, ``-q``/``-v``, ``--inject-noise``) from the root context
object. Everything but typer is imported inside the command.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from cca_hil.errors import InputError

farm_app = typer.Typer(
    name="farm",
    help="Run sequences on many boards (profiles) in parallel, with merged JSON and JUnit.",
    no_args_is_help=True,
    add_completion=False,
)


@farm_app.command("run")
def farm_run(  # noqa: PLR0917  (typer reads options from the signature)
    ctx: typer.Context,
    sequences: Annotated[
        list[str], typer.Argument(metavar="SEQUENCE…", help="Sequence files, or names of bundled sequences.")
    ],
    profiles: Annotated[
        list[str],
        typer.Option(
            "--profiles",
            metavar="P1,P2,…",
            help="Boards, as profiles: comma-separated or repeated; NAME*N is N boards of one profile.",
        ),
    ],
    jobs: Annotated[
        int | None,
        typer.Option("--jobs", "-j", metavar="N", help="Boards running at once (default: all of them)."),
    ] = None,
    board_sets: Annotated[
        list[str] | None,
        typer.Option(
            "--board-set",
            metavar="BOARD:KEY=VALUE",
            help="Override a profile parameter of one board (repeatable), e.g. board-sim-2:link.retries=4.",
        ),
    ] = None,
    json_path: Annotated[
        Path | None,
        typer.Option("--json", metavar="PATH", help="Also write the merged result document here."),
    ] = None,
    junit_path: Annotated[
        Path | None, typer.Option("--junit", metavar="PATH", help="Also write the merged JUnit XML here.")
    ] = None,
    compare: Annotated[
        bool | None,
        typer.Option(
            "--compare/--no-compare",
            help="Shadow-model comparison on every board (default as for run: on except for model targets).",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option("--timeout", metavar="SECONDS", help="Longest a board may run before it is stopped."),
    ] = 3600.0,
    reset: Annotated[
        bool,
        typer.Option(
            "--reset",
            help="Reset every board before each sequence (through its probe, power control or labgrid), "
            "so a board reused from an earlier job starts from a freshly booted state.",
        ),
    ] = False,
) -> None:
    """Run sequences on every board in its own process; exit 3 if a board broke off, 1 if a case failed."""
    from cca_hil.cli import (
        Settings,
        _check_run_dir,
        _console,
        check_output_path,
        default_run_dir,
        resolve_sequence,
        settings_of,
    )
    from cca_hil.errors import ProfileError
    from cca_hil.farm import (
        EXIT_INTERRUPTED,
        Farm,
        FarmOptions,
        LineView,
        LiveView,
        parse_boards,
        plan_of,
        summary_line,
        write_json,
        write_junit,
    )
    from cca_hil.sequences import load_sequence

    settings = settings_of(ctx)
    if jobs is not None and jobs < 1:
        raise InputError(f"--jobs must be 1 or more, got {jobs}", where="--jobs")
    if timeout <= 0:
        raise InputError(f"--timeout must be positive, got {timeout:g}", where="--timeout")
    boards = parse_boards(profiles, board_sets or ())
    # Everything is checked before a worker starts: bad input never half-runs a farm.
    paths = [resolve_sequence(arg).resolve() for arg in sequences]
    plan = tuple(plan_of(load_sequence(p)) for p in paths)
    for board in boards:
        one = Settings(
            profile=board.profile,
            overrides=(*settings.overrides, *board.overrides),
            run_dir=None,
            verbose=0,
            quiet=True,
            inject_noise=settings.inject_noise,
        )
        try:
            one.load_profile()
        except ProfileError as exc:
            raise ProfileError(
                f"board {board.id}: {exc.what}",
                where=exc.where or f"--profiles {board.profile}",
                valid=exc.valid,
            ) from exc
    check_output_path(json_path, "--json")
    check_output_path(junit_path, "--junit")
    _check_run_dir(settings.run_dir)
    folder = settings.run_dir or default_run_dir("farm")

    console = _console()
    live = console.is_terminal and not console.is_dumb_terminal and not settings.quiet
    view = (
        LiveView(console)
        if live
        else LineView(
            lambda text: console.print(text, markup=False, highlight=False, soft_wrap=True),
            quiet=settings.quiet,
        )
    )
    options = FarmOptions(
        sequences=tuple(paths),
        plan=plan,
        jobs=jobs or len(boards),
        global_overrides=settings.overrides,
        compare=compare,
        reset=reset,
        inject_noise=settings.inject_noise,
        board_timeout=timeout,
        python=sys.executable,
    )
    farm = Farm(boards, folder=folder.resolve(), options=options, view=view)
    farm.check_fresh()
    try:
        farm.run()
    except KeyboardInterrupt:
        # Ctrl-C or SIGTERM: the workers were stopped and the merged results written; say so, exit 130.
        pass
    result = farm.result
    if result is None:
        raise typer.Exit(EXIT_INTERRUPTED)
    if json_path is not None:
        write_json(json_path, result)
    if junit_path is not None:
        write_junit(junit_path, result)
    console.print(summary_line(result), markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(result.exit_code())
