"""A running realm for the realm-execution tests: built by :class:`rmm_host.Host`, driven step by step."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from rmm_host import Host, RealmHandle

from cca_hil.arch.rmi import GRANULE_SIZE
from cca_hil.arch.rsi_1_0 import RSI_1_0, wide_to_registers
from cca_hil.arch.structs import REC_RUN_EXIT_OFFSET, RecEnter, RecExit
from cca_hil.model.realm import Rec
from cca_hil.model.realm_exec import Action, RealmStep, SmcCall

Regs = tuple[int, ...]
RAM_TOP = 0x8000
"""RIPAS RAM over [0, RAM_TOP); DATA pages at 0 .. pages * 4 KiB."""


@dataclass
class Recorder:
    """What the realm payload reported for one action."""

    started: bool = False
    registers: tuple[int, ...] | None = None

    def start(self) -> None:
        self.started = True

    def complete(self, registers: Iterable[int]) -> None:
        self.started = True
        self.registers = tuple(registers)

    def seen(self) -> tuple[int, ...] | None:
        """The registers observed so far (a call, so that type checkers do not carry old narrowing)."""
        return self.registers

    @property
    def x0(self) -> int:
        assert self.registers is not None, "the realm saw no result"
        return self.registers[0]


@dataclass
class RunningRealm:
    """An ACTIVE realm with RECs, its DATA pages and a run granule per REC."""

    host: Host
    realm: RealmHandle
    recs: list[int]
    data: dict[int, int] = field(default_factory=dict)
    """DATA granule by IPA."""
    runs: dict[int, int] = field(default_factory=dict)

    def rec(self, index: int = 0) -> Rec:
        return self.host.rmm.rec_at(self.recs[index])

    def enter(
        self, *steps: RealmStep | Action, flags: int = 0, gprs: Iterable[int] = (), rec: int = 0
    ) -> tuple[Regs, RecExit, list[Recorder]]:
        """REC entry with ``steps`` staged: the RMI registers, the REC exit, and a recorder per step."""
        addr = self.recs[rec]
        run = self.runs.setdefault(addr, self.host.ns())
        values = tuple(gprs) + (0,) * (31 - len(tuple(gprs)))
        self.host.write(run, RecEnter(flags=flags, gprs=values).pack())
        recorders: list[Recorder] = []
        actions = []
        for step in steps:
            if isinstance(step, Action):
                actions.append(step)
                continue
            recorder = Recorder()
            recorders.append(recorder)
            actions.append(Action(step, recorder))
        self.host.rmm.realm_exec.stage(addr, actions)
        regs = self.host.call("rec_enter", rec=addr, run=run)
        raw = self.host.machine.memory.read(run + REC_RUN_EXIT_OFFSET, 0x800)
        return regs, RecExit.unpack(raw), recorders

    def read(self, ipa: int, size: int) -> bytes:
        """What the realm holds at ``ipa`` (a DATA page of this realm)."""
        page = ipa & ~(GRANULE_SIZE - 1)
        # Through the RMM's view: a realm granule is read with the realm's own encryption context.
        return self.host.rmm.memory.read(self.data[page] + ipa - page, size)


def rsi(name: str, **args: int | bytes) -> SmcCall:
    """An RSI call with its inputs in their registers (64-byte values as bytes)."""
    command = RSI_1_0.by_name[name]
    registers: dict[int, int] = {}
    for param in command.inputs:
        value = args.get(param.name, 0)
        if param.count > 1:
            data = value if isinstance(value, bytes) else int(value).to_bytes(8, "little")
            for i, reg in enumerate(wide_to_registers(data, param.count)):
                registers[param.reg + i] = reg
        else:
            assert isinstance(value, int)
            registers[param.reg] = value
    top = max(registers, default=0)
    return SmcCall(command.fid, tuple(registers.get(i, 0) for i in range(1, top + 1)))


def running_realm(host: Host, *, pages: int = 4, recs: int = 1, **realm_fields: int) -> RunningRealm:
    """An ACTIVE realm: RTTs to level 3 at IPA 0, RIPAS RAM below RAM_TOP, ``pages`` DATA pages, RECs.

    REC 0 is runnable; the others are not (PSCI_CPU_ON targets).
    """
    realm = host.realm(**realm_fields)
    host.rtts(realm, 0, 3)
    host.ok("rtt_init_ripas", rd=realm.rd, base=0, top=RAM_TOP)
    data = {i * GRANULE_SIZE: host.data(realm, i * GRANULE_SIZE) for i in range(pages)}
    made = [host.rec(realm, mpidr=i, runnable=i == 0) for i in range(recs)]
    host.ok("realm_activate", rd=realm.rd)
    return RunningRealm(host, realm, made, data)
