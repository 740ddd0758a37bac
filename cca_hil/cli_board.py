"""``cca-hil probe list``, ``cca-hil load`` and ``cca-hil power``: a board's debug probe and power control.

The lead's ``cli.py`` registers them::

    from cca_hil.cli_board import load, power, probe_app
    app.add_typer(probe_app, name="probe")
    app.command("load")(load)
    app.command("power")(power)

The commands take the profile from the root context (``cli.settings_of``). None
of them opens the agent link: a board can be switched on and loaded before
anything on it answers. Errors propagate to the root command, which prints one
line: a bad image or a profile without the needed section is exit 2, a missing
probe, a transfer fault or a read-back mismatch exit 3. pyOCD, pyftdi and rich
are imported inside the commands, so ``cca-hil --help`` needs none of them.
"""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cca_hil.errors import InputError, ProfileError

if TYPE_CHECKING:
    from rich.console import Console

    from cca_hil.probe import DeviceInfo
    from cca_hil.profiles import Profile
    from cca_hil.targets.base import PowerAction, Target

probe_app = typer.Typer(
    name="probe",
    help="Debug probes (pyOCD) and FTDI interfaces (pyftdi) attached to this host.",
    no_args_is_help=True,
)

PROBE_KEYS = "serial.probe.unique_id (see `cca-hil probe list`)"
POWER_KEYS = "serial.power.gpio (url and a power pin) or serial.power.commands (on and off, or cycle)"
PLAIN_STEPS = 4
"""Lines a load prints per phase when stdout is not a terminal (every quarter)."""


class PowerChoice(enum.StrEnum):
    """What ``cca-hil power`` does."""

    ON = "on"
    OFF = "off"
    CYCLE = "cycle"


def _power_action(choice: PowerChoice) -> PowerAction:
    """The target interface's name for ``choice``."""
    if choice is PowerChoice.ON:
        return "on"
    if choice is PowerChoice.OFF:
        return "off"
    return "cycle"


def _profile(ctx: typer.Context) -> Profile:
    from cca_hil.cli import settings_of

    return settings_of(ctx).load_profile()


def _console() -> Console:
    from cca_hil.report import stdout_console

    return stdout_console()


def _lacking(profile: Profile, what: str, keys: str) -> ProfileError:
    """The one-line error for a profile without the section a command needs (exit 2)."""
    if profile.kind == "serial":
        return ProfileError(f"profile {profile.name!r} has no {what}: add {keys}", where=profile.source)
    return ProfileError(f"profile {profile.name!r} (kind {profile.kind}) has no {what}", where=profile.source)


def _address(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(text.replace("_", ""), 0)
    except ValueError:
        raise InputError(f"{text!r} is not an address (e.g. 0x90000000)", where="--address") from None
    if value < 0:
        raise InputError(f"{text!r} is negative", where="--address")
    return value


# -- probe list ---------------------------------------------------------------------------------------


def _plain_id(unique_id: str) -> str:
    return unique_id.rpartition(":")[2]


@probe_app.command("list")
def probe_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the devices as JSON.")] = False,
) -> None:
    """Debug probes and FTDI interfaces with their unique ids; the profile's own are marked.

    A profile with a simulated probe (``probe.sim_machine``) has it plugged in for the listing.
    """
    from cca_hil.probe import list_devices
    from cca_hil.profiles import build_target
    from cca_hil.targets.serial import SerialTarget

    profile = _profile(ctx)
    probe_id = profile.param("probe.unique_id") if profile.kind == "serial" else None
    power_url = profile.param("power.gpio.url") if profile.kind == "serial" else None
    target = build_target(profile) if profile.param("probe.sim_machine") is not None else None
    try:
        if isinstance(target, SerialTarget):
            target.start_simulation()
        listing = list_devices()
    finally:
        if target is not None:
            target.close()

    def role(device: DeviceInfo) -> str | None:
        if device.kind == "debug-probe" and probe_id and device.unique_id == _plain_id(str(probe_id)):
            return "probe"
        if device.kind == "ftdi" and power_url and device.url == power_url:
            return "power"
        return None

    if as_json:
        document = {
            "profile": profile.name,
            "devices": [
                {
                    "kind": d.kind,
                    "unique_id": d.unique_id,
                    "description": d.description,
                    "url": d.url,
                    "profile_role": role(d),
                }
                for d in listing.devices
            ],
            "problems": list(listing.problems),
        }
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return

    from rich import box
    from rich.table import Table

    console = _console()
    table = Table(box=box.SIMPLE_HEAD, title_justify="left")
    for column in ("kind", "unique id", "description", "url", f"profile {profile.name}"):
        table.add_column(column)
    for device in listing.devices:
        table.add_row(device.kind, device.unique_id, device.description, device.url or "", role(device) or "")
    if listing.devices:
        console.print(table)
    else:
        console.print("no debug probes or FTDI interfaces found", markup=False, soft_wrap=True)
    roles = {role(d) for d in listing.devices}
    if probe_id and "probe" not in roles:
        console.print(f"note: the profile's probe {probe_id} is not attached", markup=False, soft_wrap=True)
    if power_url and "power" not in roles:
        console.print(
            f"note: the profile's power interface {power_url} is not attached", markup=False, soft_wrap=True
        )
    for problem in listing.problems:
        console.print(f"problem: {problem}", markup=False, soft_wrap=True)


# -- load -----------------------------------------------------------------------------------------------


def _plain_progress(console: Console, size: int) -> Callable[[int, int], None]:
    """Progress as a few plain lines (a log, a pipe): each phase at every quarter."""
    shown: set[tuple[str, int]] = set()

    def update(done: int, total: int) -> None:
        phase, part = ("writing", done) if done <= size else ("verifying", done - size)
        if part == 0:
            return
        quarter = part * PLAIN_STEPS // size
        if (phase, quarter) in shown or quarter == 0:
            return
        shown.add((phase, quarter))
        console.print(f"{phase}: {part}/{size} bytes ({100 * part // size}%)", markup=False, soft_wrap=True)

    return update


def _run_load(
    target: Target, image: Path, address: int | None, *, verify: bool, console: Console, size: int
) -> None:
    if not console.is_terminal:
        target.load(image, address, verify=verify, progress=_plain_progress(console, size))
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("writing + verifying" if verify else "writing", total=size * (2 if verify else 1))

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        target.load(image, address, verify=verify, progress=update)


def load(
    ctx: typer.Context,
    image: Annotated[Path, typer.Argument(metavar="IMAGE", help="ELF, Intel HEX or raw binary image.")],
    address: Annotated[
        str | None,
        typer.Option("--address", metavar="PA", help="Load address of a raw binary (ELF/HEX carry theirs)."),
    ] = None,
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Read the image back and compare.")
    ] = True,
) -> None:
    """Load an image into the board's memory through its debug probe (profile section ``probe:``)."""
    from cca_hil.images import load_image
    from cca_hil.probe import describe_pas
    from cca_hil.profiles import build_target
    from cca_hil.targets.base import Capability
    from cca_hil.targets.serial import SerialTarget

    profile = _profile(ctx)
    pa = _address(address)
    # Parse first: a bad image is exit 2 before the board is touched.
    parsed = load_image(image, address=pa)
    target = build_target(profile)
    target.take_lease()  # the board is driven without opening the agent link: lease it explicitly
    try:
        if not target.has(Capability.LOAD):
            raise _lacking(profile, "debug probe to load through", PROBE_KEYS)
        console = _console()
        low, high = parsed.span
        console.print(
            f"{image}: {parsed.format.upper()}, {len(parsed.segments)} segment(s), {parsed.size} bytes "
            f"in {low:#x}-{high - 1:#x}",
            markup=False,
            soft_wrap=True,
        )
        _run_load(target, image, pa, verify=verify, console=console, size=parsed.size)
        if isinstance(target, SerialTarget) and target.last_load is not None:
            result, session = target.last_load, target.probe_session()
            checked = "verified" if result.verified else "not verified"
            console.print(
                f"loaded {result.bytes_loaded} bytes in {result.segments} segment(s) through {session.name}, "
                f"{checked}",
                markup=False,
                soft_wrap=True,
            )
            console.print(describe_pas(session.pas), markup=False, soft_wrap=True)
            if result.entry is not None:
                console.print(f"entry point {result.entry:#x}", markup=False, soft_wrap=True)
        else:
            console.print(f"loaded {parsed.size} bytes into {target.name}", markup=False, soft_wrap=True)
    finally:
        target.close()
        target.release_lease()


# -- power ----------------------------------------------------------------------------------------------


def power(
    ctx: typer.Context,
    action: Annotated[PowerChoice, typer.Argument(help="on, off or cycle.")],
) -> None:
    """Switch the board's power through its power control (profile section ``power:``), step by step."""
    from cca_hil.profiles import build_target
    from cca_hil.targets.base import Capability
    from cca_hil.targets.serial import SerialTarget

    profile = _profile(ctx)
    target = build_target(profile)
    target.take_lease()  # the board is driven without opening the agent link: lease it explicitly
    try:
        if not target.has(Capability.POWER):
            raise _lacking(profile, "power control", POWER_KEYS)
        console = _console()

        def step(text: str) -> None:
            console.print(f"power {action.value}: {text}", markup=False, soft_wrap=True)

        chosen = _power_action(action)
        if isinstance(target, SerialTarget):
            target.power(chosen, on_step=step)
        else:
            target.power(chosen)
        console.print(f"power {action.value}: done", markup=False, soft_wrap=True)
    finally:
        target.close()
        target.release_lease()
