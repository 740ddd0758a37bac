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
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cca_hil.checks.attest import parse_iak
from cca_hil.errors import InputError

if TYPE_CHECKING:
    from cca_hil.arch.token import CcaToken, Verification
    from cca_hil.profiles import Profile

token_app = typer.Typer(
    name="token",
    help="CCA attestation tokens: get one from a realm on the target, show or verify a token file.",
    no_args_is_help=True,
)


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


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the token: {exc.strerror or exc}", where=str(path)) from exc


# -- get ------------------------------------------------------------------------------------------------


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
    challenge: Annotated[
        str | None,
        typer.Option("--challenge", metavar="HEX", help="The challenge the realm passes (up to 64 bytes)."),
    ] = None,
) -> None:
    """Build and run a measured realm, have it ask for a CCA token, verify the token and save it."""
    from cca_hil.checks.attest import fetch_token
    from cca_hil.profiles import build_target

    nonce = _hex(challenge, "challenge") if challenge else None
    with build_target(_profile(ctx)) as target:
        run = fetch_token(target, sequence, challenge=nonce)
    out.write_bytes(run.token)
    if run.iak is not None:
        # Relying parties (Veraison among them) take the platform's IAK as PEM.
        out.with_suffix(".iak.pem").write_bytes(run.iak.to_pem())
    _print_verification(run.verification, str(out))
    if not run.verification.ok:
        raise typer.Exit(1)


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
        typer.Option(
            "--iak",
            metavar="PEM|HEX",
            help="The platform's IAK: a PEM file, or P-384 x‖y / a COSE_Key in hex.",
        ),
    ] = None,
    challenge: Annotated[
        str | None, typer.Option("--challenge", metavar="HEX", help="The challenge the realm must have used.")
    ] = None,
    rim: Annotated[str | None, typer.Option("--rim", metavar="HEX", help="The expected RIM digest.")] = None,
    sequence: Annotated[
        Path | None,
        typer.Option("--sequence", metavar="SEQ", help="Expect the RIM this sequence's realm has (offline)."),
    ] = None,
) -> None:
    """Check a token's structure, signatures and RAK binding (exit 1 naming each failed check)."""
    from cca_hil.arch.token import Expectations, verify

    if rim and sequence:
        raise InputError("give either --rim or --sequence, not both", where="token verify")
    expected_rim = _hex(rim, "rim") if rim else None
    if sequence is not None:
        from cca_hil.measure import measure_sequence
        from cca_hil.sequences import load_sequence

        realms = measure_sequence(load_sequence(sequence))
        if len(realms) != 1:
            raise InputError(f"the sequence creates {len(realms)} realms, expected one", where=str(sequence))
        expected_rim = realms[0].digest
    expect = Expectations(
        challenge=_hex(challenge, "challenge").ljust(64, b"\0") if challenge else None,
        rim=expected_rim,
    )
    report = verify(_read(file), iak=parse_iak(iak) if iak else None, expect=expect)
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
