"""``cca-hil token get | show | verify`` and ``cca-hil token measure``: CCA attestation tokens at the bench.

The lead's ``cli.py`` registers the sub-app: ``app.add_typer(token_app)``
(``token_app`` is named ``token``). The commands find the target profile in
the root context's ``obj`` (the CLI's ``Settings``, anything with a
``load_profile()``); without one they use the built-in ``model`` profile.
Like the rest of the CLI, nothing heavy (cbor2, cryptography, rich, the
model) is imported before a command runs.
"""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cca_hil.errors import CapabilityError, InputError

if TYPE_CHECKING:
    from cca_hil.arch.token import CcaToken, EcPublicKey, Verification
    from cca_hil.profiles import Profile
    from cca_hil.results import SequenceResult

token_app = typer.Typer(
    name="token",
    help="CCA attestation tokens: get one from a realm on the target, show or verify a token file.",
    no_args_is_help=True,
)

_IAK_FACT = "IAK public key (P-384, x‖y)"
_CONTINUE = "rsi attestation_token_continue"
_INIT = "rsi attestation_token_init"


def _profile(ctx: typer.Context) -> Profile:
    """The profile the global options chose (``model`` when the sub-app runs on its own)."""
    settings = ctx.find_root().obj
    loader = getattr(settings, "load_profile", None)
    if callable(loader):
        profile: Profile = loader()
        return profile
    from cca_hil.profiles import load_profile

    return load_profile("model")


def _hex(text: str, what: str, *, size: int | None = None) -> bytes:
    digits = text.strip().lower().removeprefix("0x").replace("_", "").replace(" ", "")
    try:
        data = bytes.fromhex(digits)
    except ValueError:
        raise InputError(f"{what} must be hex bytes, got {text!r}", where=f"--{what}") from None
    if size is not None and len(data) != size:
        raise InputError(f"{what} must be {size} bytes, got {len(data)}", where=f"--{what}")
    return data


def _iak(text: str) -> EcPublicKey:
    """A P-384 IAK given as x‖y (96 bytes of hex) or as a serialized COSE_Key."""
    from cca_hil.arch.token import EcPublicKey, TokenError

    data = _hex(text, "iak")
    if len(data) == 96:
        return EcPublicKey("P-384", data[:48], data[48:])
    try:
        return EcPublicKey.from_cose_key(data)
    except TokenError as exc:
        raise InputError(f"--iak is neither x‖y of a P-384 key nor a COSE_Key ({exc.what})") from exc


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the token: {exc.strerror or exc}", where=str(path)) from exc


# -- get ------------------------------------------------------------------------------------------------


def bundled_attestation_sequence() -> Path:
    """The bundled ``sequences/attestation.yaml`` (package data)."""
    return Path(str(resources.files("cca_hil") / "data" / "sequences" / "attestation.yaml"))


def _token_location(result: SequenceResult) -> tuple[int, int, int]:
    """(REC, token page IPA, length) of the token a run delivered, from its step results."""
    rec = None
    for step in result.steps:
        if step.command == "rec_enter":
            rec = step.args.get("rec")
        if step.command == _CONTINUE and step.status == "success" and step.outcome.value == "passed":
            addr = step.args.get("addr")
            length = step.outputs.get("len")
            if isinstance(rec, int) and addr is not None and isinstance(length, int):
                return rec, int(str(addr), 0), length
    raise InputError(
        "the sequence delivered no complete token (no successful attestation_token_continue)",
        where=result.source,
    )


@token_app.command("get")
def get(
    ctx: typer.Context,
    out: Annotated[
        Path, typer.Option("--out", "-o", metavar="FILE", help="Where to write the token.")
    ] = Path("token.cbor"),
    sequence: Annotated[
        Path | None,
        typer.Option("--sequence", metavar="FILE", help="Attestation flow to run (default: bundled)."),
    ] = None,
) -> None:
    """Build and run a measured realm, have it ask for a CCA token, verify the token and save it."""
    from cca_hil.arch.token import Expectations, verify
    from cca_hil.measure import measure_sequence
    from cca_hil.profiles import build_target
    from cca_hil.sequences import Runner, load_sequence
    from cca_hil.targets.base import Capability

    profile = _profile(ctx)
    path = sequence or bundled_attestation_sequence()
    spec = load_sequence(path)
    challenge = _challenge_of(spec)
    measured = measure_sequence(spec)
    with build_target(profile) as target:
        target.require(Capability.ATTESTATION)
        reader = getattr(target, "read_realm", None)
        if not callable(reader):
            raise CapabilityError("realm memory read-back", target.name)
        result = Runner(target).run(spec)
        if result.error or result.skipped_reason:
            raise InputError(f"the attestation flow did not run: {result.error or result.skipped_reason}")
        failed = [s.name for s in result.steps if s.outcome.value != "passed"]
        if failed:
            raise InputError(f"the attestation flow failed at {', '.join(failed)}", where=str(path))
        rec, ipa, length = _token_location(result)
        data: bytes = reader(rec, ipa, length)
        iak_text = target.info().facts.get(_IAK_FACT)
    out.write_bytes(data)
    expect = Expectations(challenge=challenge, rim=measured[0].digest if len(measured) == 1 else None)
    report = verify(data, iak=_iak(iak_text) if iak_text else None, expect=expect)
    _print_verification(report, str(out))
    if not report.ok:
        raise typer.Exit(1)


def _challenge_of(spec: Any) -> bytes | None:
    """The challenge the flow's RSI_ATTESTATION_TOKEN_INIT passes (as the realm's 64 bytes)."""
    from cca_hil.seqformat import RmiStep, RsiStep, Wide

    actions = []
    for step in spec.steps:
        if isinstance(step, RsiStep):
            actions.append(step.action)
        elif isinstance(step, RmiStep):
            actions.extend(step.realm)
    for action in actions:
        if action.kind == "rsi" and action.name == "attestation_token_init":
            raw = action.args.get("challenge")
            if isinstance(raw, Wide):
                return raw.data.ljust(64, b"\0")
    return None


# -- show / verify --------------------------------------------------------------------------------------


def _claims_json(token: CcaToken) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if isinstance(value, bytes):
            return value.hex()
        if isinstance(value, dict) or hasattr(value, "items"):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    claims = token.realm_claims
    return {
        "platform": {
            "length": len(token.platform_token),
            "alg": token.platform.alg,
            "claims": plain(dict(token.platform_claims)),
        },
        "realm": {
            "length": len(token.realm_token),
            "alg": token.realm.alg,
            "challenge": claims.challenge.hex(),
            "personalization_value": claims.rpv.hex(),
            "public_key": claims.public_key.hex(),
            "hash_algo": claims.hash_algo,
            "public_key_hash_algo": claims.public_key_hash_algo,
            "profile": claims.profile,
            "rim": claims.rim.hex(),
            "rems": [r.hex() for r in claims.rems],
        },
    }


@token_app.command("show")
def show(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A CCA token (CBOR).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the claims as JSON.")] = False,
) -> None:
    """Decode a CCA token and print both tokens' claims."""
    from cca_hil.arch.token import decode

    token = decode(_read(file))
    data = _claims_json(token)
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    from rich import box
    from rich.table import Table

    from cca_hil.report import stdout_console

    table = Table(title=f"CCA token {file}", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("token")
    table.add_column("claim")
    table.add_column("value", overflow="fold")
    table.add_row("realm", "length / alg", f"{data['realm']['length']} bytes, alg {data['realm']['alg']}")
    for key, value in data["realm"].items():
        if key not in ("length", "alg"):
            table.add_row("realm", key, "\n".join(value) if isinstance(value, list) else str(value))
    table.add_row(
        "platform", "length / alg", f"{data['platform']['length']} bytes, alg {data['platform']['alg']}"
    )
    for key, value in data["platform"]["claims"].items():
        table.add_row("platform", key, json.dumps(value) if not isinstance(value, str) else value)
    stdout_console().print(table)


def _print_verification(report: Verification, name: str) -> None:
    from cca_hil.report import stdout_console

    console = stdout_console()
    for check in report.checks:
        mark = "[green]ok[/green]    " if check.ok else "[red]FAILED[/red]"
        console.print(f"{mark} {check.name}: {check.detail}", highlight=False)
    verdict = "verifies" if report.ok else f"does not verify ({', '.join(report.failed)})"
    console.print(f"{name} {verdict}", highlight=False, markup=False)


@token_app.command("verify")
def verify_file(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A CCA token (CBOR).")],
    iak: Annotated[
        str | None,
        typer.Option("--iak", metavar="HEX", help="The platform's IAK: P-384 x‖y or a COSE_Key, in hex."),
    ] = None,
    challenge: Annotated[
        str | None, typer.Option("--challenge", metavar="HEX", help="The challenge the realm must have used.")
    ] = None,
    rim: Annotated[str | None, typer.Option("--rim", metavar="HEX", help="The expected RIM digest.")] = None,
) -> None:
    """Check a token's structure, signatures and RAK binding (exit 1 naming each failed check)."""
    from cca_hil.arch.token import Expectations, verify

    expect = Expectations(
        challenge=_hex(challenge, "challenge").ljust(64, b"\0") if challenge else None,
        rim=_hex(rim, "rim") if rim else None,
    )
    report = verify(_read(file), iak=_iak(iak) if iak else None, expect=expect)
    _print_verification(report, str(file))
    if not report.ok:
        raise typer.Exit(1)


# -- measure --------------------------------------------------------------------------------------------


def measure(
    sequence: Annotated[Path, typer.Argument(metavar="SEQUENCE", help="A sequence file.")],
    tf_rmm: Annotated[
        bool, typer.Option("--tf-rmm", help="TF-RMM's RTT_INIT_RIPAS scan (rmm-abi.md §12 #8).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the measurements as JSON.")] = False,
) -> None:
    """The RIM each realm of a sequence will have, computed offline (RMM 1.0 A7.1)."""
    from cca_hil.measure import measure_sequence
    from cca_hil.sequences import load_sequence

    results = measure_sequence(load_sequence(sequence), tf_rmm=tf_rmm)
    rows = [
        {
            "rd": m.rd,
            "hash_algo": m.hash_algo.name.lower(),
            "rim": m.digest.hex(),
            "activated": m.activated,
            "steps": list(m.steps),
        }
        for m in results
    ]
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    from cca_hil.report import stdout_console

    console = stdout_console()
    if not rows:
        console.print(f"{sequence} creates no realm", markup=False)
    for row in rows:
        state = "at activation" if row["activated"] else "at the end (never activated)"
        console.print(f"realm {row['rd']} ({row['hash_algo']}) RIM {state}: {row['rim']}", highlight=False)


token_app.command("measure")(measure)
