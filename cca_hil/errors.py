"""One exception root for cca-hil, a branch per layer, and the single place exit codes come from.

DESIGN.md "Results and exit codes": 0 all expectations held, 1 an expectation
failed, 2 bad input, 3 target or transport error.
"""

from __future__ import annotations

from collections.abc import Iterable

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_TARGET = 3


class CcaHilError(Exception):
    """Root of every error cca-hil raises on purpose."""

    exit_code = EXIT_TARGET


class InputError(CcaHilError):
    """Bad input from the user: arguments, profiles, sequences, images, tokens.

    ``where`` is a location such as ``seq.yaml:12`` and ``valid`` lists accepted
    choices; both are folded into the one-line message.
    """

    exit_code = EXIT_BAD_INPUT

    def __init__(
        self,
        what: str,
        *,
        where: str | None = None,
        valid: Iterable[str] | None = None,
    ) -> None:
        self.what = what
        self.where = where
        self.valid = tuple(valid) if valid is not None else None
        super().__init__(self._compose())

    def _compose(self) -> str:
        text = f"{self.where}: {self.what}" if self.where else self.what
        if self.valid is not None:
            shown = list(self.valid)
            more = ""
            if len(shown) > 24:
                more = f", … ({len(shown) - 24} more)"
                shown = shown[:24]
            text += f" (valid: {', '.join(shown)}{more})"
        return text


class ProfileError(InputError):
    """A target profile is missing, malformed, or names unknown keys."""


class SequenceError(InputError):
    """A sequence file cannot be loaded: syntax, unknown keys, commands, names or values."""


class TargetError(CcaHilError):
    """The target could not be started, reached or driven."""

    exit_code = EXIT_TARGET


class CapabilityError(TargetError):
    """The target lacks a capability an operation needs (callers usually turn this into 'skipped')."""

    def __init__(self, capability: str, target: str, *, why: str = "") -> None:
        self.capability = capability
        self.target = target
        self.why = why
        text = f"target {target!r} does not provide {capability!r}"
        super().__init__(f"{text}: {why}" if why else text)


class TransportError(TargetError):
    """A byte stream, process or probe connection failed or timed out."""


class AgentLinkError(TransportError):
    """The agent link broke a guarantee: bad frame, lost peer, timeout, version mismatch."""


class GranuleProtectionFault(TargetError):
    """A Non-secure memory access by the agent took a granule protection fault."""

    def __init__(self, pa: int, *, write: bool) -> None:
        self.pa = pa
        self.write = write
        kind = "store to" if write else "load from"
        super().__init__(f"granule protection fault on {kind} {pa:#x} (Non-secure PAS)")


def exit_code_for(error: BaseException) -> int:
    """The process exit code for an error that ended a command."""
    if isinstance(error, CcaHilError):
        return error.exit_code
    return EXIT_TARGET
