"""Helpers for tests of targets behind the agent link: suites, and result comparison with the model."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path

from cca_hil.checks.conformance import conformance_sequences
from cca_hil.profiles import build_target, load_profile
from cca_hil.results import Outcome, RunResult, SequenceResult, StepResult
from cca_hil.sequences import Runner, Sequence, load_sequence
from cca_hil.targets.base import Target

ROOT = Path(__file__).resolve().parents[2]
SIM_BOARD = ROOT / "tools" / "sim-board"
STANDIN = ROOT / "tools" / "fvp-standin"
SAMPLES = sorted((ROOT / "cca_hil" / "data" / "sequences").glob("*.yaml"))

FAST_LINK = "link.timeouts={boot: 10, handshake: 0.3, request: 1, bulk: 2, gap: 0.02}"
"""Short link bounds for failure tests; correctness never depends on them."""


def all_sequences() -> list[Sequence]:
    """The conformance suite followed by the bundled sample sequences."""
    return [*conformance_sequences(), *(load_sequence(path) for path in SAMPLES)]


def run_on(target: Target, sequences: list[Sequence]) -> RunResult:
    """Run ``sequences`` on an opened-and-closed ``target``."""
    with target:
        return Runner(target).run_all(sequences, command="conformance")


def run_profile(
    profile: str, overrides: Iterable[str] = (), *, run_dir: Path | None = None, sequences: list[Sequence]
) -> RunResult:
    """Build the profile's target and run ``sequences`` on it."""
    return run_on(build_target(load_profile(profile, list(overrides)), run_dir=run_dir), sequences)


_COMPARED = tuple(f.name for f in fields(StepResult) if f.name not in ("duration", "condition"))


def lacked_capability(message: str, capabilities: frozenset[str]) -> str | None:
    """The capability a skip names when it is one the agent target lacks, else None."""
    for capability in ("gpt_read", "realm_exec", "mec", "encryption", "attestation"):
        if capability not in capabilities and f"does not provide {capability!r}" in message:
            return capability
    return None


def assert_same_step(got: StepResult, want: StepResult, where: str) -> None:
    """Field by field except duration; ``condition`` only where both report one."""
    for name in _COMPARED:
        assert getattr(got, name) == getattr(want, name), f"{where}: {name} differs"
    if got.condition is not None and want.condition is not None:
        assert got.condition == want.condition, f"{where}: condition differs"


_SIGNS = all(importlib.util.find_spec(name) is not None for name in ("cbor2", "cryptography"))
_SIGNED = {"attestation"} if _SIGNS else set()
AGENT_CAPS = frozenset({"rme", "memory", "access", "console", "realm_exec"} | _SIGNED)
"""What the model-backed agent emulator offers: realms run (and get tokens where the model signs them)
as on the model; no GPT read-out."""


def runnable(sequences: list[Sequence], capabilities: frozenset[str]) -> list[Sequence]:
    """The sequences a target with ``capabilities`` runs (the others it skips as a whole)."""
    return [s for s in sequences if set(s.requires) <= capabilities]


def assert_same_results(got: RunResult, want: RunResult, capabilities: frozenset[str]) -> dict[str, int]:
    """The agent target's run equals the model's, except what needs a capability the agent lacks.

    ``want`` is the model's run of the sequences the agent can run (a sequence the agent skips
    allocates no granules, so the model must not run it either for addresses to line up). The
    agent must skip every other sequence, and every step needing a capability it lacks, naming
    the capability. Returns how many steps were compared and skipped.
    """
    assert not got.error, got.error
    assert not want.error, want.error
    counts = {"steps": 0, "skipped_steps": 0, "skipped_sequences": 0}
    ran = [s for s in got.sequences if not s.skipped_reason]
    for seq in got.sequences:
        if seq.skipped_reason:
            missing = seq.skipped_reason.rpartition(" lacks ")[2].split(", ")
            assert all(cap not in capabilities for cap in missing), seq.skipped_reason
            counts["skipped_sequences"] += 1
    assert [s.name for s in ran] == [s.name for s in want.sequences]
    for seq_got, seq_want in zip(ran, want.sequences, strict=True):
        assert not seq_want.skipped_reason, f"{seq_want.name}: ran on the agent, skipped on the model"
        assert [s.name for s in seq_got.steps] == [s.name for s in seq_want.steps], seq_got.name
        for step_got, step_want in zip(seq_got.steps, seq_want.steps, strict=True):
            where = f"{seq_got.name}/{step_got.name}"
            if step_got.outcome is Outcome.SKIPPED and step_want.outcome is not Outcome.SKIPPED:
                assert lacked_capability(step_got.message, capabilities), f"{where}: {step_got.message}"
                counts["skipped_steps"] += 1
                continue
            assert_same_step(step_got, step_want, where)
            counts["steps"] += 1
    return counts


def assert_identical(first: RunResult, second: RunResult) -> None:
    """Two runs of the same target kind over different transports: every field but durations."""
    assert [s.name for s in first.sequences] == [s.name for s in second.sequences]
    for a, b in zip(first.sequences, second.sequences, strict=True):
        assert _sequence_key(a) == _sequence_key(b), a.name
        for x, y in zip(a.steps, b.steps, strict=True):
            assert_same_step(x, y, f"{a.name}/{x.name}")
            assert x.condition == y.condition


def _sequence_key(result: SequenceResult) -> tuple[str, str, int]:
    return result.skipped_reason, result.error, len(result.steps)
