"""AgentTarget: the target interface through the agent link, against the emulator on a real TCP port.

The target is a ``serial`` one on ``socket://127.0.0.1:PORT`` served by the agent
emulator's :class:`EmulatorServer` in this process: pySerial, the link, the
emulator and the model all run for real. Its answers are compared with a
:class:`ModelTarget` built from the same model configuration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from agent_target_support import assert_same_results

from cca_hil.agent.emulator import AgentEmulator, EmulatorServer
from cca_hil.agent.protocol import (
    AgentCaps,
    Frame,
    FrameDecoder,
    Hello,
    MsgType,
    RealmActionKind,
    RealmObservation,
    RealmRun,
    RealmRunReply,
)
from cca_hil.agent.protocol import RealmAction as WireAction
from cca_hil.agent.protocol import RealmRunReply as Reply
from cca_hil.arch.rmi_1_0 import RMI_1_0
from cca_hil.errors import CapabilityError, GranuleProtectionFault, ProfileError, TargetError
from cca_hil.model.machine import Machine
from cca_hil.profiles import build_target, load_profile
from cca_hil.seqformat import PSCI_FUNCTIONS, REALM_ACTION_KINDS, RSI_COMMANDS
from cca_hil.sequences import RealmAction, Runner, load_sequence
from cca_hil.targets.agent import AgentTarget, sysreg_encoding, wire_actions
from cca_hil.targets.base import Capability
from cca_hil.targets.model import ModelTarget

DELEGATE = RMI_1_0["granule_delegate"].fid
REC_ENTER = RMI_1_0["rec_enter"].fid
VERSION = RMI_1_0["version"].fid
GRANULE = 0x9000_0000

EVERY_ACTION = Path(__file__).parent / "data" / "realm-every-action.yaml"
"""A realm doing every action kind the sequence format has, with the exits each gives."""
WIRE_WFI = WireAction(RealmActionKind.WFI)
BASE_CAPS = AgentCaps.SMC | AgentCaps.MEMORY | AgentCaps.ACCESS | AgentCaps.BATCH | AgentCaps.LOG


class PayloadAgent(AgentEmulator):
    """An agent whose realm payload is scripted by the test: each REALM_RUN reply is given in advance.

    The emulator refuses realm actions (the model runs no payload yet); hardware will not. This is
    the device side of the protocol as a real agent answers it, so the host's bookkeeping can be
    driven through every case the protocol allows.
    """

    def __init__(self, replies: list[tuple[int, tuple[RealmObservation, ...]]], **kwargs: object) -> None:
        super().__init__(model_machine(), caps=BASE_CAPS | AgentCaps.REALM, **kwargs)  # type: ignore[arg-type]
        self.replies = replies
        self.requests: list[RealmRun] = []

    def _realm_run(self, frame: Frame, run: RealmRun) -> Frame:
        self.requests.append(run)
        regs = self.machine.smc(REC_ENTER, run.rec_pa, run.run_pa)
        started, observations = self.replies.pop(0)
        return Frame(MsgType.REALM_RUN_REPLY, frame.seq, Reply(tuple(regs), started, observations).encode())


Serve = Callable[..., AgentTarget]


def decode_frames(wire: bytes) -> list[Frame]:
    """The frames in bytes an agent wrote."""
    return [e for e in FrameDecoder(1 << 16).feed(wire) if isinstance(e, Frame)]


FAST = "    timeouts: {boot: 5, handshake: 0.3, request: 1, bulk: 2, gap: 0.02}\n"


def model_machine() -> Machine:
    """A machine configured exactly as the ``model`` profile's target builds it."""
    target = build_target(load_profile("model"))
    assert isinstance(target, ModelTarget)
    return target.machine


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    """Targets on emulators behind local TCP servers; everything is closed afterwards."""
    servers: list[EmulatorServer] = []
    targets: list[AgentTarget] = []

    def make(emulator: AgentEmulator | None = None, *, link: str = FAST) -> AgentTarget:
        server = EmulatorServer(emulator or AgentEmulator(model_machine(), boot_delay=0.2, gap=0.02))
        server.start()
        servers.append(server)
        profile = tmp_path / f"board{len(servers)}.yaml"
        profile.write_text(f"kind: serial\nserial:\n  url: {server.url}\n  link:\n" + link)
        target = build_target(load_profile(str(profile)), run_dir=tmp_path / f"run{len(servers)}")
        assert isinstance(target, AgentTarget)
        targets.append(target)
        return target

    yield make
    for target in targets:
        target.close()
    for server in servers:
        server.close()


@pytest.fixture
def model() -> Iterator[ModelTarget]:
    target = build_target(load_profile("model"))
    assert isinstance(target, ModelTarget)
    with target:
        yield target


def test_info_comes_from_the_handshake(serve: Serve, model: ModelTarget) -> None:
    target = serve()
    assert target.capabilities == frozenset()
    with target:
        info = target.info()
    want = model.info()
    assert info.regions == want.regions
    assert info.granule_pool == want.granule_pool
    assert info.pa_bits == want.pa_bits
    assert dict(info.platform) == dict(want.platform)
    assert info.rmm_version == want.rmm_version
    realms = {Capability.RME, Capability.MEMORY, Capability.ACCESS, Capability.CONSOLE, Capability.REALM_EXEC}
    # Realms obtain tokens where the model can sign them: the emulator says so as the model does.
    assert info.capabilities == realms | ({Capability.ATTESTATION} & model.capabilities)
    assert info.facts["agent"] == "cca-hil agent emulator"
    assert info.facts["link protocol"] == "1.0"
    assert info.facts["console log"] == str(target.console_log)


def test_operations_answer_as_the_model_does(serve: Serve, model: ModelTarget) -> None:
    with serve() as target:
        for t in (target, model):
            t.write(GRANULE, b"\xa5" * 64)
        assert target.read(GRANULE, 64) == model.read(GRANULE, 64) == b"\xa5" * 64
        assert target.access(GRANULE, "read", 8) == model.access(GRANULE, "read", 8)
        assert target.smc(DELEGATE, GRANULE) == model.smc(DELEGATE, GRANULE)
        assert target.smc(DELEGATE, GRANULE) == model.smc(DELEGATE, GRANULE)  # already delegated
        faulted = target.access(GRANULE, "write", 4, 1)
        assert faulted == model.access(GRANULE, "write", 4, 1)
        assert faulted.fault is not None and faulted.fault.gpf
        with pytest.raises(GranuleProtectionFault) as caught:
            target.read(GRANULE, 16)
        assert caught.value.pa == GRANULE
        assert target.smc(VERSION, 0x10000) == model.smc(VERSION, 0x10000)


def test_console_and_trace_logs_are_written_as_they_arrive(serve: Serve) -> None:
    target = serve()
    with target:
        # Written while the target is open: a crash now would lose nothing.
        console = target.console_log.read_bytes()
        assert console.startswith(b"NOTICE:  Booting Trusted Firmware")
        assert b"[agent info] session 1 opened" in console
        assert "tx INFO" in target.trace_log.read_text()


def test_link_settings_are_validated_where_they_enter(serve: Serve) -> None:
    with pytest.raises(ProfileError, match=r"link.timeouts: LinkTimeouts.request must be positive"):
        serve(link="    timeouts: {request: 0}\n")
    with pytest.raises(ProfileError, match=r"link.retries must be 0 or more"):
        serve(link=FAST + "    retries: -1\n")
    with pytest.raises(ProfileError, match=r"link.max_frame must be at least 256"):
        serve(link=FAST + "    max_frame: 64\n")
    with pytest.raises(ProfileError, match=r"unknown key 'serial.link.timeout'"):
        serve(link="    timeout: 3\n")


def test_operations_on_a_closed_target_are_refused(serve: Serve) -> None:
    target = serve()
    with pytest.raises(TargetError, match="is not open"):
        target.info()
    with target:
        pass
    with pytest.raises(TargetError, match="is not open"):
        target.read(GRANULE, 8)


def test_realm_enter_needs_an_agent_that_runs_realms(serve: Serve) -> None:
    emulator = AgentEmulator(model_machine(), caps=BASE_CAPS, boot_delay=0.2, gap=0.02)
    with serve(emulator) as target, pytest.raises(CapabilityError, match="realm_exec"):
        target.realm_enter(GRANULE, GRANULE + 0x1000)
    assert emulator.executed == 2  # INFO and RMI_VERSION: no REALM_RUN was sent


def test_realm_entry_without_a_rec_is_rmi_rec_enter_on_the_platform(serve: Serve, model: ModelTarget) -> None:
    with serve() as target:
        assert target.has(Capability.REALM_EXEC)
        # No realm there: the RMM's answer (an error) comes back as the model gives it, and the
        # realm began nothing.
        version = action("rsi", "version", req=0x10000)
        got = target.realm_enter(GRANULE, GRANULE + 0x1000, [version])
        assert got == model.realm_enter(GRANULE, GRANULE + 0x1000, [action("rsi", "version", req=0x10000)])
        assert got == model.smc(REC_ENTER, GRANULE, GRANULE + 0x1000) and got[0] != 0
        assert not version.started and version.result is None


def test_every_realm_action_kind_gives_the_models_results(serve: Serve, model: ModelTarget) -> None:
    sequence = load_sequence(EVERY_ACTION)
    kinds = {a.kind for step in sequence.steps for a in getattr(step, "realm", ())}
    assert kinds == set(REALM_ACTION_KINDS)
    want = Runner(model).run_all([sequence], command="conformance")
    assert want.exit_code() == 0, [s.message for q in want.sequences for s in q.steps if s.message]
    with serve() as target:
        got = Runner(target).run_all([sequence], command="conformance")
    counts = assert_same_results(got, want, target.capabilities)
    observed = [s for s in got.sequences[0].steps if s.op == "realm"]
    # Every action of the sequence was begun and observed by the end, on both.
    actions = sum(len(getattr(step, "realm", ())) for step in sequence.steps)
    assert counts["steps"] == len(want.sequences[0].steps) and len(observed) == actions
    # Observations keep the model's shapes: no register (hvc, wfi …), one (an emulated load),
    # four (most calls), nine (a measurement), X0 and 31 gprs (a Host call).
    assert {len(s.registers) for s in observed} == {0, 1, 4, 9, 32}


def test_every_realm_action_through_a_noisy_line_runs_once_and_gives_the_models_results(
    serve: Serve, model: ModelTarget
) -> None:
    sequence = load_sequence(EVERY_ACTION)
    want = Runner(model).run_all([sequence], command="conformance")
    emulator = AgentEmulator(model_machine(), boot_delay=0.2, gap=0.02)
    noisy = FAST + "    retries: 24\n    noise: ber=1e-4,drop=1e-3,dup=1e-3\n    noise_seed: 5\n"
    with serve(emulator, link=noisy) as target:
        got = Runner(target).run_all([sequence], command="conformance")
        assert target.link is not None
        stats = target.link.stats
    assert_same_results(got, want, target.capabilities)
    # Damage was met and answers were replayed, yet every request (REALM_RUN too) ran once.
    assert stats.resends > 0 and emulator.replays > 0
    assert emulator.duplicates() == {}


def test_a_replayed_realm_run_is_answered_from_the_cache_and_runs_once(model: ModelTarget) -> None:
    # A realm whose REC0 ended its last entry with an IRQ exit, on the model's machine.
    result = Runner(model).run_all([load_sequence(EVERY_ACTION)], command="conformance")
    assert result.exit_code() == 0
    machine = model.machine
    rec = next(r for r in machine.rmm.recs.values() if r.runnable)
    run_pa = machine.config.granule_pool[0][0] + machine.config.granule_pool[0][1] - 0x1000
    machine.ns_write(run_pa, bytes(0x1000))
    agent = AgentEmulator(machine)
    assert b"\x81" in agent.respond(Frame(MsgType.HELLO, 1, Hello().encode()))[:4]
    request = Frame(
        MsgType.REALM_RUN,
        2,
        RealmRun(rec.addr, run_pa, (WireAction(RealmActionKind.HOST_CALL, imm=0x42),)).encode(),
    )
    first = agent.respond(request)
    again = agent.respond(request)
    assert again == first and agent.replays == 1 and agent.executions[(agent.session, 2)] == 1
    reply = RealmRunReply.decode(decode_frames(first)[0].payload)
    assert reply.regs[0] == 0 and reply.started == 1 and reply.observations == ()
    # It ran once: the REC is still at its Host call exit, with the call in flight.
    answer = agent.respond(Frame(MsgType.REALM_RUN, 3, RealmRun(rec.addr, run_pa, (WIRE_WFI,)).encode()))
    reply = RealmRunReply.decode(decode_frames(answer)[0].payload)
    # Entering again delivers the Host call's answer (index 0: X0 and its 31 gprs), then the WFI runs.
    assert [(o.index, len(o.regs)) for o in reply.observations] == [(0, 32), (1, 0)] and reply.started == 1


def action(kind: str, name: str, **args: object) -> RealmAction:
    """A runner realm action as the sequence runner builds it."""
    fid = RSI_COMMANDS[name].fid if kind == "rsi" else PSCI_FUNCTIONS[name][0] if kind == "psci" else None
    return RealmAction(kind=kind, name=name, fid=fid, args=args)


def test_realm_actions_are_encoded_in_the_specs_register_order() -> None:
    value = bytes(range(64))
    wire = wire_actions(
        [
            action("rsi", "measurement_extend", value=value, size=64, index=1),
            action("psci", "cpu_on", context_id=3, target_cpu=1, entry_point_address=0x8000),
            action("mmio", "write", ipa=0x1000_0000, size=4, value=7),
            action("rsi", "host_call", imm=0xFEED, gprs={0: 1, 2: 3}),
            action("wfi", "wfi"),
        ]
    )
    words = tuple(int.from_bytes(value[i : i + 8], "little") for i in range(0, 64, 8))
    assert wire[0].kind is RealmActionKind.RSI and wire[0].fid == RSI_COMMANDS["measurement_extend"].fid
    assert wire[0].args == (1, 64, *words)
    assert wire[1].kind is RealmActionKind.PSCI and wire[1].args == (1, 0x8000, 3)
    # Every register a call loads is sent, trailing zeros too (the realm's other registers keep theirs).
    assert wire_actions([action("rsi", "measurement_read", index=0)])[0].args == (0,)
    assert wire_actions([action("rsi", "host_call", addr=0x1100)])[0].addr == 0x1100
    assert (wire[2].kind, wire[2].ipa, wire[2].size, wire[2].write, wire[2].value) == (
        RealmActionKind.MMIO,
        0x1000_0000,
        4,
        True,
        7,
    )
    assert (wire[3].kind, wire[3].imm, wire[3].addr, wire[3].args) == (
        RealmActionKind.HOST_CALL,
        0xFEED,
        None,
        (1, 0, 3),
    )
    assert wire[4].kind is RealmActionKind.WFI


def test_realm_observations_reach_the_actions_across_entries(serve: Serve) -> None:
    regs_a = (0, 0x10000, 0x10000) + (0,) * 15
    regs_b = (0, 0x8000, 1) + (0,) * 15
    agent = PayloadAgent(
        [
            # Entry 1: the realm makes call 1 (answered at once) and call 2, which exits to the host.
            (2, (RealmObservation(1, regs_a),)),
            # Entry 2: call 2 is answered (index 0), then call 3 is begun and answered.
            (1, (RealmObservation(0, regs_b), RealmObservation(1, regs_a))),
        ],
        boot_delay=0.2,
        gap=0.02,
    )
    first = action("rsi", "version", req=0x10000)
    exiting = action("rsi", "ipa_state_set", base=0, top=0x8000, ripas=1, flags=0)
    queued = action("rsi", "version", req=0x10000)
    with serve(agent) as target:
        target.realm_enter(GRANULE, GRANULE + 0x1000, [first, exiting, queued])
        assert first.started and first.result == regs_a
        assert exiting.started and exiting.result is None
        assert not queued.started
        target.realm_enter(GRANULE, GRANULE + 0x1000, [queued])
    assert exiting.result == regs_b
    assert queued.started and queued.result == regs_a
    assert [len(r.actions) for r in agent.requests] == [3, 1]


def test_system_registers_are_encoded_as_in_mrs() -> None:
    # MRS X0, ID_AA64PFR0_EL1 is 0xD5380400: bits [20:5] hold op0:op1:CRn:CRm:op2.
    assert sysreg_encoding("ID_AA64PFR0_EL1") == (0xD538_0400 >> 5) & 0xFFFF
    assert sysreg_encoding("id_aa64mmfr0_el1") == (0xD538_0700 >> 5) & 0xFFFF
    assert sysreg_encoding("S3_0_C0_C4_0") == sysreg_encoding("ID_AA64PFR0_EL1")
    wire = wire_actions([RealmAction(kind="sysreg", name="MIDR_EL1", fid=None, args={})])
    assert wire[0].kind is RealmActionKind.SYSREG and wire[0].fid == (0xD538_0000 >> 5) & 0xFFFF
    with pytest.raises(TargetError, match=r"system register 'FOO_EL1' has no known encoding"):
        sysreg_encoding("FOO_EL1")
    with pytest.raises(TargetError, match="no known encoding"):
        sysreg_encoding("S3_0_C16_C0_0")
