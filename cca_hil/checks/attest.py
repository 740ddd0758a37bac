"""Attestation on a target: run a measured realm, fetch its CCA token through RSI, verify it.

The flow is a sequence (the bundled ``attestation.yaml`` unless another is
given): it builds a measured realm, runs it, and the realm asks for a token
with RSI_ATTESTATION_TOKEN_INIT/CONTINUE (RMM 1.0 B5.3.2–B5.3.3). The token is
read back from realm memory, then verified as a relying party would
(``arch.token.verify``): structure, both signatures, the RAK binding, the
challenge, and the RIM against the one computed offline from the same
sequence (``cca_hil.measure``). ``check attest`` reports each verification
check as a case; ``token get`` saves the token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cca_hil.checks.cases import Case, Section, Verdict
from cca_hil.errors import CapabilityError, InputError, TargetError
from cca_hil.targets.base import Capability, Target

if TYPE_CHECKING:
    from cca_hil.arch.token import EcPublicKey, Verification
    from cca_hil.results import SequenceResult
    from cca_hil.sequences import Sequence

IAK_FACT = "IAK public key (P-384, x‖y)"
"""The ``info()`` fact under which a target publishes its IAK (the model does)."""
_CONTINUE = "rsi attestation_token_continue"


def bundled_attestation_sequence() -> Path:
    """The bundled ``sequences/attestation.yaml`` (package data)."""
    return Path(str(resources.files("cca_hil") / "data" / "sequences" / "attestation.yaml"))


def challenge_of(spec: Sequence) -> bytes | None:
    """The challenge the flow's RSI_ATTESTATION_TOKEN_INIT passes (as the realm's 64 bytes)."""
    from cca_hil.seqformat import RmiStep, RsiStep, Wide

    actions: list[Any] = []
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


def with_challenge(spec: Sequence, challenge: bytes) -> Sequence:
    """The same flow with ``challenge`` (≤ 64 bytes, zero-padded) in its RSI_ATTESTATION_TOKEN_INIT."""
    from dataclasses import replace

    from cca_hil.seqformat import RealmActionSpec, RmiStep, RsiStep, Step, Wide

    if len(challenge) > 64:
        raise InputError(f"a challenge is at most 64 bytes, got {len(challenge)}", where="--challenge")
    found = False

    def patched(action: RealmActionSpec) -> RealmActionSpec:
        nonlocal found
        if action.kind != "rsi" or action.name != "attestation_token_init":
            return action
        found = True
        return replace(action, args={**action.args, "challenge": Wide(challenge.ljust(64, b"\0"))})

    steps: list[Step] = []
    for step in spec.steps:
        if isinstance(step, RsiStep):
            steps.append(replace(step, action=patched(step.action)))
        elif isinstance(step, RmiStep) and step.realm:
            steps.append(replace(step, realm=tuple(patched(a) for a in step.realm)))
        else:
            steps.append(step)
    if not found:
        raise InputError(
            "the flow has no rsi attestation_token_init to give a challenge to", where=spec.source
        )
    return replace(spec, steps=tuple(steps))


def token_location(result: SequenceResult) -> tuple[int, int, int]:
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


def parse_iak(text: str) -> EcPublicKey:
    """An IAK given as a PEM file, PEM text, x‖y of a P-384 key in hex, or a COSE_Key in hex."""
    from cca_hil.arch.token import EcPublicKey, TokenError

    path = Path(text)
    if not text.strip().startswith("-----BEGIN") and path.suffix.lower() in (".pem", ".crt", ".pub"):
        try:
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read the IAK: {exc}", where=f"--iak {path}") from exc
    if text.strip().startswith("-----BEGIN"):
        try:
            return EcPublicKey.from_pem(text.encode("ascii"))
        except TokenError as exc:
            raise InputError(f"bad IAK PEM: {exc.what}", where="--iak") from exc
    digits = text.strip().lower().removeprefix("0x").replace("_", "").replace(" ", "")
    try:
        data = bytes.fromhex(digits)
    except ValueError:
        raise InputError(f"IAK must be hex bytes, got {text!r}", where="--iak") from None
    if len(data) == 96:
        return EcPublicKey("P-384", data[:48], data[48:])
    try:
        return EcPublicKey.from_cose_key(data)
    except TokenError as exc:
        raise InputError(f"the IAK is neither x‖y of a P-384 key nor a COSE_Key ({exc.what})") from exc


@dataclass(frozen=True)
class TokenRun:
    """What one attestation flow produced: its run, the token bytes, the verification, the IAK used."""

    result: SequenceResult
    token: bytes
    verification: Verification
    iak: EcPublicKey | None


def fetch_token(target: Target, sequence: Path | None = None, *, challenge: bytes | None = None) -> TokenRun:
    """Run the attestation flow on ``target``, read the token back and verify it.

    Raises CapabilityError when the target cannot run realms or read realm
    memory back, InputError when the flow itself did not complete.
    """
    from cca_hil.arch.token import Expectations, verify
    from cca_hil.measure import measure_sequence
    from cca_hil.sequences import Runner, load_sequence

    target.require(Capability.ATTESTATION)
    reader = getattr(target, "read_realm", None)
    if not callable(reader):
        raise CapabilityError("realm memory read-back", target.name)
    path = sequence or bundled_attestation_sequence()
    spec = load_sequence(path)
    if challenge is not None:
        spec = with_challenge(spec, challenge)
    measured = measure_sequence(spec)
    result = Runner(target).run(spec)
    if result.error or result.skipped_reason:
        raise InputError(f"the attestation flow did not run: {result.error or result.skipped_reason}")
    failed = [s.name for s in result.steps if s.outcome.value != "passed"]
    if failed:
        raise InputError(f"the attestation flow failed at {', '.join(failed)}", where=str(path))
    rec, ipa, length = token_location(result)
    data: bytes = reader(rec, ipa, length)
    iak_text = target.info().facts.get(IAK_FACT)
    expect = Expectations(
        challenge=challenge_of(spec), rim=measured[0].digest if len(measured) == 1 else None
    )
    iak = parse_iak(iak_text) if iak_text else None
    report = verify(data, iak=iak, expect=expect)
    return TokenRun(result=result, token=data, verification=report, iak=iak)


_EXPECTED = {
    "cbor": "the token parses as a tag-399 CCA token collection",
    "tag": "tag 399",
    "collection": "platform (44234) and realm (44241) tokens",
    "realm_claims": "every required realm claim",
    "platform_claims": "every required platform claim",
    "realm_alg": "ES384 in the realm token's protected header",
    "realm_signature": "the realm token is signed by the RAK of claim 44237",
    "binding": "platform challenge = hash of the RAK claim",
    "platform_signature": "the platform token is signed by the IAK the target publishes",
    "challenge": "the realm's challenge in claim 10",
    "rim": "the RIM equals the one computed offline from the sequence",
    "rems": "the REMs the realm extended",
    "rpv": "the realm personalization value",
    "rak": "claim 44237 is the platform's RAK",
}


class _Flow:
    """Runs the flow once, when the section starts; each verification check becomes a case."""

    def __init__(self, target: Target, sequence: Path | None, challenge: bytes | None) -> None:
        self.target = target
        self.sequence = sequence
        self.challenge = challenge

    def cases(self) -> list[Case]:
        try:
            run = fetch_token(self.target, self.sequence, challenge=self.challenge)
        except InputError as exc:
            # A flow that does not complete is the target's failure, not the user's input.
            raise TargetError(str(exc)) from exc
        steps = len(run.result.steps)
        out = [
            Case(
                name="attestation_flow",
                command="attest",
                expected=f"the realm gets a token ({steps} steps)",
                run=lambda: Verdict(True, "token", outputs={"bytes": len(run.token)}),
            )
        ]
        out.extend(
            Case(
                name=check.name,
                command="verify",
                expected=_EXPECTED.get(check.name, check.name),
                run=_verdict(check.ok, check.detail),
            )
            for check in run.verification.checks
        )
        return out


def _verdict(ok: bool, detail: str) -> Callable[[], Verdict]:
    return lambda: Verdict(ok, "ok" if ok else "failed", detail)


def attest_sections(
    target: Target, sequence: Path | None = None, *, challenge: bytes | None = None
) -> list[Section]:
    """``check attest``: the token round trip on ``target``, one case per verification check."""
    flow = _Flow(target, sequence, challenge)
    return [
        Section(
            name="attestation",
            description="measured realm → RSI token → structure, signatures, binding, challenge, RIM",
            cases=flow.cases,
            requires=(Capability.REALM_EXEC, Capability.ATTESTATION),
        )
    ]
