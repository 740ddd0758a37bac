"""``cca-hil lease list | break``: who holds which target (docs/farm.md "Leases")."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from cca_hil.lease import LeaseInfo

lease_app = typer.Typer(
    name="lease",
    help="Exclusive leases on shared targets: list them, break a stale (or, forced, a live) one.",
    no_args_is_help=True,
)


def _state(info: LeaseInfo) -> tuple[str, str]:
    reason = info.stale_reason()
    return ("stale", reason) if reason is not None else ("live", "")


def _ago(epoch: float, now: float) -> str:
    seconds = max(0.0, now - epoch)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


@lease_app.command("list")
def lease_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print the leases as JSON.")] = False,
) -> None:
    """Every lease in the lease directory: key, holder, since, last heartbeat, live or stale (and why)."""
    from cca_hil.lease import LeaseStore

    store = LeaseStore()
    leases = store.list()
    now = time.time()
    if as_json:
        document: dict[str, Any] = {
            "directory": str(store.directory),
            "leases": [
                {**info.to_json(), "state": _state(info)[0], "stale_reason": _state(info)[1] or None}
                for info in leases
            ],
        }
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return

    from rich import box
    from rich.table import Table

    from cca_hil.report import stdout_console

    console = stdout_console()
    if not leases:
        console.print(f"no leases in {store.directory}", markup=False, highlight=False, soft_wrap=True)
        return
    table = Table(box=box.SIMPLE_HEAD, title=f"Leases in {store.directory}", title_justify="left")
    for column in ("key", "owner", "pid", "host", "since", "heartbeat", "state", "command"):
        table.add_column(column)
    for info in leases:
        state, reason = _state(info)
        shown = f"[red]stale[/red]: {reason}" if state == "stale" else "[green]live[/green]"
        table.add_row(
            info.key,
            info.owner,
            str(info.pid),
            info.host,
            _ago(info.since, now),
            _ago(info.heartbeat, now),
            shown,
            info.command,
        )
    console.print(table)


@lease_app.command("break")
def lease_break(
    key: Annotated[str, typer.Argument(metavar="KEY", help="The lease key, as 'lease list' shows it.")],
    force: Annotated[
        bool, typer.Option("--force", help="Break it even though its holder is alive and heart-beating.")
    ] = False,
) -> None:
    """Remove a lease whose holder died or went silent; a live one only with --force."""
    from cca_hil.lease import LeaseStore

    holder, reason = LeaseStore().break_lease(key, force=force)
    why = f"stale: {reason}" if reason is not None else "it was live: broken with --force"
    sys.stdout.write(f"broke lease {key!r} held by {holder.describe()} ({why})\n")
