"""The fvp target through the real launcher and the FVP stand-in: suites, crashes, sessions, facts."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from agent_target_support import AGENT_CAPS, STANDIN, assert_same_results, run_on

from cca_hil.errors import AgentLinkError, ProfileError, TransportError
from cca_hil.fvp import FvpConfig, load_session, start_session, stop_session
from cca_hil.profiles import build_target, load_profile
from cca_hil.results import Outcome, RunResult
from cca_hil.sequences import Sequence
from cca_hil.shadow import compat_rows
from cca_hil.targets.base import Capability
from cca_hil.targets.fvp import FvpTarget


@pytest.fixture
def standin(tmp_path: Path) -> list[str]:
    """Overrides that point the bundled FVP profiles at the stand-in and stand-in firmware images."""
    images = tmp_path / "images"
    images.mkdir()
    (images / "bl1.bin").write_bytes(b"\0" * 20 * 1024)
    (images / "fip.bin").write_bytes(b"\0" * 900 * 1024)
    return [
        f"fvp.binary={STANDIN}",
        f"fvp.images_dir={images}",
        "fvp.timeouts={version: 30, ports: 30, connect: 5, shutdown: 5, kill: 5}",
    ]


def fvp(overrides: list[str], run_dir: Path, profile: str = "fvp-base-rme") -> FvpTarget:
    """An FVP target of a bundled profile (not opened)."""
    target = build_target(load_profile(profile, overrides), run_dir=run_dir)
    assert isinstance(target, FvpTarget)
    return target


def group_gone(pgid: int) -> bool:
    """True when no process of group ``pgid`` is left."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.slow
def test_suite_and_samples_through_the_launched_model_equal_the_model(
    standin: list[str], sequences: list[Sequence], tfrmm_model_result: RunResult, tmp_path: Path
) -> None:
    # The stand-in answers as the TF-RMM an FVP stack runs (rmm-abi.md §12): compare with the
    # model answering the same way.
    target = fvp(standin, tmp_path / "run")
    result = run_on(target, [s.judged_by(compat_rows("tf-rmm-1.0")) for s in sequences])
    counts = assert_same_results(result, tfrmm_model_result, AGENT_CAPS)
    print(f"\nfvp stand-in vs model: {counts}")
    assert result.exit_code() == 0
    run = tmp_path / "run"
    for log in ("fvp.cmdline", "fvp.stdout.log", "uart0.log", "uart1.log", "uart3.log", "console.log"):
        assert (run / log).stat().st_size > 0, log
    # TF-A's boot text before the banner is console; the other UARTs keep their own text.
    assert (run / "console.log").read_bytes().startswith(b"NOTICE:  Booting Trusted Firmware")
    assert b"BL31" in (run / "uart1.log").read_bytes()


def test_info_shows_the_model_release_ports_and_agent(standin: list[str], tmp_path: Path) -> None:
    with fvp(standin, tmp_path) as target:
        info = target.info()
        assert target.process is not None
        pid = target.process.pid
    assert info.kind == "fvp"
    assert info.capabilities == AGENT_CAPS
    assert info.rmm_version == 0x10000
    assert info.facts["FVP version"] == "11.27 build 19"
    assert info.facts["agent UART"] == "uart0"
    assert info.facts["FVP"].endswith(f"(pid {pid}, started by this run)")
    ports = dict(item.split("=") for item in info.facts["FVP ports"].split(", "))
    assert set(ports) == {f"terminal_{n}" for n in range(4)}
    assert group_gone(pid)


def test_mec_profile_offers_mec(standin: list[str], tmp_path: Path) -> None:
    with fvp(standin, tmp_path, "fvp-base-rme-mec") as target:
        assert target.has(Capability.MEC)


@pytest.mark.slow
def test_model_crash_mid_run_is_a_transport_error_with_logs_kept_and_nothing_left(
    standin: list[str], sequences: list[Sequence], tmp_path: Path
) -> None:
    crash = ["fvp.params.standin.crash_after=3.0", "fvp.params.standin.crash_signal=11"]
    target = fvp([*standin, *crash, "link.timeouts={request: 1, bulk: 2}"], tmp_path)
    with target:
        assert target.process is not None
        pgid = target.process.pgid
        from cca_hil.sequences import Runner

        # Longer than the three seconds the model lives, on any machine.
        result = Runner(target).run_all(sequences * 5, command="conformance")
        with pytest.raises(AgentLinkError, match="model killed by SIGSEGV"):
            target.smc(0xC400_0150, 0x10000)
    assert "model killed by SIGSEGV" in result.error
    assert result.exit_code() == 3
    assert any(step.outcome is Outcome.ERROR for seq in result.sequences for step in seq.steps)
    assert len(result.sequences) < len(sequences) * 5
    assert group_gone(pgid)
    assert "simulated model crash" in (tmp_path / "fvp.stderr.log").read_text()
    assert (tmp_path / "console.log").read_bytes().startswith(b"NOTICE:  Booting Trusted Firmware")
    assert (tmp_path / "uart0.log").stat().st_size > 0
    assert "tx SMC" in (tmp_path / "link.trace.log").read_text()


def test_a_model_without_an_agent_times_out_waiting_for_the_banner(
    standin: list[str], tmp_path: Path
) -> None:
    target = fvp([*standin, "fvp.params.standin.agent=0", "link.timeouts={boot: 2}"], tmp_path)
    with pytest.raises(TransportError, match=r"did not appear within 2 s"):
        target.open()
    assert target.process is None
    assert b"Booting Trusted Firmware" in (tmp_path / "uart0.log").read_bytes()


def test_a_session_left_by_fvp_start_is_used_and_left_running(standin: list[str], tmp_path: Path) -> None:
    profile = load_profile("fvp-base-rme", standin)
    config = FvpConfig.from_section(dict(profile.params), where=profile.source)
    runs = tmp_path / "runs"
    state = runs / "fvp-session.json"
    session = start_session(config, run_dir=runs / "fvp-session", state_path=state)
    try:
        # A run folder of the runs root finds the state file in its parent.
        with fvp(standin, runs / "20260101T000000Z-run") as target:
            assert target.process is None
            assert target.smc(0xC400_0150, 0x10000)[:3] == (0, 0x10000, 0x10000)
            facts = target.info().facts
        assert facts["FVP"].endswith(f"(pid {session.pid}, session from 'fvp start')")
        assert load_session(state).is_running()
        # The agent's session survives the host: the next command finds the same board.
        with fvp(standin, runs / "20260101T000001Z-run") as again:
            assert again.info().facts["agent boot id"] == facts["agent boot id"]
    finally:
        assert stop_session(state)
    # Spawned by this process, the model leaves a zombie for us to reap (init would, after a real
    # `cca-hil fvp start`), unless stop_session reaped it already.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(session.pid, 0)
    assert group_gone(session.pgid)


def test_a_dead_session_is_ignored_and_a_model_launched(standin: list[str], tmp_path: Path) -> None:
    profile = load_profile("fvp-base-rme", standin)
    config = FvpConfig.from_section(dict(profile.params), where=profile.source)
    state = tmp_path / "fvp-session.json"
    session = start_session(config, run_dir=tmp_path / "fvp-session", state_path=state)
    os.killpg(session.pgid, 9)
    os.waitpid(session.pid, 0)  # our child (spawned here): reap it, as init would once we exit
    assert not load_session(state).is_running()
    with fvp(standin, tmp_path) as target:
        assert target.process is not None and target.process.pid != session.pid


def test_link_section_is_validated(standin: list[str], tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r"link.noise: noise parameter 'loud'"):
        fvp([*standin, "link.noise=loud"], tmp_path)
    with pytest.raises(ProfileError, match=r"unknown key 'fvp.link.retry'"):
        load_profile("fvp-base-rme", ["fvp.link.retry=3"])
