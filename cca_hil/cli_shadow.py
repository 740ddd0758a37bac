"""``cca-hil check shadow``: the differential harness checked against a board whose answers are known.

A divergence on hardware must be about the hardware, never about the harness. This self-test runs
the bundled sequences and the whole conformance suite on a simulated board — the built-in model
behind the agent emulator, reached over a real socket like a farm board — with the lockstep shadow
model on (``--compare``). The board and the shadow are the same RMM, so every compared step must
match: one divergence means the shadow is built wrong (its memory map, granule pool, RMM facts or
quirk rows differ from the target's, or the two sides allocate different granules).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cca_hil.errors import EXIT_FAILED, EXIT_OK

if TYPE_CHECKING:
    from cca_hil.results import RunResult

SELF_TEST_PROFILE = "board-sim"
"""Where the self-test runs when the selected profile is the model itself (which has no shadow)."""


def shadow_tally(result: RunResult) -> tuple[int, int, int]:
    """(steps compared with the shadow, steps that matched, steps that diverged) of a run."""
    compared = matched = 0
    for sequence in result.sequences:
        for step in sequence.steps:
            if step.matched is None:
                continue
            compared += 1
            matched += step.matched
    return compared, matched, compared - matched


def check_shadow(
    ctx: typer.Context,
    json_path: Annotated[
        Path | None, typer.Option("--json", metavar="PATH", help="Write the result document (JSON) here.")
    ] = None,
    junit_path: Annotated[
        Path | None, typer.Option("--junit", metavar="PATH", help="Write JUnit XML here.")
    ] = None,
    suite_only: Annotated[
        bool, typer.Option("--suite-only", help="Only the conformance suite, not the bundled sequences.")
    ] = False,
) -> None:
    """Self-test of the lockstep shadow: bundled sequences + conformance suite with --compare, 0 divergences.

    Runs on the selected profile, or on board-sim (the model behind the agent emulator) when the
    selected profile is the model itself. Exit 0 when every compared step matched the shadow's
    prediction and every expectation held, 1 otherwise.
    """
    from cca_hil.checks.conformance import conformance_sequences
    from cca_hil.cli import _console, _run, bundled_sequences, settings_of
    from cca_hil.sequences import load_sequence

    settings = settings_of(ctx)
    if settings.load_profile().kind == "model":
        settings = dataclasses.replace(settings, profile=SELF_TEST_PROFILE)
    profile = settings.load_profile()
    sequences = [] if suite_only else [load_sequence(path) for path in bundled_sequences().values()]
    sequences += conformance_sequences()
    result = _run(
        settings,
        command="check-shadow",
        sequences=sequences,
        json_path=json_path,
        junit_path=junit_path,
        compare=True,
    )
    compared, matched, diverged = shadow_tally(result)
    healthy = diverged == 0 and compared > 0 and not result.error
    verdict = "the shadow predicts the target exactly" if healthy else "the shadow is not to be trusted here"
    if not settings.quiet or not healthy:
        _console().print(
            f"shadow self-test on {profile.name}: {compared} steps compared, {matched} matched, "
            f"{diverged} diverged — {verdict}",
            markup=False,
            highlight=False,
        )
    code = result.exit_code()
    if code == EXIT_OK and not healthy:
        code = EXIT_FAILED
    raise typer.Exit(code)
