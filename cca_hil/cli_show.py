"""``cca-hil show realms | granules | gpt``: what the target holds right now (views of ``cca_hil.views``).

On the model every view reads the model's state — the state of a bench
session (``--session NAME``, default ``default``), which ``cca-hil rmi`` calls
and ``cca-hil run … --session NAME`` leave behind. On a target that keeps its
own state (a board, an FVP) the views ask the target the way any host can:
the RTT tree of a realm named by ``--rd`` is walked with RMI_RTT_READ_ENTRY,
a granule's PAS comes from the GPT where the target can read it and from
probing loads where it cannot. Every view prints its source, and ``--json``
prints the view as JSON instead.

The root ``cli.py`` adds :data:`show_app` with ``app.add_typer(show_app, name="show")``.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final

import typer

from cca_hil.errors import InputError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.tree import Tree

    from cca_hil.targets.base import Target
    from cca_hil.views import GranulesView, RealmsView, RealmView, RttRun, WalkProgress

show_app = typer.Typer(
    name="show",
    help="What the target holds now: realms and their RTTs, granule states, the PAS map.",
    no_args_is_help=True,
    add_completion=False,
)

STATE_STYLES: Final = {
    "table": "cyan",
    "assigned": "bold green",
    "unassigned": "dim",
    "assigned_ns": "bold blue",
    "unassigned_ns": "dim blue",
}
GRANULE_STYLES: Final = {
    "undelegated": "dim",
    "delegated": "yellow",
    "rd": "bold magenta",
    "rec": "magenta",
    "rec_aux": "magenta",
    "rtt": "cyan",
    "data": "bold green",
}
PROBE_DEFAULT_GRANULES: Final = 256
"""Granules ``show granules`` probes by default on a target whose GPT it cannot read (1 MiB)."""
_SIZE = re.compile(r"(?i)^(0x[0-9a-f_]+|[0-9_]+)\s*([kmgt]i?b?)?$")
_UNITS: Final = {"k": 10, "m": 20, "g": 30, "t": 40}

SessionOption = Annotated[
    str | None,
    typer.Option(
        "--session",
        metavar="NAME",
        help="Model only: the bench session whose state to show (kept by `rmi` and `run --session`; "
        "default: default).",
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the view as JSON instead.")]


# -- the target a view reads ------------------------------------------------------------------------


@contextlib.contextmanager
def _target(ctx: typer.Context, session_name: str | None) -> Iterator[tuple[Target, str]]:
    """The selected target in its current state, and a line saying which state that is.

    On the model: a fresh model with the session's journal replayed (read only:
    the journal is not written). Elsewhere: the target as it is.
    """
    from cca_hil.cli import default_run_dir, open_target, runs_root, settings_of
    from cca_hil.profiles import build_target
    from cca_hil.session import (
        DEFAULT_SESSION,
        JOURNALED_KINDS,
        JournaledTarget,
        SessionError,
        load_journal,
        session_path,
    )

    settings = settings_of(ctx)
    profile = settings.load_profile()
    if profile.kind not in JOURNALED_KINDS:
        if session_name is not None:
            raise InputError(
                f"profile {profile.name!r} keeps its state on the target: there is no bench session to show",
                where=f"--session {session_name}",
                valid=[f"a profile of kind {kind}" for kind in sorted(JOURNALED_KINDS)],
            )
        run_dir = settings.run_dir or default_run_dir("show")
        with open_target(profile, run_dir=run_dir, quiet=settings.quiet) as opened:
            yield opened, f"target {profile.name!r} as it is now"
        return
    session_name = session_name or DEFAULT_SESSION
    path = session_path(runs_root(), session_name)
    journal = load_journal(path)
    target = build_target(profile)
    if journal is None:
        with target:
            yield target, f"session {session_name!r} has no calls yet: a freshly booted model"
        return
    params = json.loads(json.dumps(dict(profile.params)))
    if journal.kind != profile.kind or journal.params != params:
        raise SessionError(
            f"session {session_name!r} was recorded with profile {journal.profile!r} and other parameters; "
            "select that profile or another --session NAME",
            where=str(path),
        )
    journaled = JournaledTarget(target, journal)
    with journaled:
        journaled.replay()
        yield journaled, f"session {session_name!r} ({len(journal.operations)} operations replayed)"


@contextlib.contextmanager
def _walk_status(console: Console, what: str) -> Iterator[WalkProgress | None]:
    """A live counter of RMI calls on a terminal; nothing at all in a pipe or a log."""
    if not console.is_terminal or console.is_dumb_terminal:
        yield None
        return
    with console.status(what) as status:

        def update(calls: int) -> None:
            if calls % 16 == 0:
                status.update(f"{what}: {calls} calls")

        yield update


def _console() -> Console:
    from cca_hil.report import stdout_console

    return stdout_console()


def _print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def _address(text: str, where: str) -> int:
    try:
        value = int(text.replace("_", ""), 0)
    except ValueError:
        raise InputError(f"{text!r} is not an address", where=where, valid=["0x… hex", "decimal"]) from None
    if value < 0:
        raise InputError(f"{text!r} is negative", where=where)
    return value


# -- show realms ----------------------------------------------------------------------------------------


def _span(run: RttRun) -> str:
    if run.count == 1:
        return f"{run.ipa:#x}"
    return f"{run.ipa:#x}–{run.top:#x} ×{run.count}"


def _run_label(run: RttRun) -> str:
    from rich.markup import escape

    style = STATE_STYLES.get(run.state, "")
    text = (
        f"L{run.level} {_span(run)}  [{style}]{run.state}[/{style}]"
        if style
        else f"L{run.level} {_span(run)}"
    )
    if run.ripas is not None:
        text += f" ripas={escape(run.ripas)}"
    if run.addr is not None:
        what = "RTT" if run.state == "table" else "PA"
        text += f" → {what} {run.addr:#x}"
        if run.count > 1:
            text += f"…{run.addr + (run.count - 1) * run.entry_size:#x}"
    return text


def rtt_tree(realm: RealmView) -> Tree:
    """The realm's RTT tree as a rich Tree: one node per run, TABLE runs holding their next level."""
    from rich.tree import Tree

    base = f" at {realm.rtt_base:#x}" if realm.rtt_base is not None else ""
    tree = Tree(
        f"[bold]RTT[/bold] start level {realm.rtt_level_start}{base}, IPA width {realm.ipa_width} "
        f"(protected below {realm.protected_top:#x})",
        guide_style="grey50",
    )

    def add(node: Tree, runs: Sequence[RttRun]) -> None:
        for run in runs:
            branch = node.add(_run_label(run))
            if run.children:
                add(branch, run.children)

    add(tree, realm.rtt)
    return tree


def _granule_list(addresses: Sequence[int]) -> str:
    """``0x1000`` or ``16: 0x90082000…0x90091000`` (aux granules run in order)."""
    if not addresses:
        return "—"
    if len(addresses) == 1:
        return f"{addresses[0]:#x}"
    return f"{len(addresses)}: {addresses[0]:#x}…{addresses[-1]:#x}"


def render_realms(view: RealmsView, console: Console, *, state_line: str) -> None:
    """Each realm: RD, state, VMID, RIM, RECs and its RTT tree; the source first."""
    from rich.table import Table

    console.print(f"source: {view.source} — {state_line}", markup=False, highlight=False, soft_wrap=True)
    if view.note:
        console.print(f"note: {view.note}", markup=False, highlight=False, soft_wrap=True, style="dim")
    if not view.realms:
        console.print("no realms", markup=False, highlight=False, soft_wrap=True)
        return
    for realm in view.realms:
        facts = [f"RD {realm.rd:#x}"]
        if realm.state is not None:
            facts.append(f"state {realm.state}")
        if realm.vmid is not None:
            facts.append(f"VMID {realm.vmid}")
        if realm.hash_algo is not None:
            facts.append(realm.hash_algo)
        console.print("[bold]realm[/bold] " + ", ".join(facts), highlight=False)
        if realm.rim is not None:
            console.print(f"  RIM {realm.rim.hex()}", markup=False, highlight=False, soft_wrap=True)
        if realm.recs is not None:
            if realm.recs:
                table = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 2))
                for column in ("REC", "MPIDR", "state", "runnable", "PC", "aux granules"):
                    table.add_column(column)
                for rec in realm.recs:
                    table.add_row(
                        f"{rec.addr:#x}",
                        f"{rec.mpidr:#x}",
                        rec.state,
                        "yes" if rec.runnable else "no",
                        f"{rec.pc:#x}",
                        _granule_list(rec.aux),
                    )
                console.print(table)
            else:
                console.print("  no RECs", highlight=False)
        console.print(rtt_tree(realm))


@show_app.command("realms")
def show_realms(
    ctx: typer.Context,
    rds: Annotated[
        list[str] | None,
        typer.Option("--rd", metavar="ADDR", help="Only this realm (repeatable); needed off the model."),
    ] = None,
    session_name: SessionOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Realms: state, VMID, RIM, RECs, and the RTT tree with entry states and RIPAS."""
    from cca_hil.views import model_realms, model_rmm, walked_realms

    addresses = [_address(text, f"--rd {text}") for text in rds or ()]
    console = _console()
    with _target(ctx, session_name) as (target, state_line):
        rmm = model_rmm(target)
        if rmm is not None:
            view = model_realms(rmm, addresses)
        else:
            if not addresses:
                raise InputError(
                    f"target {target.name!r} keeps its realms to itself: name each realm's RD, "
                    "whose RTTs are then walked with RMI_RTT_READ_ENTRY",
                    where="show realms",
                    valid=["--rd ADDR (repeatable)"],
                )
            with _walk_status(console, "walking RTTs with RMI_RTT_READ_ENTRY") as progress:
                view = walked_realms(target, addresses, progress=progress)
    if as_json:
        _print_json({"state": state_line, **view.to_json()})
    else:
        render_realms(view, console, state_line=state_line)


# -- show granules ----------------------------------------------------------------------------------------


def _amount(text: str, where: str) -> int:
    match = _SIZE.match(text.strip())
    if match is None:
        raise InputError(f"{text!r} is not a number", where=where, valid=["0x… hex", "decimal", "4K, 1M, 2G"])
    value = int(match.group(1).replace("_", ""), 0)
    unit = (match.group(2) or "")[:1].lower()
    return value << _UNITS[unit] if unit else value


def parse_range(text: str) -> tuple[int, int]:
    """``BASE..END`` or ``BASE+SIZE`` (sizes may say K, M, G, T), widened to whole granules."""
    from cca_hil.arch.rmi import GRANULE_SIZE

    where = f"--range {text}"
    valid = ["BASE..END", "BASE+SIZE", "e.g. 0x90000000+1M"]
    if ".." in text:
        first, _, second = text.partition("..")
        start, end = _amount(first, where), _amount(second, where)
    elif "+" in text:
        first, _, second = text.partition("+")
        start = _amount(first, where)
        end = start + _amount(second, where)
    else:
        raise InputError(f"{text!r} is no range", where=where, valid=valid)
    if end <= start:
        raise InputError("the range is empty (its end is not above its start)", where=where, valid=valid)
    return start & ~(GRANULE_SIZE - 1), -(-end // GRANULE_SIZE) * GRANULE_SIZE


def render_granules(view: GranulesView, console: Console, *, state_line: str) -> None:
    """The granule runs as a table, coloured by state and PAS."""
    from rich.table import Table
    from rich.text import Text

    from cca_hil.cli_gpt import PAS_STYLES, _size

    state = f"state from {view.state_source}" if view.state_source else "state not visible to the host"
    console.print(
        f"granules {view.start:#x}–{view.end:#x}: {state}, PAS from {view.pas_source} — {state_line}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    if view.note:
        console.print(f"note: {view.note}", markup=False, highlight=False, soft_wrap=True, style="dim")
    table = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 2))
    for column in ("start", "end", "size", "granules", "state", "PAS"):
        table.add_column(
            column, justify="right" if column in ("start", "end", "size", "granules") else "left"
        )
    for run in view.runs:
        state = run.state or "?"
        table.add_row(
            f"{run.start:#x}",
            f"{run.end:#x}",
            _size(run.end - run.start),
            str(run.granules),
            Text(state, GRANULE_STYLES.get(state, "")),
            Text(run.pas, PAS_STYLES.get(run.pas, "")),
        )
    console.print(table)


@show_app.command("granules")
def show_granules(
    ctx: typer.Context,
    range_text: Annotated[
        str | None,
        typer.Option(
            "--range",
            metavar="BASE..END|BASE+SIZE",
            help="Physical addresses to show (default: the granule pool).",
        ),
    ] = None,
    session_name: SessionOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Granules: RMM state and PAS of each granule, runs of equal ones merged."""
    from cca_hil.arch.rmi import GRANULE_SIZE
    from cca_hil.targets.base import Capability
    from cca_hil.views import gpt_granules, model_granules, model_rmm, probed_granules, read_pas_map

    wanted = parse_range(range_text) if range_text is not None else None
    console = _console()
    with _target(ctx, session_name) as (target, state_line):
        if wanted is None:
            pool = target.info().granule_pool
            if not pool:
                raise InputError(f"target {target.name!r} reports no granule pool", where="show granules")
            start, end = min(b for b, _ in pool), max(b + s for b, s in pool)
        else:
            start, end = wanted
        rmm = model_rmm(target)
        if rmm is not None:
            view = model_granules(rmm, read_pas_map(target), start, end)
        elif target.has(Capability.GPT_READ):
            view = gpt_granules(read_pas_map(target), start, end)
        else:
            if wanted is None:
                end = min(end, start + PROBE_DEFAULT_GRANULES * GRANULE_SIZE)
            with _walk_status(console, "probing granules") as progress:
                view = probed_granules(target, start, end, progress=progress)
    if as_json:
        _print_json({"state": state_line, **view.to_json()})
    else:
        render_granules(view, console, state_line=state_line)


# -- show gpt ------------------------------------------------------------------------------------


@show_app.command("gpt")
def show_gpt(
    ctx: typer.Context,
    svg_path: Annotated[
        Path | None,
        typer.Option("--svg", metavar="PATH", help="Write the PAS map as a picture with an address axis."),
    ] = None,
    session_name: SessionOption = None,
    as_json: JsonFlag = False,
) -> None:
    """The PAS map of the target's GPT as a coloured band (and, with --svg, a picture)."""
    from cca_hil.cli import check_output_path
    from cca_hil.cli_gpt import render_map
    from cca_hil.errors import CapabilityError
    from cca_hil.report import write_atomically
    from cca_hil.svg import Run, pas_map_svg
    from cca_hil.targets.base import Capability
    from cca_hil.views import read_pas_map

    check_output_path(svg_path, "--svg")
    with _target(ctx, session_name) as (target, state_line):
        if not target.has(Capability.GPT_READ):
            from cca_hil.cli_gpt import _no_gpt_reason

            raise CapabilityError(Capability.GPT_READ, target.name, why=_no_gpt_reason(target.profile))
        pas_map = read_pas_map(target)
        name = target.name
    source = "model state" if target.kind == "model" else "the target's GPT"
    title = f"GPT of {name}"
    if as_json:
        _print_json({"source": source, "state": state_line, **pas_map.to_json()})
    else:
        console = _console()
        console.print(f"source: {source} — {state_line}", markup=False, highlight=False, soft_wrap=True)
        render_map(pas_map, console, title=title)
    if svg_path is not None:
        geometry = pas_map.gpccr.geometry
        runs = [Run(r.start, r.end, str(r.pas)) for r in pas_map.runs]
        subtitle = (
            f"GPCCR_EL3={pas_map.gpccr.encode():#x} · GPTBR_EL3={pas_map.gptbr.encode():#x} · "
            f"{len(runs)} runs · source: {source}, {state_line}"
        )
        write_atomically(
            svg_path, pas_map_svg(runs, title=title, subtitle=subtitle, granule_bits=geometry.pgs_bits)
        )
        if not as_json:
            _console().print(f"wrote {svg_path}", markup=False, highlight=False, soft_wrap=True)
