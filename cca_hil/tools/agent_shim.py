"""The host build of the C agent on the model: its pty is the board's UART, the model is its hardware.

``tools/agent`` builds the agent's protocol core natively (``make -C tools/agent host``) with a
port that, instead of issuing SMCs and loads and stores, asks this process over a socket
(``tools/agent/src/host/shim.h`` is the wire format). This process owns the model, answers
those requests on it, counts every request the agent says it executes, and plays the realm
payload: the actions the agent staged in the shared page run on the model's realm, and what
the realm began and observed is written back into the page, as the payload does on a target.

Run as a program (``python -m cca_hil.tools.agent_shim``, the ``agent-host`` profile's
``launch:``) it prints the pty's path as its first line on stdout and serves until SIGTERM or
SIGINT, like ``sim_board``; on the way out it reports on stderr how many requests ran and
how many ran more than once (always 0 unless at-most-once is broken).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import tty
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cca_hil.agent.emulator import default_caps, realm_step
from cca_hil.agent.protocol import (
    MAX_DESCRIPTION,
    U64,
    InfoReply,
    Reader,
    RealmAction,
    encode_regs,
    uvarint,
)
from cca_hil.arch.rmi import GRANULE_SIZE
from cca_hil.arch.rmi_1_0 import RMI_1_0
from cca_hil.errors import CcaHilError, GranuleProtectionFault, InputError
from cca_hil.model.machine import DFSC_GPF_ON_ACCESS, EC_DATA_ABORT_SAME_EL, Machine, data_abort_esr
from cca_hil.model.realm import Rec
from cca_hil.model.realm_exec import Action as RealmExecAction
from cca_hil.model.realm_exec import Fault as RealmExecFault
from cca_hil.targets.base import AccessResult, Fault
from cca_hil.tools._signals import stop_on_signals

AGENT_NAME = "cca-hil agent 1.0 (host build, model shim)"
BINARY_ENV = "CCA_HIL_AGENT_HOST"
"""Environment variable naming the host-built agent, where it is not in this source tree."""
EXIT_USAGE = 2
EXIT_TARGET = 3

REC_ENTER_FID = RMI_1_0["rec_enter"].fid
SMC_REGS = 18

# tools/agent/src/host/shim.h
OP_PLATFORM = 1
OP_SMC = 2
OP_READ = 3
OP_WRITE = 4
OP_FILL = 5
OP_ACCESS = 6
OP_REALM = 7
OP_EXECUTING = 8

# tools/agent/src/core/realm.h: struct realm_page
PAGE_SIZE = 8192
PAGE_HEADER = struct.Struct("<8I")
PAGE_MAGIC = 0x5241_4343
ACTIONS_OFFSET = PAGE_HEADER.size
ACTIONS_MAX = 4064
OBS_OFFSET = ACTIONS_OFFSET + ACTIONS_MAX
OBS_MAX = 4000


class ShimProtocolError(CcaHilError):
    """The agent sent the shim something that does not follow tools/agent/src/host/shim.h."""


def default_binary() -> Path:
    """Where ``make -C tools/agent host`` puts the agent, in this source tree (or ``$CCA_HIL_AGENT_HOST``)."""
    named = os.environ.get(BINARY_ENV)
    if named:
        return Path(named)
    return Path(__file__).resolve().parents[2] / "tools" / "agent" / "build" / "host" / "cca-hil-agent-host"


def _fault_record(fault: Fault) -> bytes:
    text = fault.description.encode()[:MAX_DESCRIPTION]
    head = struct.pack("<BBQQB", 1, fault.exception_class & 0x3F, fault.esr & U64, fault.far & U64, fault.gpf)
    return head + bytes((len(text),)) + text


def _gpf(exc: GranuleProtectionFault) -> Fault:
    """A GPF on a bulk NS access as the emulator reports it (EC 0x25, DFSC GPF on access)."""
    esr = data_abort_esr(DFSC_GPF_ON_ACCESS, write=exc.write)
    return Fault(EC_DATA_ABORT_SAME_EL, esr, exc.pa, gpf=True, description="granule protection fault")


class _PageObserver:
    """Watches one realm action for the page: whether the realm began it, what it observed.

    Like the emulator's observer: an action whose result reaches the realm during a later
    entry (a Host call, a RIPAS change, PSCI) reports there as index 0.
    """

    __slots__ = ("_journal", "action", "index", "started")

    def __init__(self, index: int, action: RealmAction, journal: list[tuple[int, tuple[int, ...]]]) -> None:
        self.index = index
        self.action = action
        self.started = False
        self._journal = journal

    def rebind(self, index: int, journal: list[tuple[int, tuple[int, ...]]]) -> None:
        """Report into another entry's page, as its action ``index``."""
        self.index = index
        self._journal = journal

    def start(self) -> None:
        """The realm performed the action."""
        self.started = True

    def complete(self, registers: Iterable[int]) -> None:
        """The realm observed the outcome."""
        self._journal.append((self.index, tuple(r & U64 for r in registers)))


@dataclass
class ModelShim:
    """Executes the host-built agent's SMCs, memory accesses and realm entries on a model machine."""

    machine: Machine
    executions: Counter[tuple[int, int]] = field(default_factory=Counter)
    """Requests the agent executed, per (session, sequence number): above one breaks at-most-once."""
    smcs: int = 0
    name: str = AGENT_NAME

    @property
    def executed(self) -> int:
        """Requests executed (HELLO not counted)."""
        return sum(self.executions.values())

    def duplicates(self) -> dict[tuple[int, int], int]:
        """(session, seq) pairs executed more than once: empty unless at-most-once was broken."""
        return {key: count for key, count in self.executions.items() if count > 1}

    def serve(self, sock: socket.socket) -> None:
        """Answer the agent until it closes its end (blocking)."""
        while True:
            head = _recv_exactly(sock, 5)
            if head is None:
                return
            op, size = head[0], int.from_bytes(head[1:], "little")
            body = _recv_exactly(sock, size) if size else b""
            if body is None:
                return
            answer = self.answer(op, body)
            sock.sendall(len(answer).to_bytes(4, "little") + answer)

    def answer(self, op: int, body: bytes) -> bytes:
        """The answer to one request of the agent's port."""
        machine = self.machine
        if op == OP_SMC:
            regs = struct.unpack(f"<{SMC_REGS}Q", body)
            self.smcs += 1
            out = tuple(machine.smc(regs[0], *regs[1:]))
            return struct.pack(f"<{SMC_REGS}Q", *((out + (0,) * SMC_REGS)[:SMC_REGS]))
        if op == OP_READ:
            pa, size = struct.unpack("<QI", body)
            try:
                return b"\x00" + machine.ns_read(pa, size)
            except GranuleProtectionFault as exc:
                return _fault_record(_gpf(exc))
        if op == OP_WRITE:
            try:
                machine.ns_write(int.from_bytes(body[:8], "little"), body[8:])
            except GranuleProtectionFault as exc:
                return _fault_record(_gpf(exc))
            return b"\x00"
        if op == OP_FILL:
            pa, size, plen = struct.unpack_from("<QQB", body)
            pattern = body[17 : 17 + plen]
            try:
                machine.ns_write(pa, (pattern * (size // plen + 1))[:size])
            except GranuleProtectionFault as exc:
                return _fault_record(_gpf(exc))
            return b"\x00"
        if op == OP_ACCESS:
            pa, store, size_log2, value = struct.unpack("<QBBQ", body)
            result: AccessResult = machine.ns_access(pa, "write" if store else "read", 1 << size_log2, value)
            if result.fault is not None:
                return _fault_record(result.fault)
            return b"\x00" + struct.pack("<Q", (result.value or 0) & U64)
        if op == OP_REALM:
            return self._realm(body)
        if op == OP_EXECUTING:
            session, seq = struct.unpack("<IH", body)
            self.executions[(session, seq)] += 1
            return b""
        if op == OP_PLATFORM:
            return struct.pack("<QQ", int(default_caps(machine)), 1) + self._info().encode()
        raise ShimProtocolError(f"agent shim: unknown request {op}")

    def _info(self) -> InfoReply:
        config = self.machine.config
        return InfoReply(
            pa_bits=config.pa_bits,
            regions=config.regions,
            granule_pool=config.granule_pool,
            platform=tuple(config.platform_names().items()),
            facts=(("agent", self.name), ("model seed", str(config.seed)), ("RMM quirks", config.rmm.quirks)),
        )

    def _realm(self, body: bytes) -> bytes:
        """RMI_REC_ENTER with the model's realm performing the page's actions; X0..X4 and the page back."""
        rec_pa, run_pa = struct.unpack_from("<QQ", body)
        page = bytearray(body[16:])
        if len(page) != PAGE_SIZE:
            raise ShimProtocolError(f"realm page of {len(page)} bytes, not {PAGE_SIZE}")
        magic, generation, count, length, *_ = PAGE_HEADER.unpack_from(page)
        if magic != PAGE_MAGIC or length > ACTIONS_MAX:
            raise ShimProtocolError("realm page header is not the agent's")
        reader = Reader(bytes(page[ACTIONS_OFFSET : ACTIONS_OFFSET + length]))
        actions = [RealmAction.decode(reader) for _ in range(count)]
        reader.end()

        rmm = self.machine.rmm
        rec = rmm.recs.get(rec_pa // GRANULE_SIZE)
        journal: list[tuple[int, tuple[int, ...]]] = []
        observers: list[_PageObserver] = []
        if rec is not None and rec.addr == rec_pa:
            observers = self._observers(rec, actions, journal)
            staged = [
                RealmExecAction(realm_step(action, rec.owner), observer)
                for observer, action in zip(observers, actions, strict=True)
            ]
            rmm.realm_exec.stage(rec_pa, staged)
            flight = rec.in_flight
            if flight is not None and isinstance(flight.observer, _PageObserver):
                flight.observer.rebind(0, journal)
        try:
            regs = tuple(self.machine.smc(REC_ENTER_FID, rec_pa, run_pa))
        finally:
            rmm.realm_exec.staged.pop(rec_pa, None)
        records = b"".join(
            uvarint(index) + bytes((len(registers),)) + encode_regs(registers, len(registers))
            for index, registers in journal
        )
        if len(records) > OBS_MAX:
            raise ShimProtocolError(f"realm observations of {len(records)} bytes overflow the shared page")
        started = sum(1 for o in observers if o.started)
        PAGE_HEADER.pack_into(
            page, 0, magic, generation, count, length, started, len(journal), len(records), generation
        )
        page[OBS_OFFSET : OBS_OFFSET + len(records)] = records
        return struct.pack("<5Q", *((regs + (0,) * 5)[:5])) + bytes(page)

    @staticmethod
    def _observers(
        rec: Rec, actions: Sequence[RealmAction], journal: list[tuple[int, tuple[int, ...]]]
    ) -> list[_PageObserver]:
        """One observer per action; an access the REC faulted on, staged again first, keeps its own."""
        out = []
        fault = rec.faulted
        faulted = fault.observer if isinstance(fault, RealmExecFault) else None
        for index, action in enumerate(actions, 1):
            if index == 1 and isinstance(faulted, _PageObserver) and faulted.action == action:
                faulted.rebind(index, journal)
                out.append(faulted)
            else:
                out.append(_PageObserver(index, action, journal))
        return out


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


class HostAgent:
    """The host-built C agent running on a pty, its shim serving it on a thread.

    ``path`` is the pty's slave: open it like a serial device (``AgentLink`` over pySerial or
    :class:`~cca_hil.agent.streams.FdStream`). ``close()`` stops the agent (bounded) and the shim.
    """

    def __init__(self, machine: Machine, *, binary: Path | None = None) -> None:
        self.binary = binary or default_binary()
        if not self.binary.is_file():
            raise InputError(
                f"host-built agent {self.binary} not found: build it with `make -C tools/agent host` "
                f"(or name it in ${BINARY_ENV})"
            )
        self.shim = ModelShim(machine)
        master, slave = os.openpty()
        try:
            tty.setraw(slave)
            self.path = os.ttyname(slave)
        finally:
            # With no slave open here the agent sees a hang-up until a host opens the path.
            os.close(slave)
        ours, theirs = socket.socketpair()
        try:
            self.process = subprocess.Popen(
                [str(self.binary), "--uart-fd", str(master), "--shim-fd", str(theirs.fileno())],
                pass_fds=(master, theirs.fileno()),
                start_new_session=True,
            )
        except OSError:
            os.close(master)
            ours.close()
            raise
        finally:
            theirs.close()
        os.close(master)
        self._sock = ours
        self._thread = threading.Thread(target=self._serve, name="agent-shim", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            self.shim.serve(self._sock)
        except (OSError, CcaHilError, struct.error, ValueError) as exc:
            sys.stderr.write(f"agent-shim: {exc}\n")
            # The agent cannot go on without its hardware: stop it, as a board would hang.
            self.process.kill()

    def close(self, timeout: float = 10.0) -> int | None:
        """Stop the agent (SIGTERM, then SIGKILL after ``timeout``) and the shim; the agent's status."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self._sock.close()
        self._thread.join(timeout)
        return self.process.returncode

    def __enter__(self) -> HostAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_machine(profile: str, overrides: Sequence[str]) -> Machine:
    """The machine a ``model``-kind profile boots (the shim's hardware)."""
    from cca_hil.errors import ProfileError
    from cca_hil.profiles import build_target, load_profile
    from cca_hil.targets.model import ModelTarget

    loaded = load_profile(profile, list(overrides))
    target = build_target(loaded)
    if not isinstance(target, ModelTarget):
        raise ProfileError(f"the shim's profile must be of kind 'model', not {loaded.kind!r}")
    return target.machine


def build_parser() -> argparse.ArgumentParser:
    """The command line of the shim."""
    parser = argparse.ArgumentParser(
        prog="agent-shim",
        description="The host-built C agent on a pty, with the cca-hil model as its hardware.",
    )
    parser.add_argument("--profile", default="model", help="model profile of the board (default: model)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="model override"
    )
    parser.add_argument("--seed", type=int, help="model seed (same as --set seed=N)")
    parser.add_argument(
        "--binary",
        type=Path,
        help=f"the host-built agent (default: tools/agent/build/host, or ${BINARY_ENV})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the host-built agent until SIGTERM/SIGINT; the exit status."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    try:
        agent = HostAgent(build_machine(args.profile, overrides), binary=args.binary)
    except CcaHilError as exc:
        sys.stderr.write(f"agent-shim: error: {exc}\n")
        return EXIT_USAGE
    stop = stop_on_signals()
    sys.stdout.write(agent.path + "\n")
    sys.stdout.flush()
    sys.stderr.write(f"agent-shim: pid {os.getpid()}, agent pid {agent.process.pid} on {agent.path}\n")
    while not stop.wait(0.2):
        if agent.process.poll() is not None:
            break
    status = agent.close()
    shim = agent.shim
    sys.stderr.write(
        f"agent-shim: {shim.executed} requests executed, {len(shim.duplicates())} executed more than once, "
        f"{shim.smcs} SMCs; agent exit status {status}\n"
    )
    if status not in (0, -signal.SIGTERM):
        return EXIT_TARGET
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
