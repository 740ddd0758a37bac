"""``cca-hil gpt decode | show`` and ``cca-hil check gpt | mec`` (DESIGN.md "The command line").

``gpt decode`` turns GPT bytes (a memory dump holding the L0 table, and
optionally separate L1 table dumps) into a PAS map; ``gpt show`` reads the
live tables of the selected target through the Target interface and does the
same. Both print a coloured band — one segment per run of equal PAS, wider
for larger runs on a log scale — and a table of the runs, and can write the
map as JSON (``--json``) and the rendering as SVG (``--svg``).

``check gpt`` and ``check mec`` run the checks of ``cca_hil.checks`` and
report them like any run: exit 0 when every case held, 1 when one failed, 3
on a target error, 2 on bad input.

The lead's ``cli.py`` adds :data:`gpt_app` and :data:`check_app` with
``app.add_typer(gpt_app)`` and ``app.add_typer(check_app)``; the commands read
the global options (profile, ``--set``, ``--run-dir``, ``-v``/``-q``) from the
root context object, and fall back to the ``model`` profile without one.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final, Protocol

import typer

from cca_hil.errors import CapabilityError, CcaHilError, InputError

if TYPE_CHECKING:
    from rich.console import Console

    from cca_hil.arch.gpt import PasMap
    from cca_hil.checks.cases import Section
    from cca_hil.profiles import Profile
    from cca_hil.report import Verbosity
    from cca_hil.targets.base import Target

gpt_app = typer.Typer(
    name="gpt",
    help="Granule Protection Tables: decode a dump, show a target's live PAS map.",
    no_args_is_help=True,
    add_completion=False,
)
check_app = typer.Typer(
    name="check",
    help="Checks: GPT isolation (gpt), memory encryption and scrubbing (mec), attestation (attest), "
    "and the differential harness itself (shadow).",
    no_args_is_help=True,
    add_completion=False,
)

PAS_STYLES: Final = {
    "nonsecure": "black on green",
    "secure": "white on blue",
    "realm": "white on magenta",
    "root": "black on yellow",
    "any": "black on grey70",
    "none": "white on grey23",
    "fault": "bold white on red",
}
"""Colour of each PAS in the band and the table."""
MAX_TABLE_ROWS: Final = 200


# -- global options ---------------------------------------------------------------------------------


class GlobalOptions(Protocol):
    """What the commands need from the root context object (``cca_hil.cli.Settings`` has it)."""

    @property
    def run_dir(self) -> Path | None:
        """``--run-dir``."""
        ...

    @property
    def verbosity(self) -> Verbosity:
        """How much the terminal views print."""
        ...

    def load_profile(self) -> Profile:
        """The selected profile with its overrides."""
        ...


@dataclass(frozen=True)
class _Defaults:
    """Global options when the sub-app runs without a root that set them."""

    run_dir: Path | None = None

    @property
    def verbosity(self) -> Verbosity:
        """Normal output."""
        from cca_hil.report import Verbosity

        return Verbosity.NORMAL

    def load_profile(self) -> Profile:
        """``$CCA_HIL_PROFILE``, else the model."""
        from cca_hil.profiles import load_profile

        return load_profile(os.environ.get("CCA_HIL_PROFILE") or "model")


def _options(ctx: typer.Context) -> GlobalOptions:
    obj = ctx.find_root().obj
    if obj is None:
        return _Defaults()
    if not all(hasattr(obj, name) for name in ("load_profile", "run_dir", "verbosity")):
        raise TypeError(f"root context object {type(obj).__name__} carries no global options")
    options: GlobalOptions = obj
    return options


@contextmanager
def _one_line_errors(ctx: typer.Context) -> Iterator[None]:
    """Turn a cca-hil error into its one line and exit code here, so the sub-apps stand on their own."""
    try:
        yield
    except CcaHilError as exc:
        from cca_hil.cli import report_error
        from cca_hil.report import Verbosity

        verbose = 2 if _options(ctx).verbosity >= Verbosity.VERBOSE else 0
        raise typer.Exit(report_error(exc, verbosity=verbose)) from None


def _number(text: str, option: str) -> int:
    try:
        value = int(text.replace("_", ""), 0)
    except ValueError:
        raise InputError(f"{text!r} is not a number", where=option, valid=["decimal", "0x… hex"]) from None
    if value < 0:
        raise InputError(f"{text!r} is negative", where=option)
    return value


def _read_file(path: Path, option: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", where=f"{option} {path}") from None


def _l1_chunk(spec: str) -> tuple[int, bytes]:
    path, at, address = spec.rpartition("@")
    if not at or not path:
        raise InputError(f"{spec!r} is not FILE@PA", where="--l1", valid=["l1.bin@0xfff00000"])
    return _number(address, f"--l1 {spec}"), _read_file(Path(path), "--l1")


# -- rendering ---------------------------------------------------------------------------------------


def _size(size: int) -> str:
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift:
            value = size / (1 << shift)
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size} B"


def render_map(pas_map: PasMap, console: Console, *, title: str) -> None:
    """A PAS map for people: a coloured band (log-scaled run widths), a legend and the runs."""
    from rich.table import Table
    from rich.text import Text

    runs = pas_map.runs
    geometry = pas_map.gpccr.geometry
    console.print(
        f"[bold]{title}[/bold]  GPCCR_EL3={pas_map.gpccr.encode():#x} GPTBR_EL3={pas_map.gptbr.encode():#x}"
        f"  PPS {_size(geometry.protected_size)}, granule {_size(geometry.granule_size)},"
        f" L0 entry {_size(geometry.l0_region_size)}, {len(runs)} runs",
        highlight=False,
    )
    width = max(console.width - 2, 20)
    # Granule-sized runs matter as much as terabytes: width by log2 of the run size, at least one cell.
    weights = [max(math.log2(max(run.end - run.start, 1)) - geometry.pgs_bits + 1, 1.0) for run in runs]
    total = sum(weights)
    band = Text()
    for run, weight in zip(runs, weights, strict=True):
        cells = max(1, round(weight / total * width))
        label = str(run.pas)[:cells] if cells >= 4 else ""
        band.append(label.center(cells), style=PAS_STYLES.get(str(run.pas), "reverse"))
    console.print(band, crop=False, overflow="ignore", no_wrap=True)
    legend = Text()
    for name, style in PAS_STYLES.items():
        legend.append(f" {name} ", style=style)
        legend.append(" ")
    console.print(legend)
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("start", "end", "size", "PAS"):
        table.add_column(column, justify="right" if column != "PAS" else "left")
    for run in runs[:MAX_TABLE_ROWS]:
        pas = str(run.pas)
        table.add_row(
            f"{run.start:#x}", f"{run.end:#x}", _size(run.end - run.start), Text(pas, PAS_STYLES[pas])
        )
    console.print(table)
    if len(runs) > MAX_TABLE_ROWS:
        console.print(f"… {len(runs) - MAX_TABLE_ROWS} more runs (all of them with --json)", highlight=False)
    if pas_map.unpredictable:
        blocks = ", ".join(f"[{a:#x}, {b:#x})" for a, b in pas_map.unpredictable[:8])
        console.print(f"[bold red]Contiguous blocks whose entries disagree (R_RSPLJH):[/] {blocks}")


def _outputs(pas_map: PasMap, *, title: str, json_path: Path | None, svg_path: Path | None) -> None:
    if json_path is not None:
        from cca_hil.report import write_atomically

        write_atomically(json_path, json.dumps(pas_map.to_json(), indent=2) + "\n")
    if svg_path is not None:
        from rich.console import Console

        from cca_hil.report import write_atomically

        recorder = Console(
            record=True, width=120, file=io.StringIO(), force_terminal=True, color_system="truecolor"
        )
        render_map(pas_map, recorder, title=title)
        write_atomically(svg_path, recorder.export_svg(title=f"cca-hil {title}"))


def _check_outputs(*paths: tuple[Path | None, str]) -> None:
    from cca_hil.cli import check_output_path

    for path, option in paths:
        check_output_path(path, option)


# -- gpt decode / show -----------------------------------------------------------------------------------


@gpt_app.command("decode")
def gpt_decode(  # noqa: PLR0917  (typer reads options from the signature)
    ctx: typer.Context,
    dump: Annotated[Path, typer.Argument(metavar="DUMP", help="Raw memory holding the level-0 table.")],
    base: Annotated[str, typer.Option("--base", metavar="PA", help="PA of the dump's first byte.")],
    gpccr: Annotated[str, typer.Option("--gpccr", metavar="V", help="GPCCR_EL3 value.")],
    gptbr: Annotated[str, typer.Option("--gptbr", metavar="V", help="GPTBR_EL3 value.")],
    l1: Annotated[
        list[str] | None,
        typer.Option("--l1", metavar="FILE@PA", help="An L1 table dump and its PA (repeatable)."),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", metavar="PATH", help="Write the map as JSON.")
    ] = None,
    svg_path: Annotated[
        Path | None, typer.Option("--svg", metavar="PATH", help="Write the rendering as SVG.")
    ] = None,
) -> None:
    """Decode GPT bytes into a PAS map (DDI0487 D9.6): band, runs, and optional JSON/SVG."""
    from cca_hil.arch.gpt import decode_tables
    from cca_hil.report import stdout_console

    with _one_line_errors(ctx):
        _check_outputs((json_path, "--json"), (svg_path, "--svg"))
        gpccr_value = _number(gpccr, "--gpccr")
        gptbr_value = _number(gptbr, "--gptbr")
        chunks = {_number(base, "--base"): _read_file(dump, "DUMP")}
        for spec in l1 or ():
            address, data = _l1_chunk(spec)
            if address in chunks:
                raise InputError(f"two dumps at {address:#x}", where=f"--l1 {spec}")
            chunks[address] = data
        pas_map = decode_tables(gpccr_value, gptbr_value, chunks)
        title = f"GPT decoded from {dump.name}"
        render_map(pas_map, stdout_console(), title=title)
        _outputs(pas_map, title=title, json_path=json_path, svg_path=svg_path)


@gpt_app.command("show")
def gpt_show(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the map as JSON instead.")] = False,
    svg_path: Annotated[
        Path | None, typer.Option("--svg", metavar="PATH", help="Write the rendering as SVG.")
    ] = None,
) -> None:
    """Read the target's GPT (registers and tables) and show its PAS map."""
    from cca_hil.arch.gpt import GptFeatures, decode_tables
    from cca_hil.profiles import build_target
    from cca_hil.report import stdout_console
    from cca_hil.targets.base import Capability

    with _one_line_errors(ctx):
        _check_outputs((svg_path, "--svg"))
        options = _options(ctx)
        profile = options.load_profile()
        with build_target(profile, run_dir=options.run_dir) as target:
            if not target.has(Capability.GPT_READ):
                raise CapabilityError(Capability.GPT_READ, target.name, why=_no_gpt_reason(profile))
            gpccr, gptbr = target.gpt_registers()
            tables = target.gpt_tables()
            features = GptFeatures(pa_bits=target.info().pa_bits)
        pas_map = decode_tables(gpccr, gptbr, tables, features=features)
        title = f"GPT of {profile.name}"
        if as_json:
            typer.echo(json.dumps(pas_map.to_json(), indent=2))
        else:
            render_map(pas_map, stdout_console(), title=title)
        _outputs(pas_map, title=title, json_path=None, svg_path=svg_path)


def _no_gpt_reason(profile: Profile) -> str:
    """Why a target cannot show its GPT, and what would."""
    if profile.kind == "fvp":
        return "the FVP's debug server is not enabled (set fvp.iris: true)"
    if profile.param("probe") is not None:
        return (
            "the GPT lives in Root PAS memory and GPCCR_EL3/GPTBR_EL3 are EL3 registers; a MEM-AP "
            "reaches only the Secure and Non-secure PAS, so the probe cannot read them"
        )
    return "neither the agent nor the target can read EL3 registers or Root memory"


# -- check gpt / mec -----------------------------------------------------------------------------------------


JsonOption = Annotated[
    Path | None, typer.Option("--json", metavar="PATH", help="Write the result document (JSON) here.")
]
JunitOption = Annotated[Path | None, typer.Option("--junit", metavar="PATH", help="Write JUnit XML here.")]


def _run_check(
    ctx: typer.Context,
    name: str,
    sections: Callable[[Target], Sequence[Section]],
    json_path: Path | None,
    junit_path: Path | None,
) -> int:
    """Run one check on the selected target with every view subscribed; the exit code."""
    from cca_hil.checks.cases import run_check
    from cca_hil.cli import default_run_dir
    from cca_hil.profiles import build_target
    from cca_hil.report import ConsoleView, JsonReport, JunitReport, RunFolder, stdout_console
    from cca_hil.results import Events, Observer

    options = _options(ctx)
    profile = options.load_profile()
    _check_outputs((json_path, "--json"), (junit_path, "--junit"))
    run_dir = options.run_dir
    if run_dir is not None and run_dir.exists() and not run_dir.is_dir():
        raise InputError("exists and is not a directory", where=f"--run-dir {run_dir}")
    command = f"check-{name}"
    view = ConsoleView(stdout_console(), verbosity=options.verbosity)
    with RunFolder(run_dir or default_run_dir(command)) as folder:
        observers: list[Observer] = [folder]
        if json_path is not None:
            observers.append(JsonReport(json_path))
        if junit_path is not None:
            observers.append(JunitReport(junit_path))
        observers.append(view)
        try:
            with build_target(profile, run_dir=folder.path) as target:
                result = run_check(
                    target, sections(target), command=f"check {name}", events=Events(observers)
                )
        except BaseException as exc:
            folder.record("run_aborted", error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            view.close()
    return result.exit_code()


@check_app.command("gpt")
def check_gpt(ctx: typer.Context, json_path: JsonOption = None, junit_path: JunitOption = None) -> None:
    """GPT isolation: every PAS × world × load/store, syndromes, delegate/undelegate transitions."""
    from cca_hil.checks.gpt import gpt_sections

    with _one_line_errors(ctx):
        code = _run_check(ctx, "gpt", gpt_sections, json_path, junit_path)
    raise typer.Exit(code)


@check_app.command("mec")
def check_mec(ctx: typer.Context, json_path: JsonOption = None, junit_path: JunitOption = None) -> None:
    """Scrubbing on undelegate/destroy, per-PAS and per-MECID encryption, cross-realm isolation."""
    from cca_hil.checks.mec import mec_sections

    with _one_line_errors(ctx):
        code = _run_check(ctx, "mec", mec_sections, json_path, junit_path)
    raise typer.Exit(code)


@check_app.command("attest")
def check_attest(
    ctx: typer.Context,
    json_path: JsonOption = None,
    junit_path: JunitOption = None,
    sequence: Annotated[
        Path | None,
        typer.Option("--sequence", metavar="FILE", help="Attestation flow to run (default: bundled)."),
    ] = None,
) -> None:
    """Attestation round trip: a measured realm gets a token; structure, signatures, binding, RIM."""
    from cca_hil.checks.attest import attest_sections

    with _one_line_errors(ctx):
        code = _run_check(
            ctx, "attest", lambda target: attest_sections(target, sequence), json_path, junit_path
        )
    raise typer.Exit(code)
