"""Every row of rmm-abi.md §12 the model implements is held to a test that names it.

Switchable rows (TF-RMM departs from the spec; ``model.platform.QUIRK_ROWS``) need a test that
asserts both answers (``quirks: spec`` and ``tf-rmm``); rows where the spec allows a choice or is
silent need a test asserting TF-RMM's answer. Tests name a row as ``§12 #N`` (model tests) or a
suite case as ``§12 row N`` (conformance files, judged by their ``compat:`` variants).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cca_hil.model.platform import QUIRK_ROWS

ROOT = Path(__file__).resolve().parents[2]
NOT_MODELLED = (15, 20, 21)
"""#15 needs a REC running on another CPU; #20 and #21 exist only in TF-RMM's rel0 tag."""
CHOICE_OR_SILENT = (2, 3, 4, 7, 10, 11, 14, 16, 18)


def _named_rows() -> dict[int, list[str]]:
    named: dict[int, list[str]] = {}
    sources = [
        *(ROOT / "tests").rglob("test_*.py"),
        *(ROOT / "cca_hil" / "data" / "conformance").glob("*.yaml"),
    ]
    for path in sources:
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"§12 (?:#|row )(\d+)", text):
            named.setdefault(int(match.group(1)), []).append(path.name)
    return named


def test_the_rows_partition_the_table() -> None:
    assert sorted((*QUIRK_ROWS, *NOT_MODELLED, *CHOICE_OR_SILENT)) == list(range(1, 23))


@pytest.mark.parametrize("row", [*QUIRK_ROWS, *CHOICE_OR_SILENT])
def test_every_modelled_row_is_named_by_a_test(row: int) -> None:
    places = _named_rows().get(row, [])
    assert any(place.startswith("test_") for place in places) or (row in CHOICE_OR_SILENT and places), (
        f"rmm-abi.md §12 row {row} is named by no test"
    )


@pytest.mark.parametrize(("quirks", "x4"), [("spec", 0), ("tf-rmm", 0xABC)])
def test_x4_of_a_command_without_an_x4_output(quirks: str, x4: int) -> None:
    # rmm-abi.md §12 #19: the spec makes X4 MBZ where a command has no X4 output; TF-RMM leaves the
    # caller's X4 in place. RMI_GRANULE_DELEGATE (outputs: X0 only) of an undelegated granule.
    from cca_hil.profiles import build_target, load_profile

    with build_target(load_profile("model", [f"rmm.quirks={quirks}"])) as target:
        pa = target.info().granule_pool[0][0]
        registers = target.smc(0xC400_0151, pa, 0, 0, 0xABC)
    assert registers[0] == 0 and registers[4] == x4
