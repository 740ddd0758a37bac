"""A test-side Host for the model RMM: allocates NS granules, writes structures, issues RMI calls."""

from __future__ import annotations

from dataclasses import dataclass, replace

from cca_hil.arch.rmi import GRANULE_SIZE, RmiStatus, unpack_return
from cca_hil.arch.rmi_1_0 import RMI_1_0
from cca_hil.arch.structs import RealmParams, RecParams, RecRun
from cca_hil.model.machine import Machine
from cca_hil.model.platform import PlatformConfig, QuirkMode

Regs = tuple[int, int, int, int, int]
POOL = 0x9000_0000


@dataclass(frozen=True)
class RealmHandle:
    """A Realm the Host built: its RD and its starting RTTs."""

    rd: int
    rtt_base: int
    level_start: int
    s2sz: int


class Host:
    """Drives a :class:`Machine` the way a Normal-world Host does, with fresh granules for every use."""

    def __init__(
        self, quirks: QuirkMode = "spec", *, platform: PlatformConfig | None = None, **rmm: int
    ) -> None:
        base = platform or PlatformConfig()
        self.machine = Machine(replace(base, rmm=replace(base.rmm, quirks=quirks, **rmm)))
        self.rmm = self.machine.rmm
        self.names = base.platform_names()
        self._next = POOL
        self._vmid = 1

    # -- granules ------------------------------------------------------------

    def ns(self, count: int = 1) -> int:
        """``count`` contiguous fresh NS granules; the address of the first."""
        addr = self._next
        self._next += count * GRANULE_SIZE
        return addr

    def ns_aligned(self, alignment: int) -> int:
        """One fresh NS granule aligned to ``alignment``."""
        self._next = (self._next + alignment - 1) & ~(alignment - 1)
        return self.ns()

    def delegated(self, count: int = 1, *, alignment: int = GRANULE_SIZE) -> int:
        """``count`` contiguous fresh granules, delegated; the address of the first."""
        self._next = (self._next + alignment - 1) & ~(alignment - 1)
        first = self.ns(count)
        for i in range(count):
            self.ok("granule_delegate", addr=first + i * GRANULE_SIZE)
        return first

    def write(self, pa: int, data: bytes) -> None:
        """Write Host memory (NS)."""
        self.machine.ns_write(pa, data)

    def struct(self, value: RealmParams | RecParams | RecRun) -> int:
        """A fresh NS granule holding ``value``; its address."""
        addr = self.ns()
        self.write(addr, value.pack())
        return addr

    # -- calls ---------------------------------------------------------------

    def call(self, command: str, **args: int) -> Regs:
        """One RMI call by the spec's input names (``params`` for ``params_ptr`` and so on)."""
        cmd = RMI_1_0.by_name[command]
        regs = [0] * 6
        for name, value in args.items():
            regs[cmd.input(name).reg - 1] = value & 0xFFFF_FFFF_FFFF_FFFF
        return self.machine.smc(cmd.fid, *regs)

    def ok(self, command: str, **args: int) -> Regs:
        """A call that must succeed."""
        regs = self.call(command, **args)
        assert regs[0] == RmiStatus.SUCCESS, f"{command} failed: {regs[0]:#x} ({self.rmm.last_condition})"
        return regs

    def fails(self, regs: Regs, status: RmiStatus, condition: str, index: int = 0) -> None:
        """Assert that the last call failed with ``status``/``index`` and reported ``condition``."""
        assert unpack_return(regs[0]) == (status, index), (
            f"got {regs[0]:#x} ({self.rmm.last_condition}), want {status.name} index {index} ({condition})"
        )
        assert regs[0] >> 16 == 0
        assert self.rmm.last_condition == condition

    # -- building blocks -----------------------------------------------------

    def realm_params(self, **fields: int) -> int:
        """An NS granule with RmiRealmParams (sensible defaults, unique VMID) for a fresh start RTT."""
        self._vmid += 1
        values: dict[str, int] = {
            "s2sz": 40,
            "num_bps": 1,
            "num_wps": 1,
            "vmid": self._vmid,
            "rtt_level_start": 0,
            "rtt_num_start": 1,
        }
        values.update(fields)
        if "rtt_base" not in values:
            values["rtt_base"] = self.delegated(values["rtt_num_start"], alignment=0x10000)
        return self.struct(RealmParams(**values))  # type: ignore[arg-type]

    def realm(self, **fields: int) -> RealmHandle:
        """A NEW Realm built from :meth:`realm_params` fields."""
        params = self.realm_params(**fields)
        decoded = RealmParams.unpack(self.machine.memory.read_granule(params))
        rd = self.delegated()
        self.ok("realm_create", rd=rd, params=params)
        return RealmHandle(rd, decoded.rtt_base, decoded.rtt_level_start, decoded.s2sz)

    def rtts(self, realm: RealmHandle, ipa: int, level: int) -> list[int]:
        """Create the RTTs from below the starting level down to ``level`` covering ``ipa``."""
        made = []
        for lvl in range(realm.level_start + 1, level + 1):
            size = 1 << (12 + 9 * (4 - lvl))
            rtt = self.delegated()
            regs = self.call("rtt_create", rd=realm.rd, rtt=rtt, ipa=ipa & ~(size - 1), level=lvl)
            if regs[0] == RmiStatus.SUCCESS:
                made.append(rtt)
        return made

    def rec_params(self, *, mpidr: int = 0, runnable: bool = True, pc: int = 0, **fields: int) -> int:
        """An NS granule with RmiRecParams and 16 fresh delegated aux granules."""
        num_aux = fields.pop("num_aux", 16)
        aux = tuple(self.delegated() for _ in range(min(num_aux, 16)))
        params = RecParams(flags=int(runnable), mpidr=mpidr, pc=pc, num_aux=num_aux, aux=aux, **fields)
        return self.struct(params)

    def rec(self, realm: RealmHandle, *, mpidr: int = 0, runnable: bool = True, pc: int = 0) -> int:
        """A REC of ``realm``."""
        rec = self.delegated()
        self.ok(
            "rec_create", rd=realm.rd, rec=rec, params=self.rec_params(mpidr=mpidr, runnable=runnable, pc=pc)
        )
        return rec

    def data(self, realm: RealmHandle, ipa: int, content: bytes = b"", *, measure: bool = False) -> int:
        """A DATA granule at ``ipa`` (RTTs down to level 3 created as needed)."""
        self.rtts(realm, ipa, 3)
        src = self.ns()
        if content:
            self.write(src, content)
        data = self.delegated()
        self.ok("data_create", rd=realm.rd, data=data, ipa=ipa, src=src, flags=int(measure))
        return data

    def read_entry(self, realm: RealmHandle, ipa: int, level: int) -> Regs:
        """RMI_RTT_READ_ENTRY that must succeed."""
        return self.ok("rtt_read_entry", rd=realm.rd, ipa=ipa, level=level)
