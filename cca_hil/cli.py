"""The ``cca-hil`` command line (DESIGN.md "The command line", "Results and exit codes").

Every way a command can end goes through :meth:`_CcaHil.main`: an error
becomes exactly one line on stderr, ``cca-hil: error: <what> (<where>); …``,
and the exit code comes from :func:`cca_hil.errors.exit_code_for` (or from
``RunResult.exit_code()`` for a run). Typer's usage errors are translated the
same way, so an unknown command or option is exit 2 and one line, never a box
of help. ``-v`` adds the traceback of an unexpected error, ``-vv`` of any error.

Only this module, typer and the error classes are imported to answer
``--help``; everything else (profiles, the model, rich tables, the runner) is
imported inside the command that needs it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import sys
import traceback
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer._click import exceptions as click_exceptions  # typer vendors click; its usage errors live here
from typer.core import TyperGroup

from cca_hil import __version__
from cca_hil.errors import CcaHilError, InputError, exit_code_for

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from cca_hil.checks.conformance import CompatChange
    from cca_hil.profiles import Profile
    from cca_hil.report import Verbosity
    from cca_hil.results import RunResult
    from cca_hil.rmi_client import RmiClient, RmiResult
    from cca_hil.sequences import Sequence as SequenceSpec
    from cca_hil.session import Session
    from cca_hil.targets.base import Target

PROG = "cca-hil"
RUNS_ENV = "CCA_HIL_RUNS"
DEFAULT_RUNS_ROOT = "cca-hil-runs"
VALID_SHOWN = 24


# -- errors: one line, one exit code ---------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _valid_suffix(valid: Iterable[str] | None) -> str:
    if valid is None:
        return ""
    shown = list(valid)
    if not shown:
        return "; there are none"
    more = ""
    if len(shown) > VALID_SHOWN:
        more = f", … ({len(shown) - VALID_SHOWN} more)"
        shown = shown[:VALID_SHOWN]
    return f"; valid: {', '.join(shown)}{more}"


class UsageError(InputError):
    """A command line typer could not parse (unknown command or option, missing argument)."""

    def __init__(self, what: str, *, where: str, valid: Iterable[str] | None = None) -> None:
        super().__init__(what, where=where, valid=valid)
        self.hint = f"see '{where} --help'"

    @classmethod
    def from_typer(cls, exc: click_exceptions.UsageError) -> UsageError:
        """Translate typer's (click's) usage error at the boundary: what, where, and the valid choices."""
        ctx = exc.ctx
        where = ctx.command_path if ctx is not None else PROG
        # NoSuchOption's own text lists "possible options"; the valid list says it once, in our words.
        raw = exc.message if isinstance(exc, click_exceptions.NoSuchOption) else exc.format_message()
        what = raw.strip().rstrip(".")
        if what:
            what = what[0].lower() + what[1:]
        valid: list[str] | None = None
        if ctx is not None:
            if isinstance(exc, click_exceptions.NoSuchOption):
                valid = sorted({o for p in ctx.command.params for o in p.opts if o.startswith("-")})
            elif isinstance(ctx.command, TyperGroup) and "command" in what:
                valid = ctx.command.list_commands(ctx)
        return cls(what, where=where, valid=valid)


def error_line(exc: BaseException) -> str:
    """The one line an error is reported with: ``cca-hil: error: <what> (<where>); valid: …``."""
    if isinstance(exc, InputError):
        text = exc.what + (f" ({exc.where})" if exc.where else "") + _valid_suffix(exc.valid)
        if isinstance(exc, UsageError):
            text += f"; {exc.hint}"
    elif isinstance(exc, CcaHilError):
        text = str(exc)
    else:
        text = f"internal error: {type(exc).__name__}: {exc} (run with -v for the traceback)"
    return f"{PROG}: error: {_one_line(text)}"


def _verbosity_in(argv: Sequence[str]) -> int:
    # Errors can happen before the callback has parsed -v, so count it in the raw arguments.
    level = 0
    for arg in argv:
        if arg == "--verbose":
            level += 1
        elif arg.startswith("-") and not arg.startswith("--") and set(arg[1:]) == {"v"}:
            level += len(arg) - 1
    return level


def report_error(exc: BaseException, *, verbosity: int) -> int:
    """Print the error's one line (after its traceback when asked for) and return the exit code."""
    if isinstance(exc, click_exceptions.NoArgsIsHelpError):
        # A bare group (``cca-hil``, ``cca-hil profiles``) answers with its help; still a usage error.
        text = exc.format_message()
        if text.strip():
            sys.stdout.write(text + "\n")
        return exit_code_for(UsageError("missing command", where=PROG))
    if isinstance(exc, click_exceptions.UsageError):
        exc = UsageError.from_typer(exc)
    if verbosity >= 2 or (verbosity >= 1 and not isinstance(exc, CcaHilError)):
        traceback.print_exception(exc, file=sys.stderr)
    sys.stderr.write(error_line(exc) + "\n")
    sys.stderr.flush()
    return exit_code_for(exc)


class _CcaHil(TyperGroup):
    """The root command: runs a command and turns every way it can end into one line and an exit code."""

    def invoke(self, ctx: Any) -> Any:
        """Run the command; a reader that went away (``cca-hil info | head``) ends it quietly with 0."""
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            # Caught here, inside typer, which would otherwise turn it into exit 1 ("a check failed").
            from cca_hil.report import silence_stdout

            silence_stdout()
            return None

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        try:
            result = super().main(
                args=argv,
                prog_name=prog_name or PROG,
                complete_var=complete_var,
                standalone_mode=False,
                windows_expand_args=windows_expand_args,
                **extra,
            )
            code = result if isinstance(result, int) else 0
        except KeyboardInterrupt:
            sys.stderr.write(f"{PROG}: interrupted\n")
            code = 130
        except typer.Abort:
            sys.stderr.write(f"{PROG}: aborted\n")
            code = 130
        except Exception as exc:
            code = report_error(exc, verbosity=_verbosity_in(argv))
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    cls=_CcaHil,
    name=PROG,
    help="Hardware-in-the-loop testing for Arm CCA (RME) targets, with a built-in RME platform model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
profiles_app = typer.Typer(
    name="profiles",
    help="Target profiles: bundled, ./profiles and $CCA_HIL_PROFILES.",
    no_args_is_help=True,
)
app.add_typer(profiles_app)


# -- global options ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """The global options, handed to every command through the typer context."""

    profile: str
    overrides: tuple[str, ...]
    run_dir: Path | None
    verbose: int
    quiet: bool
    inject_noise: str | None = None
    """``--inject-noise`` spec for targets reached through the agent link (farm diagnostics)."""
    lease_timeout: float | None = None
    """``--lease-timeout``: seconds to wait for a target leased by someone else (``lease.timeout``)."""

    @property
    def verbosity(self) -> Verbosity:
        """How much the terminal views print."""
        from cca_hil.report import Verbosity

        if self.quiet:
            return Verbosity.QUIET
        return Verbosity.VERBOSE if self.verbose else Verbosity.NORMAL

    def load_profile(self) -> Profile:
        """The selected profile with its overrides; a problem names ``--profile`` or ``--set``."""
        from cca_hil.errors import ProfileError
        from cca_hil.profiles import load_profile, parse_assignment

        # Check the assignments here first, so that a bad one is reported where it was written.
        for origin, assignment in [*_env_assignments(), *(("--set", a) for a in self.overrides)]:
            try:
                parse_assignment(assignment)
            except ProfileError as exc:
                raise ProfileError(exc.what, where=origin, valid=exc.valid) from exc
        overrides = self.overrides
        if self.lease_timeout is not None:
            overrides = (*overrides, f"lease.timeout={self.lease_timeout}")
        try:
            profile = load_profile(self.profile, overrides)
            if self.inject_noise is None:
                return profile
            if profile.kind not in NOISY_KINDS:
                raise InputError(
                    f"profile {profile.name!r} is of kind {profile.kind!r}, "
                    "which has no agent link to add noise to",
                    where="--inject-noise",
                    valid=[f"a profile of kind {kind}" for kind in NOISY_KINDS],
                )
            return load_profile(self.profile, (*overrides, f"link.noise={self.inject_noise}"))
        except ProfileError as exc:
            if exc.where is not None:
                raise
            raise ProfileError(exc.what, where=f"--profile {self.profile}", valid=exc.valid) from exc


NOISY_KINDS = ("serial", "fvp")
"""Target kinds reached through the agent link, where ``--inject-noise`` applies."""


def settings_of(ctx: typer.Context) -> Settings:
    """The global options of this invocation, from any command's or sub-app's context."""
    settings = ctx.find_root().obj
    if not isinstance(settings, Settings):
        raise TypeError("cca-hil commands run under the cca-hil root app, which sets the global options")
    return settings


def _show_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"{PROG} {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _root(  # noqa: PLR0917  (typer reads options from the signature)
    ctx: typer.Context,
    profile: Annotated[
        str,
        typer.Option(
            "--profile",
            "-p",
            metavar="NAME|PATH",
            envvar="CCA_HIL_PROFILE",
            help="Target profile by name (./profiles, $CCA_HIL_PROFILES, bundled) or YAML path.",
        ),
    ] = "model",
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="KEY=VALUE", help="Override a profile parameter (repeatable)."),
    ] = None,
    run_dir: Annotated[
        Path | None,
        typer.Option(
            "--run-dir",
            metavar="DIR",
            help=f"Folder for this run's events and results (default: ./{DEFAULT_RUNS_ROOT}/TIME-COMMAND).",
        ),
    ] = None,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="A line per step; -v/-vv add tracebacks.")
    ] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the summary line.")] = False,
    inject_noise: Annotated[
        str | None,
        typer.Option(
            "--inject-noise",
            metavar="SPEC",
            help="Corrupt the agent link for diagnostics, e.g. ber=1e-4,drop=1e-3,dup=1e-3 (serial, fvp).",
        ),
    ] = None,
    lease_timeout: Annotated[
        float | None,
        typer.Option(
            "--lease-timeout",
            metavar="SECONDS",
            envvar="CCA_HIL_LEASE_TIMEOUT",
            min=0,
            help="Wait this long for a target another user holds (default 0: fail at once naming them).",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_show_version, help="Print the version and exit."),
    ] = False,
) -> None:
    """cca-hil: RMI/RSI sequences, GPT and memory-encryption checks on Arm CCA targets or the model."""
    if verbose and quiet:
        raise InputError("--verbose and --quiet exclude each other", where="command line")
    if inject_noise is not None:
        from cca_hil.agent.noise import NoiseSpec

        try:
            inject_noise = str(NoiseSpec.parse(inject_noise))
        except InputError as exc:
            raise InputError(exc.what, where="--inject-noise", valid=exc.valid) from exc
    ctx.obj = Settings(
        profile=profile,
        overrides=tuple(overrides or ()),
        run_dir=run_dir,
        verbose=verbose,
        quiet=quiet,
        inject_noise=inject_noise,
        lease_timeout=lease_timeout,
    )


# -- shared helpers ------------------------------------------------------------------------------------


def _console() -> Console:
    from cca_hil.report import stdout_console

    return stdout_console()


@contextlib.contextmanager
def live_status(text: str, *, quiet: bool = False) -> Iterator[None]:
    """A spinner saying ``text`` while a slow step runs, on an interactive terminal only (logs stay clean)."""
    console = _console()
    if quiet or not console.is_terminal or console.is_dumb_terminal:
        yield
        return
    with console.status(text):
        yield


@contextlib.contextmanager
def open_target(profile: Profile, *, run_dir: Path | None = None, quiet: bool = False) -> Iterator[Target]:
    """The profile's target, opened (with a spinner while it boots, on a terminal), closed on exit."""
    from cca_hil.profiles import build_target

    with contextlib.ExitStack() as stack:
        with live_status(f"opening {profile.name} ({profile.kind})…", quiet=quiet):
            target = stack.enter_context(build_target(profile, run_dir=run_dir))
        yield target


def runs_root() -> Path:
    """Where run folders and bench sessions live: ``$CCA_HIL_RUNS`` or ``./cca-hil-runs``."""
    return Path(os.environ.get(RUNS_ENV) or DEFAULT_RUNS_ROOT)


def default_run_dir(command: str) -> Path:
    """A fresh ``<runs root>/<UTC timestamp>-<command>`` folder (created, so no two runs share one)."""
    root = runs_root()
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S.%f")[:-3] + "Z"
    root.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 1000):
        path = root / (f"{stamp}-{command}" if attempt == 1 else f"{stamp}-{command}-{attempt}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise InputError("cannot create a fresh run folder", where=str(root))


def _table(*columns: str, title: str | None = None) -> Table:
    from rich import box
    from rich.table import Table

    # A light box reads well on a terminal and stays plain enough for a log file.
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_header=bool(columns))
    for column in columns:
        table.add_column(column)
    return table


def _fmt_size(size: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size:#x}"


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


# -- info ---------------------------------------------------------------------------------------------------


def _conduit_versions(client: RmiClient) -> tuple[str | None, str | None]:
    """SMCCC and PSCI versions the firmware (or QEMU) answers on the SMC conduit; None: not answered.

    SMCCC_VERSION answering NOT_SUPPORTED means SMCCC 1.0 (DEN0028 7.2.1); a
    negative PSCI_VERSION means no PSCI (DEN0022 5.1.1).
    """
    from cca_hil.arch.rsi_1_0 import PSCI_1_1, SMCCC_VERSION_FID
    from cca_hil.errors import CapabilityError

    psci_fid = next(f.fid for f in PSCI_1_1 if f.name == "version")
    answers: list[int | None] = []
    for fid in (SMCCC_VERSION_FID, psci_fid):
        try:
            answers.append(client.raw(fid)[0] & 0xFFFF_FFFF)
        except CapabilityError:
            answers.append(None)
    smccc, psci = answers

    def text(x0: int | None) -> str | None:
        return None if x0 is None or x0 >> 31 else f"{x0 >> 16}.{x0 & 0xFFFF}"

    return ("1.0" if smccc is not None and smccc >> 31 else text(smccc)), text(psci)


@app.command()
def info(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the facts as JSON.")] = False,
) -> None:
    """What the target is: RMM version, features, memory map with PAS, granule pool, platform names."""
    from cca_hil.arch.features import RESERVED_MASK, decode_feature_register_0
    from cca_hil.arch.rmi import decode_version
    from cca_hil.checks.rsi_probe import RsiVersion, probe_rsi_version
    from cca_hil.rmi_client import RmiClient
    from cca_hil.targets.base import Capability

    settings = settings_of(ctx)
    profile = settings.load_profile()
    with open_target(profile, quiet=settings.quiet or as_json) as target:
        facts = target.info()
        client = RmiClient(target)
        smccc, psci = _conduit_versions(client)
        version = client.version()
        features = client.features(0)
        rsi = probe_rsi_version(target) if version.ok else RsiVersion(reason="no RMI 1.0 to build a realm")
        current = {
            r.name: str(target.gpt_pas(r.base)) for r in facts.regions if target.has(Capability.GPT_READ)
        }
    register = features.outputs.get("value", 0) if features.ok else None
    lower = version.outputs.get("lower")
    higher = version.outputs.get("higher")
    fields = decode_feature_register_0(register) if register is not None else []

    if as_json:
        _print_json(
            {
                "target": facts.name,
                "kind": facts.kind,
                "profile": profile.source,
                "pa_bits": facts.pa_bits,
                "smccc_version": smccc,
                "psci_version": psci,
                "rmi_version": {
                    "status": version.status_name,
                    "lower": "{}.{}".format(*decode_version(lower)) if lower is not None else None,
                    "higher": "{}.{}".format(*decode_version(higher)) if higher is not None else None,
                },
                "rsi_version": rsi.to_json(),
                "rmi_features_0": f"{register:#x}" if register is not None else None,
                "features": {f.name: raw for f, raw in fields},
                "regions": [
                    {
                        "name": r.name,
                        "base": f"{r.base:#x}",
                        "size": f"{r.size:#x}",
                        "kind": r.kind,
                        "pas": str(r.pas),
                        "current_pas": current.get(r.name),
                    }
                    for r in facts.regions
                ],
                "granule_pool": [{"base": f"{b:#x}", "size": f"{s:#x}"} for b, s in facts.granule_pool],
                "platform": {k: f"{v:#x}" for k, v in facts.platform.items()},
                "capabilities": sorted(facts.capabilities),
                "facts": dict(facts.facts),
            }
        )
        return

    console = _console()
    console.print(f"[bold]{facts.name}[/bold] ({facts.kind}) — profile {profile.source}", highlight=False)
    console.print(f"SMCCC {smccc or 'unknown'}, PSCI {psci or 'not supported'}", highlight=False)
    if higher is not None:
        major, minor = decode_version(higher)
        lo = "{}.{}".format(*decode_version(lower)) if lower is not None else "?"
        console.print(f"RMI version {major}.{minor} (lower {lo}; RMI_VERSION said {version.status_name})")
    elif version.status_name == "not_supported":
        console.print("no RMM: RMI_VERSION not supported", highlight=False)
    else:
        console.print(f"RMI version: no answer ({version.status_name})")
    if version.ok:
        console.print(rsi.describe(), highlight=False, markup=False)
    console.print(f"PA size: {facts.pa_bits} bits")

    if register is not None:
        table = _table("field", "bits", "raw", "meaning", "what", title=f"RMI_FEATURES[0] = {register:#x}")
        for feature, raw in fields:
            bits = f"{feature.msb}:{feature.lsb}" if feature.width > 1 else str(feature.lsb)
            table.add_row(feature.name, bits, str(raw), feature.explain(raw), feature.description)
        if register & RESERVED_MASK:
            table.add_row("reserved", "63:42", f"{(register & RESERVED_MASK) >> 42:#x}", "non-zero!", "")
        console.print(table)

    table = _table("region", "base", "end", "size", "kind", "PAS at boot", "PAS now", title="Memory map")
    for region in facts.regions:
        table.add_row(
            region.name,
            f"{region.base:#013x}",
            f"{region.end:#013x}",
            _fmt_size(region.size),
            region.kind,
            str(region.pas),
            current.get(region.name, "?"),
        )
    console.print(table)

    table = _table("base", "end", "size", "granules", title="Granule pool (NS DRAM the host may delegate)")
    for base, size in facts.granule_pool:
        table.add_row(f"{base:#x}", f"{base + size:#x}", _fmt_size(size), str(size // 0x1000))
    console.print(table)

    table = _table("name", "value", title="Platform names (for sequences)")
    for name, value in facts.platform.items():
        table.add_row(f"platform.{name}", f"{value:#x}")
    console.print(table)

    console.print(f"Capabilities: {', '.join(sorted(facts.capabilities)) or 'none'}", highlight=False)
    if facts.facts:
        table = _table("fact", "value", title="Facts")
        for fact, text in facts.facts.items():
            table.add_row(fact, text)
        console.print(table)


# -- profiles ------------------------------------------------------------------------------------------------


def _origin(path: Path) -> str:
    from cca_hil.profiles import bundled_dir

    parent = path.resolve().parent
    if parent == bundled_dir().resolve():
        return "bundled"
    if parent == (Path.cwd() / "profiles").resolve():
        return "./profiles"
    return f"$CCA_HIL_PROFILES ({path.parent})"


@profiles_app.command("list")
def profiles_list() -> None:
    """Every profile that resolves: name, kind, description, and where it comes from."""
    from cca_hil.profiles import available_profiles, load_profile

    table = _table("name", "kind", "description", "from")
    for name, path in sorted(available_profiles().items()):
        try:
            profile = load_profile(str(path))
            kind, description = profile.kind, profile.description
        except CcaHilError as exc:
            # One broken user profile must not hide the others; say what is wrong with it.
            kind, description = "?", f"invalid: {_one_line(str(exc))}"
        table.add_row(name, kind, description, _origin(path))
    _console().print(table)


def _env_assignments() -> list[tuple[str, str]]:
    # The same environment overrides profiles.load_profile applies, with the variable each came from.
    out = [("CCA_HIL_SET", a) for a in os.environ.get("CCA_HIL_SET", "").split(";") if a.strip()]
    fvp = os.environ.get("CCA_HIL_FVP")
    if fvp:
        out.append(("CCA_HIL_FVP", f"fvp.binary={fvp}"))
    return out


def _schema_keys(schema: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for key, value in schema.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            keys += _schema_keys(value, f"{dotted}.")
        else:
            keys.append(dotted)
    return keys


def _file_lines(data: Any, prefix: str = "") -> dict[str, int]:
    from cca_hil.yamlio import LineDict

    lines: dict[str, int] = {}
    if isinstance(data, LineDict):
        for key, value in data.items():
            dotted = f"{prefix}{key}"
            lines[dotted] = data.line_of(key)
            lines.update(_file_lines(value, f"{dotted}."))
    return lines


def _show_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:#x}" if value >= 0x10000 else str(value)
    if isinstance(value, (list, dict)):
        text = json.dumps(value)
        return text if len(text) <= 60 else text[:57] + "…"
    return str(value)


@profiles_app.command("show")
def profiles_show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME|PATH", help="Profile name or YAML path.")],
) -> None:
    """A profile's file, its resolved parameters and where each comes from, and how to override them."""
    from cca_hil.errors import ProfileError
    from cca_hil.profiles import parse_assignment, resolve, target_class
    from cca_hil.yamlio import load_file

    settings = settings_of(ctx)
    try:
        path = resolve(name)
    except ProfileError as exc:
        raise ProfileError(exc.what, where=exc.where or "profiles show", valid=exc.valid) from exc
    profile = Settings(
        profile=str(path), overrides=settings.overrides, run_dir=None, verbose=0, quiet=False
    ).load_profile()
    schema = target_class(profile.kind).PARAMS  # type: ignore[attr-defined]
    file_lines = _file_lines(load_file(path))
    source: dict[str, str] = {}
    for dotted, line in file_lines.items():
        if dotted.startswith(f"{profile.kind}."):
            source[dotted.removeprefix(f"{profile.kind}.")] = f"{path.name}:{line}"
    for origin, assignment in [*_env_assignments(), *(("--set", a) for a in settings.overrides)]:
        keys, _ = parse_assignment(assignment)
        if keys and keys[0] == profile.kind:
            keys = keys[1:]
        source[".".join(keys)] = origin

    console = _console()
    console.print(f"[bold]{profile.name}[/bold]: {profile.description}", highlight=False)
    console.print(f"file: {path} ({_origin(path)})", highlight=False, markup=False)
    console.print(f"kind: {profile.kind}", highlight=False)
    table = _table("key", "value", "from", title=f"Parameters ({profile.kind}.*)")
    for key in _schema_keys(schema):
        value = profile.param(key)
        table.add_row(
            key, _show_value(value) if value is not None else "—", source.get(key, "target default")
        )
    console.print(table)
    console.print("Overrides, applied in this order (later wins):", highlight=False)
    console.print(
        "  CCA_HIL_SET='KEY=VALUE;…'   environment, ';'-separated  e.g. CCA_HIL_SET='model.seed=7'",
        highlight=False,
        markup=False,
    )
    console.print("  CCA_HIL_FVP=PATH            environment, sets fvp.binary", highlight=False, markup=False)
    console.print("  --set KEY=VALUE             command line, repeatable", highlight=False, markup=False)
    active = [f"{origin}: {a}" for origin, a in _env_assignments()] + [
        f"--set {a}" for a in settings.overrides
    ]
    if active:
        console.print("Active now: " + "; ".join(active), highlight=False, markup=False)


# -- run / conformance ----------------------------------------------------------------------------------


def bundled_sequences() -> dict[str, Path]:
    """Sequences shipped with the package, by name."""
    from importlib import resources

    directory = Path(str(resources.files("cca_hil") / "data" / "sequences"))
    if not directory.is_dir():
        return {}
    return {p.stem: p for p in sorted(directory.glob("*.yaml"))}


def resolve_sequence(arg: str) -> Path:
    """A sequence argument as a file: a path as given, or the name of a bundled sequence."""
    path = Path(arg)
    if path.is_file():
        return path
    if arg.endswith((".yaml", ".yml")) or os.sep in arg or "/" in arg:
        if path.is_dir():
            raise InputError("is a directory, expected a sequence file", where=arg)
        raise InputError("no such sequence file", where=arg)
    bundled = bundled_sequences()
    if arg in bundled:
        return bundled[arg]
    raise InputError(f"unknown sequence {arg!r}: no such file and no bundled sequence", valid=sorted(bundled))


def check_output_path(path: Path | None, option: str) -> None:
    """Refuse an output file that cannot be written, before the run rather than after it."""
    if path is None:
        return
    where = f"{option} {path}"
    if path.is_dir():
        raise InputError("is a directory, expected a file name", where=where)
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{parent} is not a directory", where=where)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write in {parent}", where=where)


def _check_run_dir(path: Path | None) -> None:
    if path is not None and path.exists() and not path.is_dir():
        raise InputError("exists and is not a directory", where=f"--run-dir {path}")


def _run(
    settings: Settings,
    *,
    command: str,
    sequences: list[SequenceSpec],
    json_path: Path | None,
    junit_path: Path | None,
    compare: bool | None = None,
    stop_on_divergence: bool = False,
    session_name: str | None = None,
    quirk_rows: frozenset[int] | None = None,
    reset_each: bool = False,
) -> RunResult:
    """Run sequences on the selected target with every view subscribed; the result document.

    ``compare`` None: a shadow model predicts every step on targets other than ``model``.
    ``session_name``: run in that bench session, started over, which keeps the state the run leaves.
    ``quirk_rows``: the rmm-abi.md §12 rows whose ``compat:`` variants judge the steps (None: the
    rows the profile's RMM is expected to answer as TF-RMM does, :func:`cca_hil.shadow.expected_quirk_rows`).
    ``reset_each``: reset the target before each sequence (exit 2 when the target cannot reset).
    """
    from cca_hil.report import ConsoleView, JsonReport, JunitReport, RunFolder
    from cca_hil.results import Events, Observer
    from cca_hil.sequences import Runner
    from cca_hil.shadow import expected_quirk_rows
    from cca_hil.targets.base import Capability

    profile = settings.load_profile()
    rows = expected_quirk_rows(profile) if quirk_rows is None else quirk_rows
    if rows:
        sequences = [sequence.judged_by(rows) for sequence in sequences]
    check_output_path(json_path, "--json")
    check_output_path(junit_path, "--junit")
    _check_run_dir(settings.run_dir)
    run_dir = settings.run_dir or default_run_dir(command)
    view = ConsoleView(_console(), verbosity=settings.verbosity)
    with RunFolder(run_dir) as folder:
        observers: list[Observer] = [folder]
        if json_path is not None:
            observers.append(JsonReport(json_path))
        if junit_path is not None:
            observers.append(JunitReport(junit_path))
        observers.append(view)
        try:
            with _run_target(settings, profile, run_dir, session_name) as target:
                if reset_each and not target.has(Capability.RESET):
                    raise InputError(
                        f"target {target.name!r} cannot reset: it has neither a debug probe nor power "
                        "control nor a reset of its own",
                        where="--reset",
                        valid=[
                            "a model profile",
                            "board-sim-probe",
                            "a board with probe: or power:",
                            "labgrid",
                        ],
                    )
                comparing = target.kind != "model" if compare is None else compare
                runner = Runner(
                    target,
                    events=Events(observers),
                    compare=comparing,
                    stop_on_divergence=stop_on_divergence,
                    run_dir=run_dir,
                    reset_each=reset_each,
                )
                return runner.run_all(sequences, command=command)
        except BaseException as exc:
            # The run broke off outside the runner's own accounting (the target would not open,
            # Ctrl-C): the event log still says how it ended.
            folder.record("run_aborted", error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            view.close()


@contextlib.contextmanager
def _run_target(
    settings: Settings, profile: Profile, run_dir: Path, session_name: str | None
) -> Iterator[Target]:
    """The run's target: built afresh, or the model of bench session ``session_name`` (started over)."""

    if session_name is None:
        with open_target(profile, run_dir=run_dir, quiet=settings.quiet) as target:
            yield target
        return
    with _bench_session(settings, profile, session_name, reset=True) as session:
        yield session.target


def _bench_session(
    settings: Settings, profile: Profile, name: str, *, reset: bool
) -> contextlib.AbstractContextManager[Session]:
    """Bench session ``name`` under the runs root, for this invocation's profile and overrides."""
    from cca_hil.session import Session

    return Session.open(
        name=name,
        root=runs_root(),
        profile=profile,
        profile_arg=settings.profile,
        overrides=settings.overrides,
        reset=reset,
    )


def _check_session(profile: Profile, session_name: str, sequences: Sequence[SequenceSpec]) -> None:
    """Refuse ``run --session`` where a journal cannot hold the run, before anything runs."""
    from cca_hil.seqformat import RmiStep, RsiStep
    from cca_hil.session import JOURNALED_KINDS, session_path

    session_path(runs_root(), session_name)  # a bad name is refused before the run
    if profile.kind not in JOURNALED_KINDS:
        raise InputError(
            f"profile {profile.name!r} keeps its state on the target, which outlives the run: "
            "there is no bench session to keep it in",
            where=f"--session {session_name}",
            valid=[f"a profile of kind {kind}" for kind in sorted(JOURNALED_KINDS)],
        )
    for sequence in sequences:
        for step in sequence.steps:
            if isinstance(step, RsiStep) or (isinstance(step, RmiStep) and step.realm):
                raise InputError(
                    f"step {step.name!r} of {sequence.name!r} makes the realm act, which a bench session "
                    "cannot journal; run without --session, or --stop-before that step",
                    where=f"{sequence.source}:{step.line}",
                )


def stop_before(sequence: SequenceSpec, step: str) -> SequenceSpec:
    """``sequence`` up to (not including) its step named ``step``; InputError naming the valid steps."""
    import dataclasses

    names = [s.name for s in sequence.steps]
    if step not in names:
        raise InputError(
            f"sequence {sequence.name!r} has no step {step!r}", where=f"--stop-before {step}", valid=names
        )
    end = names.index(step)
    return dataclasses.replace(sequence, steps=sequence.steps[:end], raw_steps=sequence.raw_steps[:end])


JsonOption = Annotated[
    Path | None, typer.Option("--json", metavar="PATH", help="Write the result document (JSON) here.")
]
JunitOption = Annotated[Path | None, typer.Option("--junit", metavar="PATH", help="Write JUnit XML here.")]
CompareOption = Annotated[
    bool | None,
    typer.Option(
        "--compare/--no-compare",
        help="Run a shadow model in lockstep and report steps whose answers differ from its prediction "
        "as diverged (default: on for every target other than model).",
        show_default=False,
    ),
]
StopOnDivergenceOption = Annotated[
    bool, typer.Option("--stop-on-divergence", help="End the run at the first step that diverged.")
]
ResetOption = Annotated[
    bool,
    typer.Option(
        "--reset",
        help="Reset the target before each sequence, so each starts on a freshly booted target "
        "(a board through its probe or power control, labgrid, the model); the shadow model starts over too.",
    ),
]


@app.command()
def run(  # noqa: PLR0917  (typer reads options from the signature)
    ctx: typer.Context,
    sequences: Annotated[
        list[str], typer.Argument(metavar="SEQUENCE…", help="Sequence files, or names of bundled sequences.")
    ],
    json_path: JsonOption = None,
    junit_path: JunitOption = None,
    compare: CompareOption = None,
    stop_on_divergence: StopOnDivergenceOption = False,
    reset_each: ResetOption = False,
    stop_before_step: Annotated[
        str | None,
        typer.Option(
            "--stop-before",
            metavar="STEP",
            help="End each sequence before its step named STEP, leaving what it built (no teardown).",
        ),
    ] = None,
    session_name: Annotated[
        str | None,
        typer.Option(
            "--session",
            metavar="NAME",
            help="Model only: run in bench session NAME, started over, and keep the state the run "
            "leaves for `show … --session NAME` and `rmi --session NAME`.",
        ),
    ] = None,
) -> None:
    """Run sequences; exit 0 when every expectation held, 1 when one failed or diverged, 3 on target error."""
    from cca_hil.sequences import load_sequence

    settings = settings_of(ctx)
    # Load (and so validate) everything before the target is touched: bad input never half-runs.
    loaded = [load_sequence(resolve_sequence(arg)) for arg in sequences]
    if stop_before_step is not None:
        loaded = [stop_before(sequence, stop_before_step) for sequence in loaded]
    if session_name is not None:
        _check_session(settings.load_profile(), session_name, loaded)
    result = _run(
        settings,
        command="run",
        sequences=loaded,
        json_path=json_path,
        junit_path=junit_path,
        compare=compare,
        stop_on_divergence=stop_on_divergence,
        session_name=session_name,
        reset_each=reset_each,
    )
    if session_name is not None and not settings.quiet:
        _console().print(
            f"session {session_name!r} keeps the model state this run left "
            f"(see it with `cca-hil show realms --session {session_name}`)",
            markup=False,
            highlight=False,
        )
    raise typer.Exit(result.exit_code())


@app.command()
def conformance(  # noqa: PLR0917  (typer reads options from the signature)
    ctx: typer.Context,
    only: Annotated[
        list[str] | None,
        typer.Option("--only", metavar="CMD", help="Only these commands (repeatable or comma-separated)."),
    ] = None,
    json_path: JsonOption = None,
    junit_path: JunitOption = None,
    compare: CompareOption = None,
    stop_on_divergence: StopOnDivergenceOption = False,
    reset_each: ResetOption = False,
    compat: Annotated[
        str | None,
        typer.Option(
            "--compat",
            metavar="MODE",
            help="Judge the cases rmm-abi.md §12 marks as answered differently by TF-RMM with that answer "
            "(spec | tf-rmm-1.0; default: the RMM the profile is said to run — tf-rmm-1.0 on fvp profiles).",
        ),
    ] = None,
    changes: Annotated[
        bool,
        typer.Option(
            "--changes", help="Only list the cases whose expectation a compat mode changes, then exit."
        ),
    ] = False,
) -> None:
    """The bundled conformance suite: a case for every failure condition of every RMI and RSI command."""
    from cca_hil.checks.conformance import compat_changes, conformance_sequences
    from cca_hil.shadow import compat_rows, expected_quirk_rows

    settings = settings_of(ctx)
    names = [n.strip() for item in only or () for n in item.split(",") if n.strip()]
    try:
        sequences = conformance_sequences(names or None)
    except InputError as exc:
        if exc.where is not None:
            raise
        raise InputError(exc.what, where="--only", valid=exc.valid) from exc
    if compat is not None:
        rows = compat_rows(compat, where="--compat")
    else:
        rows = expected_quirk_rows(settings.load_profile())
    mode = compat or ("tf-rmm-1.0" if rows else "spec")
    if changes:
        _print_compat_changes(_console(), compat_changes(sequences), rows, mode, only_judged=False)
        raise typer.Exit(0)
    if rows and not settings.quiet:
        _print_compat_changes(_console(), compat_changes(sequences), rows, mode, only_judged=True)
    result = _run(
        settings,
        command="conformance",
        sequences=sequences,
        json_path=json_path,
        junit_path=junit_path,
        compare=compare,
        stop_on_divergence=stop_on_divergence,
        quirk_rows=rows,
        reset_each=reset_each,
    )
    raise typer.Exit(result.exit_code())


def _print_compat_changes(
    console: Console, changes: Sequence[CompatChange], rows: frozenset[int], mode: str, *, only_judged: bool
) -> None:
    """The cases whose expectation a compatibility mode changes, as a table (rmm-abi.md §12)."""
    from rich.table import Table

    changes = sorted(changes, key=lambda c: c.variant.row)
    judged = [c for c in changes if c.variant.row in rows]
    shown = judged if only_judged else changes
    if only_judged:
        active = ", ".join(str(r) for r in sorted({c.variant.row for c in judged}))
        title = f"{len(judged)} cases judged by their {mode} answer (rmm-abi.md §12 rows {active})"
    else:
        title = (
            f"{len(changes)} cases expect another answer under tf-rmm-1.0 (rmm-abi.md §12); "
            f"judged that way with {mode}: {len(judged)}"
        )
    table = Table(title=title, title_justify="left")
    table.add_column("§12 row", justify="right")
    table.add_column("case")
    table.add_column("spec expects")
    table.add_column("tf-rmm-1.0 expects")
    if not only_judged:
        table.add_column(f"judged ({mode})")
    for change in shown:
        cells = [str(change.variant.row), f"{change.case}\n[dim]{change.where}[/]", change.spec_text]
        cells.append(change.variant.text)
        if not only_judged:
            cells.append("yes" if change.variant.row in rows else "no")
        table.add_row(*cells)
    console.print(table)


# -- rmi at the bench -----------------------------------------------------------------------------------


def _show_output(value: int, type_name: str) -> str:
    from enum import IntEnum

    from cca_hil.arch.rmi import decode_version

    if isinstance(value, IntEnum):
        return value.name.lower()
    if type_name == "RmiInterfaceVersion":
        major, minor = decode_version(value)
        return f"{major}.{minor} ({value:#x})"
    if type_name in ("UInt64", "Int64"):
        return str(value)
    return f"{value:#x}"


def _json_output(value: int, type_name: str) -> int | str:
    from enum import IntEnum

    if isinstance(value, IntEnum):
        return value.name.lower()
    if type_name in ("UInt64", "Int64"):
        return int(value)
    return f"{value:#x}"


def _rmi_json(session: Session, inputs: Mapping[str, int], result: RmiResult) -> dict[str, Any]:
    from cca_hil.arch.rmi_1_0 import RMI_1_0
    from cca_hil.session import show_input

    command = RMI_1_0.by_name[result.command]
    types = {o.name: o.type for o in command.outputs}
    return {
        "command": result.command,
        "fid": f"{command.fid:#x}",
        "inputs": {k: show_input(command.input(k), v) for k, v in inputs.items()},
        "registers": [f"{r:#x}" for r in result.registers],
        "status": result.status_name,
        "index": result.index,
        "outputs": {k: _json_output(v, types[k]) for k, v in result.outputs.items()},
        "condition": result.condition,
        "session": session.name if session.journaled else None,
        "journal": len(session.journal.operations) if session.journal is not None else None,
    }


def _print_rmi(console: Console, inputs: Mapping[str, int], result: RmiResult) -> None:
    from rich.table import Table

    from cca_hil.arch.rmi_1_0 import RMI_1_0
    from cca_hil.session import show_input

    command = RMI_1_0.by_name[result.command]
    shown = " ".join(f"{k}={show_input(command.input(k), v)}" for k, v in inputs.items())
    console.print(f"{command.spec_name} {shown}".rstrip(), markup=False, highlight=False)
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    style = "green" if result.ok else "red"
    table.add_row("status", f"[{style}]{result.status_name}[/{style}]")
    if result.status is not None and not result.ok:
        table.add_row("index", str(result.index))
    if result.condition:
        table.add_row("condition", result.condition)
    types = {o.name: o.type for o in command.outputs}
    for name, value in result.outputs.items():
        table.add_row(name, _show_output(value, types[name]))
    table.add_row("registers", " ".join(f"X{i}={r:#x}" for i, r in enumerate(result.registers)))
    console.print(table)


def _print_history(console: Console, settings: Settings, name: str, *, as_json: bool) -> None:
    from cca_hil.arch.rmi import status_name
    from cca_hil.session import JOURNALED_KINDS, SmcOp, WriteOp, describe_smc, load_journal, session_path

    profile = settings.load_profile()
    path = session_path(runs_root(), name)
    if profile.kind not in JOURNALED_KINDS:
        note = (
            f"profile {profile.name!r} keeps its state on the target: "
            "bench calls are not journaled, there is no history"
        )
        if as_json:
            _print_json({"session": name, "journaled": False, "operations": [], "note": note})
        else:
            console.print(note, markup=False, highlight=False)
        return
    journal = load_journal(path)
    if journal is None:
        if as_json:
            _print_json({"session": name, "journaled": True, "operations": []})
        else:
            console.print(f"session {name!r} has no calls yet ({path})", markup=False, highlight=False)
        return
    if as_json:
        _print_json({"session": name, "journaled": True, "file": str(path), **journal.to_json()})
        return
    console.print(
        f"session {journal.name!r}: profile {journal.profile} (seed {journal.seed}), "
        f"{len(journal.operations)} operations, file {path}",
        markup=False,
        highlight=False,
    )
    table = _table("#", "operation", "status", "condition")
    for number, op in enumerate(journal.operations, start=1):
        if isinstance(op, SmcOp):
            table.add_row(str(number), describe_smc(op), status_name(op.result[0]), op.condition or "")
        elif isinstance(op, WriteOp):
            table.add_row(str(number), f"write {len(op.data)} bytes at {op.pa:#x}", "", "")
        else:
            table.add_row(
                str(number),
                f"store {op.size} bytes {op.value:#x} at {op.pa:#x}",
                "fault" if op.faulted else "ok",
                "",
            )
    console.print(table)


@app.command(
    context_settings={"ignore_unknown_options": True},
    epilog="Examples: cca-hil rmi version; cca-hil rmi granule-delegate 0x88000000; "
    "cca-hil rmi realm-create 0x90000000 params.s2sz=40 params.rtt_base=0x90010000",
)
def rmi(  # noqa: PLR0917  (typer reads options from the signature)
    ctx: typer.Context,
    command: Annotated[
        str | None, typer.Argument(metavar="COMMAND", help="RMI command: version, granule-delegate …")
    ] = None,
    args: Annotated[
        list[str] | None,
        typer.Argument(metavar="ARG…", help="Inputs in spec order, or name=value, or params.field=value."),
    ] = None,
    session_name: Annotated[
        str, typer.Option("--session", metavar="NAME", help="Bench session whose model state to continue.")
    ] = "default",
    reset_session: Annotated[
        bool, typer.Option("--reset-session", help="Start the session over from a freshly booted model.")
    ] = False,
    history: Annotated[bool, typer.Option("--history", help="List the calls made in this session.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """One RMI call at the bench; on the model, the session keeps the state between invocations."""
    from cca_hil.rmi_client import RmiClient
    from cca_hil.session import parse_rmi_call, perform

    settings = settings_of(ctx)
    if history and command is None and not reset_session:
        # Reading the journal needs no model: history works even when a replay would diverge.
        _print_history(_console(), settings, session_name, as_json=as_json)
        return
    if command is None and not history and not reset_session:
        from cca_hil.arch.rmi_1_0 import RMI_1_0

        raise InputError(
            "missing RMI command",
            where="cca-hil rmi",
            valid=[c.name.replace("_", "-") for c in RMI_1_0.commands],
        )
    profile = settings.load_profile()
    console = _console()
    with _bench_session(settings, profile, session_name, reset=reset_session) as session:
        if command is not None:
            call = parse_rmi_call(command, args or (), platform=session.target.info().platform)
            inputs, result = perform(call, RmiClient(session.target))
            if as_json:
                _print_json(_rmi_json(session, inputs, result))
            elif settings.quiet:
                console.print(result.describe(), markup=False, highlight=False)
            else:
                _print_rmi(console, inputs, result)
        elif reset_session and not history:
            if session.journaled:
                console.print(
                    f"session {session.name!r} starts over from a freshly booted model", markup=False
                )
            else:
                console.print(f"profile {profile.name!r} keeps its state on the target: nothing to reset")
    if history:
        _print_history(console, settings, session_name, as_json=as_json)


# Sub-apps of the other layers: each module keeps its heavy imports inside its commands.
from cca_hil.cli_board import load, power, probe_app  # noqa: E402
from cca_hil.cli_fvp import fvp_app  # noqa: E402
from cca_hil.cli_gpt import check_app, gpt_app  # noqa: E402
from cca_hil.cli_show import show_app  # noqa: E402
from cca_hil.cli_token import measure, token_app  # noqa: E402

app.add_typer(token_app, name="token")
app.command("measure")(measure)
app.command("load")(load)
app.command("power")(power)
app.add_typer(fvp_app, name="fvp")
app.add_typer(probe_app, name="probe")
app.add_typer(gpt_app, name="gpt")
app.add_typer(check_app, name="check")
app.add_typer(show_app, name="show")

from cca_hil.cli_lease import lease_app  # noqa: E402

app.add_typer(lease_app, name="lease")

from cca_hil.cli_console import console  # noqa: E402
from cca_hil.cli_shell import shell  # noqa: E402

app.command("console")(console)
app.command("shell")(shell)

from cca_hil.cli_farm import farm_app  # noqa: E402

app.add_typer(farm_app, name="farm")

from cca_hil.cli_shadow import check_shadow  # noqa: E402

check_app.command("shadow")(check_shadow)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``cca-hil`` console script and ``python -m cca_hil``."""
    typer.main.get_command(app).main(args=argv, prog_name=PROG)
