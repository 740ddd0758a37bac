"""``gpt decode | show`` and ``check gpt | mec`` through typer's CliRunner on a small app of their own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cca_hil.cli_gpt import check_app, gpt_app
from cca_hil.model.machine import Machine

app = typer.Typer()
app.add_typer(gpt_app)
app.add_typer(check_app)
runner = CliRunner()
L0 = 0x0405_E000


@pytest.fixture(autouse=True)
def _runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCA_HIL_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("CCA_HIL_PROFILE", raising=False)


@pytest.fixture
def dumps(tmp_path: Path) -> tuple[Path, Path]:
    """The model's L0 table and its four L1 tables (back to back from 0xFFF0_0000), as files."""
    tables = Machine().gpt.tables()
    l0 = tmp_path / "l0.bin"
    l0.write_bytes(tables[L0])
    l1 = tmp_path / "l1.bin"
    l1.write_bytes(b"".join(tables[pa] for pa in sorted(tables) if pa != L0))
    return l0, l1


def _decode(
    l0: Path, *extra: str, base: str = hex(L0), gpccr: str = "0x13502", gptbr: str = "0x405e"
) -> list[str]:
    return ["gpt", "decode", str(l0), "--base", base, "--gpccr", gpccr, "--gptbr", gptbr, *extra]


def test_decode_prints_the_map_and_writes_json_and_svg(dumps: tuple[Path, Path], tmp_path: Path) -> None:
    l0, l1 = dumps
    out_json, out_svg = tmp_path / "map.json", tmp_path / "map.svg"
    args = _decode(l0, "--l1", f"{l1}@0xfff00000", "--json", str(out_json), "--svg", str(out_svg))
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "realm" in result.stdout and "0xfdc00000" in result.stdout
    regions = json.loads(out_json.read_text())["regions"]
    assert {"start": 0xFDC0_0000, "end": 0xFFC0_0000, "pas": "realm"} in regions
    assert out_svg.read_text().lstrip().startswith("<svg")


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("truncated", "not inside the dump"),
        ("base", "not inside the dump"),
        ("gptbr", "not aligned"),
        ("gpccr", "PGS=0b11 is reserved"),
        ("l1-missing", "L1 table of L0 entry 2"),
        ("number", "is not a number"),
    ],
)
def test_bad_dumps_exit_2_with_one_line(
    dumps: tuple[Path, Path], tmp_path: Path, case: str, expected: str
) -> None:
    l0, _ = dumps
    short = tmp_path / "short.bin"
    short.write_bytes(l0.read_bytes()[:100])
    args = {
        "truncated": _decode(short),
        "base": _decode(l0, base="0x405f000"),
        "gptbr": _decode(l0, gptbr="0x405f"),
        "gpccr": _decode(l0, gpccr="0x1f502"),
        "l1-missing": _decode(l0),
        "number": _decode(l0, gpccr="GPC"),
    }[case]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and lines[0].startswith("cca-hil: error:")


def test_show_reads_the_model_gpt(tmp_path: Path) -> None:
    svg = tmp_path / "show.svg"
    result = runner.invoke(app, ["gpt", "show", "--svg", str(svg)])
    assert result.exit_code == 0, result.output
    assert "GPCCR_EL3=0x13502" in result.stdout and "nonsecure" in result.stdout
    assert svg.is_file()


def test_show_json_is_the_decoded_map() -> None:
    result = runner.invoke(app, ["gpt", "show", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["gpccr"] == 0x13502 and document["gptbr"] == 0x405E


def test_check_gpt_passes_on_the_model_and_writes_the_result_document(tmp_path: Path) -> None:
    out = tmp_path / "gpt.json"
    result = runner.invoke(app, ["check", "gpt", "--json", str(out)])
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert document["command"] == "check gpt"
    assert {seq["name"] for seq in document["sequences"]} == {"gpt-isolation", "gpt-transitions"}


def test_check_mec_on_the_mec_profile(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CCA_HIL_PROFILE", "model-mec")
    junit = tmp_path / "mec.xml"
    result = runner.invoke(app, ["check", "mec", "--junit", str(junit)])
    assert result.exit_code == 0, result.output
    assert "15 passed" in result.stdout
    assert "<testsuites" in junit.read_text()


def test_check_gpt_fails_on_an_el3_that_skips_its_tlbi(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # An EL3 that forgets its TLBI after each GPT write (rme-gpt-mec.md §5.5): a stale GPI is observed.
    profile = tmp_path / "no-tlbi.yaml"
    profile.write_text(
        "name: no-tlbi\nkind: model\ndescription: EL3 without TLBI\nmodel:\n  el3_skip_tlbi: true\n"
    )
    monkeypatch.setenv("CCA_HIL_PROFILE", str(profile))
    result = runner.invoke(app, ["check", "gpt"])
    assert result.exit_code in (1, 3), result.output
    assert "D9.5" in result.stdout


def test_unwritable_output_is_bad_input(tmp_path: Path) -> None:
    result = runner.invoke(app, ["check", "gpt", "--json", str(tmp_path)])
    assert result.exit_code == 2
    assert "is a directory" in result.stderr
