"""FVP configuration, port-line parsing and parameter renames: pure functions, property-tested."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cca_hil.errors import ProfileError
from cca_hil.fvp import (
    FVP_PARAMS,
    FvpConfig,
    FvpVersion,
    PortLineParser,
    check_renames,
)
from cca_hil.profiles import bundled_dir, validate
from cca_hil.yamlio import load_file

NOISE = st.text(alphabet=st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)), max_size=40)


@given(
    ports=st.dictionaries(st.integers(0, 3), st.integers(1, 65535), min_size=1),
    noise=st.lists(NOISE, max_size=8),
    cuts=st.lists(st.integers(0, 2000), max_size=20),
    crlf=st.booleans(),
)
def test_port_lines_are_found_among_any_output_split_anywhere(
    ports: dict[int, int], noise: list[str], cuts: list[int], crlf: bool
) -> None:
    end = "\r\n" if crlf else "\n"
    lines = [f"terminal_{n}: Listening for serial connection on port {p}" for n, p in ports.items()]
    # Other output before, between and after the port lines; none of it is a port line.
    mixed: list[str] = []
    for i, line in enumerate(lines):
        mixed += [f"Info: {text}" for text in noise[i::2]] + [line]
    mixed += [f"Warning: {text}" for text in noise]
    data = "".join(line + end for line in mixed).encode()
    parser = PortLineParser()
    found: dict[str, int] = {}
    start = 0
    for point in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
        found.update(parser.feed(data[start:point]))
        start = point
    expected = {f"terminal_{n}": p for n, p in ports.items()}
    assert found == expected
    assert parser.ports == expected


def test_a_port_line_inside_other_text_is_not_a_port_line() -> None:
    parser = PortLineParser()
    parser.feed(b"echo terminal_0: Listening for serial connection on port 5000\n")
    parser.feed(b"terminal_1: Listening for serial connection on port 5001 (busy)\n")
    assert parser.ports == {}
    assert parser.last_lines()[-1].endswith("(busy)")


def test_last_lines_keep_an_unterminated_line() -> None:
    parser = PortLineParser(keep=2)
    parser.feed(b"one\ntwo\nthree\nfour")
    assert parser.last_lines() == ("two", "three", "four")


@given(st.integers(0, 99), st.integers(0, 99), st.integers(0, 999))
def test_version_text_round_trips(major: int, minor: int, build: int) -> None:
    line = f"Fast Models [{major}.{minor}.{build} (Mar 18 2026)]\nCopyright 2000-2026 ARM Limited."
    assert FvpVersion.parse(line) == FvpVersion(major, minor, build)
    assert FvpVersion.parse(f"{major}.{minor} Build {build}") == FvpVersion(major, minor, build)


def test_renames_apply_from_their_release_on_and_only_to_cluster_parameters() -> None:
    params = (("cluster0.has_rme", "1"), ("cluster1.has_rme", "0"), ("bp.has_rme", "1"))
    adapted, notices = check_renames(params, FvpVersion(11, 31, 28), adapt=True)
    assert adapted == (
        ("cluster0.rme_support_level", "2"),
        ("cluster1.rme_support_level", "0"),
        ("bp.has_rme", "1"),
    )
    assert [n.parameter for n in notices] == ["cluster0.has_rme", "cluster1.has_rme"]
    assert all(n.adapted for n in notices)
    kept, warned = check_renames(params, FvpVersion(11, 31, 28), adapt=False)
    assert kept == params
    assert "is known as 'cluster0.rme_support_level'" in warned[0].describe()


def _section(name: str) -> dict[str, Any]:
    return validate(load_file(bundled_dir() / f"{name}.yaml")["fvp"], FVP_PARAMS, where=name, path="fvp")


def test_bundled_profiles_describe_rme_and_mec() -> None:
    rme = FvpConfig.from_section(_section("fvp-base-rme"), where="fvp-base-rme")
    mec = FvpConfig.from_section(_section("fvp-base-rme-mec"), where="fvp-base-rme-mec")
    assert rme.rme and not rme.mec
    assert mec.rme and mec.mec
    assert rme.param("bp.ve_sysregs.exit_on_shutdown") == "1"
    assert rme.param("pci.pci_smmuv3.mmu.SMMU_ROOT_IIDR") == str(0x43B)
    assert [t.index for t in rme.connected_terminals] == [0, 1, 3]
    assert rme.version == FvpVersion(11, 31)
    assert rme.timeouts.ports == 120.0


def test_nested_and_dotted_parameter_names_are_the_same_parameter() -> None:
    config = FvpConfig.from_section(
        {"params": {"bp.secure_memory": 1, "bp": {"secure_memory": 0, "dram_size": 4}}}
    )
    assert config.params == (("bp.secure_memory", "0"), ("bp.dram_size", "4"))


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"data": ["agent.bin@0x88000000"]}, r"bad --data 'agent\.bin@0x88000000'"),
        ({"application": ["agent.elf"]}, r"fvp\.application 'agent\.elf': expected INSTANCE=FILE"),
        ({"version": "eleven"}, r"fvp\.version 'eleven' is not a release"),
        ({"agent_uart": 7}, r"fvp\.agent_uart 7 \(valid: 0, 1, 2, 3\)"),
        (
            {"terminals": {"terminal_0": {"connect": False}}},
            r"agent_uart is 0 but terminal_0 has connect: false",
        ),
        ({"terminals": {"terminal_1": {"start_port": 70000}}}, r"start_port 70000 is not a TCP port"),
        ({"timeouts": {"ports": 0.0}}, r"fvp\.timeouts\.ports must be positive"),
    ],
)
def test_bad_sections_are_profile_errors_naming_the_key(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ProfileError, match=message) as caught:
        FvpConfig.from_section(section, where="p.yaml")
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith("p.yaml: ")


def test_profile_schema_rejects_unknown_keys_with_the_valid_ones() -> None:
    with pytest.raises(ProfileError, match=re.escape("unknown key 'fvp.binray'")):
        validate({"binray": "x"}, FVP_PARAMS, where="p.yaml", path="fvp")


def test_an_endless_line_is_bounded_and_a_port_line_after_it_still_found() -> None:
    parser = PortLineParser()
    for _ in range(100):
        parser.feed(b"x" * 10_000)
    assert len(parser.last_lines()[-1]) <= 4096
    parser.feed(b"\nterminal_0: Listening for serial connection on port 5000\n")
    assert parser.ports == {"terminal_0": 5000}
