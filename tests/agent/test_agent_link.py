"""The host session against the emulated agent: the same answers as the model, and clear failures."""

from __future__ import annotations

import io
import threading

import pytest
from agent_support import FAST, Bench, BenchFactory

from cca_hil.agent.emulator import AgentEmulator, default_caps
from cca_hil.agent.errors import (
    AgentRestartedError,
    AgentTimeoutError,
    AgentVersionError,
    FrameTooLargeError,
)
from cca_hil.agent.link import AgentLink, LinkTimeouts
from cca_hil.agent.protocol import (
    AccessStep,
    AgentCaps,
    FillStep,
    ReadStep,
    RealmAction,
    RealmActionKind,
    SmcStep,
    Step,
    WriteStep,
)
from cca_hil.arch.rmi import SMCCC_NOT_SUPPORTED, RmiStatus
from cca_hil.arch.rmi_1_0 import RMI_1_0
from cca_hil.errors import AgentLinkError, CapabilityError, GranuleProtectionFault
from cca_hil.model.machine import Machine
from cca_hil.model.platform import PlatformConfig

DELEGATE = RMI_1_0["granule_delegate"].fid
UNDELEGATE = RMI_1_0["granule_undelegate"].fid
VERSION = RMI_1_0["version"].fid
POOL = 0x9000_0000


def _realm_granule() -> int:
    return PlatformConfig().platform_names()["realm_granule"]


def test_handshake_reports_version_limits_and_capabilities(bench: Bench) -> None:
    with bench.link() as link:
        hello = link.hello()
        assert (hello.major, hello.minor) == (1, 0)
        assert hello.caps & AgentCaps.SMC and hello.caps & AgentCaps.BATCH
        assert link.frame_limit == min(hello.max_frame, link.max_frame)
        assert hello.agent == "cca-hil agent emulator"
        signs = {"attestation"} if hello.caps & AgentCaps.ATTESTATION else set()
        assert link.capabilities() == {"memory", "access", "console", "realm_exec"} | signs


def test_info_reports_the_platform_the_agent_runs_on(bench: Bench) -> None:
    config = PlatformConfig()
    with bench.link() as link:
        info = link.info()
    assert info.regions == config.regions
    assert info.granule_pool == config.granule_pool
    assert dict(info.platform) == config.platform_names()
    assert info.pa_bits == config.pa_bits


def test_rmi_calls_return_what_the_model_returns(bench: Bench) -> None:
    oracle = Machine()
    calls = [
        (VERSION, (0x10000,)),
        (DELEGATE, (POOL,)),
        (DELEGATE, (POOL,)),  # second delegate of the same granule: ERROR_INPUT
        (UNDELEGATE, (POOL,)),
        (DELEGATE, (POOL + 1,)),  # misaligned
        (0xC400_01FF, ()),  # unknown FID
    ]
    with bench.link() as link:
        answers = [link.smc(fid, *args) for fid, args in calls]
    assert answers == [tuple(oracle.smc(fid, *args)) for fid, args in calls]
    assert answers[2][0] & 0xFF == RmiStatus.ERROR_INPUT
    assert answers[5][0] == SMCCC_NOT_SUPPORTED


def test_smc_returns_as_many_registers_as_asked(bench: Bench) -> None:
    with bench.link() as link:
        regs = link.smc(VERSION, 0x10000, results=18)
    assert len(regs) == 18
    assert regs[:3] == (0, 0x10000, 0x10000)
    assert regs[5:] == (0,) * 13


def test_memory_round_trip_larger_than_a_frame(bench: Bench) -> None:
    data = bytes(range(256)) * 64 + b"tail"
    with bench.link() as link:
        link.write(POOL + 3, data)
        assert link.read(POOL + 3, len(data)) == data
        link.fill(POOL, 0x100, b"\xa5\x5a")
        assert link.read(POOL, 6) == b"\xa5\x5a" * 3
    filled = (b"\xa5\x5a" * 0x80)[3:]
    assert bench.emulator.machine.ns_read(POOL + 3, len(data)) == filled + data[len(filled) :]


def test_memory_access_to_realm_memory_is_a_granule_protection_fault(bench: Bench) -> None:
    realm = _realm_granule()
    with bench.link() as link:
        with pytest.raises(GranuleProtectionFault) as read_fault:
            link.read(realm, 16)
        with pytest.raises(GranuleProtectionFault) as write_fault:
            link.write(realm, b"x")
    assert read_fault.value.pa == realm and not read_fault.value.write
    assert write_fault.value.write


def test_probing_access_returns_value_or_fault_like_the_model(bench: Bench) -> None:
    oracle = Machine()
    realm = _realm_granule()
    non_memory = PlatformConfig().non_memory
    with bench.link() as link:
        stored = link.access(POOL, "write", 4, 0xCAFE_F00D)
        loaded = link.access(POOL, "read", 4)
        gpf = link.access(realm, "read")
        nothing = link.access(non_memory, "write", 8, 1)
    oracle.ns_access(POOL, "write", 4, 0xCAFE_F00D)
    assert stored == oracle.ns_access(POOL, "write", 4, 0xCAFE_F00D)
    assert loaded.value == 0xCAFE_F00D
    assert gpf == oracle.ns_access(realm, "read")
    assert gpf.fault is not None and gpf.fault.gpf
    assert nothing == oracle.ns_access(non_memory, "write", 8, 1)


def test_batch_gives_the_same_results_as_single_calls(bench_factory: BenchFactory) -> None:
    steps: list[Step] = []
    for i in range(40):
        steps.append(SmcStep(DELEGATE, (POOL + i * 0x1000,)))
    steps += [SmcStep(DELEGATE, (POOL,)), SmcStep(VERSION, (0x10000,))]
    steps += [WriteStep(POOL + 0x100_0000, b"hello"), ReadStep(POOL + 0x100_0000, 5)]
    steps += [FillStep(POOL + 0x100_0000, 2, b"J"), AccessStep(POOL + 0x100_0000, size=2)]
    steps += [AccessStep(_realm_granule())]
    single = bench_factory()
    batched = bench_factory()
    with single.link() as one, batched.link() as many:
        expected = [_run_single(one, step) for step in steps]
        assert many.batch(steps) == expected
        assert many.stats.requests == 1


def _run_single(link: AgentLink, step: Step) -> object:
    match step:
        case SmcStep():
            return link.smc(step.fid, *step.args)
        case ReadStep():
            return link.read(step.pa, step.size)
        case WriteStep():
            return link.write(step.pa, step.data)
        case FillStep():
            return link.fill(step.pa, step.size, step.pattern)
        case AccessStep():
            return link.access(step.pa, "write" if step.write else "read", step.size, step.value)
    raise AssertionError(step)


def test_batch_larger_than_a_frame_is_split_and_keeps_order(bench: Bench) -> None:
    steps = [ReadStep(POOL + i * 0x1000, 512) for i in range(30)]
    with bench.link() as link:
        link.write(POOL + 29 * 0x1000, b"last")
        results = link.batch(steps)
        assert link.stats.requests > 2
    assert len(results) == 30
    assert results[-1] == b"last" + bytes(508)


def test_batch_stops_at_a_faulting_read_and_reports_the_fault(bench: Bench) -> None:
    realm = _realm_granule()
    steps: list[Step] = [SmcStep(DELEGATE, (POOL,)), ReadStep(realm, 8), SmcStep(DELEGATE, (POOL + 0x1000,))]
    with bench.link() as link:
        results = link.batch(steps)
        assert len(results) == 2
        fault = results[1]
        assert getattr(fault, "gpf", False) and getattr(fault, "far", None) == realm
        # The step after the fault did not run: the granule can still be delegated.
        assert link.smc(DELEGATE, POOL + 0x1000)[0] == 0


def test_write_step_larger_than_the_frame_limit_is_refused_before_sending(bench: Bench) -> None:
    with bench.link() as link, pytest.raises(FrameTooLargeError) as err:
        link.batch([WriteStep(POOL, bytes(link.frame_limit))])
    assert err.value.limit == link.frame_limit
    assert bench.emulator.executed == 0


def test_console_text_goes_to_the_log_file_as_it_arrives(bench_factory: BenchFactory) -> None:
    log = io.BytesIO()
    trace: list[str] = []
    bench = bench_factory()
    with bench.link(console=log, trace=trace.append) as link:
        link.smc(VERSION, 0x10000)
    assert any(line.startswith("tx SMC seq=2 attempt=1") for line in trace)
    text = log.getvalue()
    assert text.startswith(b"NOTICE:  Booting Trusted Firmware\r\n")
    assert b"cca-hil agent 1.0 (emulator) boot 1: ready\r\n" in text
    assert b"[agent info] session 1 opened\n" in text
    assert b"\x1e" not in text


def test_realm_run_needs_the_capability(bench_factory: BenchFactory) -> None:
    bench = bench_factory(AgentEmulator(caps=AgentCaps.SMC | AgentCaps.MEMORY, gap=0.02))
    with bench.link() as link, pytest.raises(CapabilityError):
        link.realm_run(POOL, POOL + 0x1000, [RealmAction(RealmActionKind.RSI, fid=0xC400_0190)])
    assert bench.emulator.executed == 0


def test_an_emulator_announces_realms_and_attestation_when_its_machine_runs_them(bench: Bench) -> None:
    with bench.link() as link:
        caps = link.hello().caps
    assert caps & AgentCaps.REALM
    assert caps == default_caps(bench.emulator.machine)


def test_realm_run_enters_the_rec_as_the_model_does(bench_factory: BenchFactory) -> None:
    oracle = Machine()
    rec_enter = RMI_1_0["rec_enter"].fid
    bench = bench_factory(AgentEmulator(caps=AgentCaps.SMC | AgentCaps.REALM, gap=0.02))
    with bench.link() as link:
        reply = link.realm_run(POOL, POOL + 0x1000)
    assert reply.regs == oracle.smc(rec_enter, POOL, POOL + 0x1000)
    assert reply.regs[0] != 0  # no REC there: the RMM refuses the entry
    assert (reply.started, reply.observations) == (0, ())


def test_actions_for_a_rec_that_cannot_be_entered_are_not_begun(bench: Bench) -> None:
    oracle = Machine()
    rec_enter = RMI_1_0["rec_enter"].fid
    actions = [
        RealmAction(RealmActionKind.RSI, fid=0xC400_0190, args=(0x10000,)),
        RealmAction(RealmActionKind.WFI),
    ]
    with bench.link() as link:
        reply = link.realm_run(POOL, POOL + 0x1000, actions)
    # No REC there: the RMM refuses the entry, so the realm began nothing and the host keeps the queue.
    assert reply.regs == oracle.smc(rec_enter, POOL, POOL + 0x1000) and reply.regs[0] != 0
    assert (reply.started, reply.observations) == (0, ())


def test_silent_agent_is_a_boot_timeout_error(bench_factory: BenchFactory) -> None:
    bench = bench_factory(start=False)
    bench.device.write(b"U-Boot 2024.01\r\nHit any key to stop autoboot\r\n")
    link = bench.link(timeouts=LinkTimeouts(boot=0.6, handshake=0.2, gap=0.02), name="silent")
    with pytest.raises(AgentTimeoutError) as err:
        link.open()
    # A failed open stops its reader: nothing is left running.
    assert "silent-reader" not in {thread.name for thread in threading.enumerate()}
    assert err.value.phase == "boot"
    assert "no agent answered HELLO within 0.6 s" in str(err.value)
    assert "Hit any key to stop autoboot" in str(err.value)
    assert isinstance(err.value, AgentLinkError)


def test_agent_dying_mid_call_is_a_request_timeout_and_ran_once(bench_factory: BenchFactory) -> None:
    bench = bench_factory(AgentEmulator(die_after=3, gap=0.02))
    link = bench.link(retries=2)
    with link:
        for i in range(3):
            assert link.smc(DELEGATE, POOL + i * 0x1000)[0] == 0
        with pytest.raises(AgentTimeoutError) as err:
            link.smc(DELEGATE, POOL + 0x3000)
    assert err.value.phase == "request" and err.value.attempts == 3
    assert "PANIC: agent" in str(err.value)
    assert bench.emulator.executed == 4
    assert not bench.emulator.duplicates()


def test_wrong_protocol_version_is_refused_at_handshake(bench_factory: BenchFactory) -> None:
    bench = bench_factory(AgentEmulator(version=(2, 3), gap=0.02))
    with pytest.raises(AgentVersionError) as err, bench.link():
        pass
    assert err.value.agent == (2, 3)
    assert "agent speaks link protocol 2.3, this host speaks 1.0" in str(err.value)
    assert bench.emulator.session == 0


def test_agent_reset_between_calls_is_reported_and_a_new_handshake_recovers(bench: Bench) -> None:
    with bench.link() as link:
        assert link.smc(DELEGATE, POOL)[0] == 0
        bench.emulator.reboot()
        with pytest.raises(AgentRestartedError, match="it was not executed"):
            link.smc(DELEGATE, POOL + 0x1000)
        assert link.smc(DELEGATE, POOL + 0x1000)[0] == 0
    assert bench.emulator.session == 2
    assert bench.emulator.executed == 2


def test_agent_that_boots_late_is_found_within_the_boot_phase(bench_factory: BenchFactory) -> None:
    bench = bench_factory(AgentEmulator(boot_delay=0.4, gap=0.02))
    with bench.link(timeouts=LinkTimeouts(boot=5.0, handshake=0.1, gap=0.02)) as link:
        assert link.smc(VERSION, 0x10000)[0] == 0
    assert bench.emulator.session == 1


def test_link_timeouts_must_be_positive() -> None:
    with pytest.raises(ValueError, match="request"):
        LinkTimeouts(request=0)
    assert FAST.request > 0
