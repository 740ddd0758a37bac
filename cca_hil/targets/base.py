"""The one interface every target offers (DESIGN.md "The target interface").

The client, the checks and the sequence runner only ever see a :class:`Target`.
What a target can do is data (:attr:`Target.capabilities`); an operation a target
lacks raises :class:`~cca_hil.errors.CapabilityError`, which callers turn into a
``skipped`` result with the reason.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, Self

from cca_hil.arch.pas import Pas
from cca_hil.errors import CapabilityError
from cca_hil.resource import Resource

if TYPE_CHECKING:
    from cca_hil.lease import Lease
    from cca_hil.profiles import Profile


class Capability:
    """Names of target capabilities (strings, so profiles and sequences can name them)."""

    RME = "rme"
    """RMI calls reach an RMM."""
    ACCESS = "access"
    """Single probing loads/stores that report faults (GPT behaviour can be observed)."""
    MEMORY = "memory"
    """Non-secure memory read/write by the agent."""
    REALM_EXEC = "realm_exec"
    """Realms run: REC entry with a realm payload executing RSI steps."""
    GPT_READ = "gpt_read"
    """The GPT and GPC registers can be read (model, debug server or probe)."""
    MEC = "mec"
    """FEAT_MEC: per-realm memory encryption contexts."""
    ENCRYPTION = "encryption"
    """Per-PAS memory encryption is observable."""
    LOAD = "load"
    RESET = "reset"
    POWER = "power"
    CONSOLE = "console"
    ATTESTATION = "attestation"

    ALL: ClassVar[tuple[str, ...]] = (
        RME,
        ACCESS,
        MEMORY,
        REALM_EXEC,
        GPT_READ,
        MEC,
        ENCRYPTION,
        LOAD,
        RESET,
        POWER,
        CONSOLE,
        ATTESTATION,
    )


@dataclass(frozen=True, slots=True)
class MemoryRegion:
    """A physical address range of the platform and the PAS its GPT entries start with."""

    name: str
    base: int
    size: int
    kind: Literal["dram", "device", "rom", "sram"]
    pas: Pas

    @property
    def end(self) -> int:
        """First address past the region."""
        return self.base + self.size

    def __contains__(self, pa: object) -> bool:
        return isinstance(pa, int) and self.base <= pa < self.base + self.size


PLATFORM_NAMES = (
    "pa_limit",
    "ns_dram_base",
    "non_memory",
    "secure_granule",
    "root_granule",
    "realm_granule",
)
"""The ``platform.*`` names a sequence may use (DESIGN.md "Sequence files")."""


@dataclass(frozen=True)
class TargetInfo:
    """Platform facts a target reports: memory map, PA size, granule pool, RMM version, features."""

    name: str
    kind: str
    pa_bits: int
    regions: tuple[MemoryRegion, ...]
    granule_pool: tuple[tuple[int, int], ...]
    """(base, size) ranges of Non-secure DRAM the host may hand to the RMM."""
    rmm_version: int | None
    capabilities: frozenset[str]
    platform: Mapping[str, int]
    """Values of the ``platform.*`` names."""
    facts: Mapping[str, str] = field(default_factory=dict)
    """Further rows for ``cca-hil info`` (feature register fields, seeds, firmware versions)."""

    def region_of(self, pa: int) -> MemoryRegion | None:
        """The region holding ``pa``, or None for an address in no memory."""
        for region in self.regions:
            if pa in region:
                return region
        return None


@dataclass(frozen=True, slots=True)
class Fault:
    """A synchronous exception taken by a probing access (ESR/FAR as the agent saw them)."""

    exception_class: int
    esr: int
    far: int
    gpf: bool
    """True for a granule protection fault (GPCF or GPF at stage 1/2 walk or access)."""
    description: str = ""

    def describe(self) -> str:
        """One line for people: kind, EC, ESR, FAR."""
        kind = "granule protection fault" if self.gpf else "fault"
        extra = f" ({self.description})" if self.description else ""
        return f"{kind}{extra}: EC={self.exception_class:#x} ESR={self.esr:#x} FAR={self.far:#x}"


@dataclass(frozen=True, slots=True)
class AccessResult:
    """Outcome of one probing access: the data read (or written), or the fault taken."""

    value: int | None = None
    fault: Fault | None = None

    @property
    def ok(self) -> bool:
        """True when the access completed without a fault."""
        return self.fault is None


AccessOp = Literal["read", "write"]
PowerAction = Literal["on", "off", "cycle"]


class RealmActionLike(Protocol):
    """One thing a realm does in a REC entry, as a target receives it (DESIGN.md "Realm execution").

    ``kind`` is ``rsi``, ``psci``, ``smc``, ``mmio``, ``hvc``, ``wfi``, ``wfe``,
    ``sysreg``, ``irq``, ``fiq`` or ``serror``; ``args`` are resolved (ints,
    ``bytes`` for 64-byte values, ``{n: value}`` for gprs). The target calls
    ``start()`` when the realm performed the action and ``complete()`` with X0..
    (or the one register an access loaded) when the realm observed its result,
    passing the spec label of the RSI/PSCI failure condition the RMM found for
    this action when the target can see it (the model), else None.
    """

    @property
    def kind(self) -> str:
        """The action's kind."""
        ...

    @property
    def name(self) -> str:
        """RSI/PSCI function name, ``read``/``write`` for mmio, register name for sysreg."""
        ...

    @property
    def fid(self) -> int | None:
        """Function identifier of an SMC-based action."""
        ...

    @property
    def args(self) -> Mapping[str, Any]:
        """Resolved arguments by name."""
        ...

    def start(self) -> None:
        """The realm performed the action."""
        ...

    def complete(self, registers: Iterable[int], condition: str | None = None) -> None:
        """The realm observed the outcome (and the failure condition it met, where the target knows it)."""
        ...


class Target(Resource):
    """A thing cca-hil can drive: the built-in model, an FVP, QEMU, a board.

    Subclasses set :attr:`kind` and implement what their capabilities promise;
    the defaults here raise CapabilityError.
    """

    kind: ClassVar[str] = ""

    def __init__(self, *, profile: Profile, run_dir: Path | None = None) -> None:
        self.profile = profile
        self.run_dir = run_dir
        self._opened = False
        self.lease: Lease | None = None
        """The exclusive lease held on the target while it is open through ``with`` (docs/farm.md)."""

    @property
    def name(self) -> str:
        """The profile name this target was built from."""
        return self.profile.name

    @property
    @abc.abstractmethod
    def capabilities(self) -> frozenset[str]:
        """What this target can do (see :class:`Capability`)."""

    def has(self, capability: str) -> bool:
        """True when the target offers ``capability``."""
        return capability in self.capabilities

    def require(self, capability: str) -> None:
        """Raise CapabilityError unless the target offers ``capability``."""
        if capability not in self.capabilities:
            raise CapabilityError(capability, self.name)

    # -- lifecycle ---------------------------------------------------------

    def lease_key(self) -> str | None:
        """The identity of what this target drives exclusively, or None when nothing is shared.

        The profile's ``lease.key`` when it names one, else what the kind derives
        (:meth:`_lease_identity`): a serial URL, a probe id, an FVP session. None for
        targets that are private to this process (the model, a board program it launches).
        """
        explicit = self.profile.lease.get("key")
        return str(explicit) if explicit else self._lease_identity()

    def _lease_identity(self) -> str | None:
        """What a kind derives its lease key from (None: the target is private to this process)."""
        return None

    def take_lease(self) -> None:
        """Take the exclusive lease on :meth:`lease_key` (waiting up to ``lease.timeout``); idempotent.

        LeaseBusyError (a TargetError naming the holder) when someone else keeps it.
        """
        if self.lease is not None:
            return
        key = self.lease_key()
        if key is None:
            return
        from cca_hil.lease import DEFAULT_TIMEOUT, LeaseStore

        timeout = float(self.profile.lease.get("timeout", DEFAULT_TIMEOUT))
        self.lease = LeaseStore().acquire(
            key,
            timeout=timeout,
            hint="to wait, give --lease-timeout SECONDS (pytest: --cca-lease-timeout) or the profile's "
            "lease.timeout; see 'cca-hil lease list'",
        )

    def release_lease(self) -> None:
        """Give the lease back (idempotent)."""
        lease, self.lease = self.lease, None
        if lease is not None:
            lease.release()

    def __enter__(self) -> Self:
        """Take the target's lease, then open it (the lease is given back if opening fails)."""
        self.take_lease()
        try:
            self.open()
        except BaseException:
            self.release_lease()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.close()
        finally:
            self.release_lease()

    def open(self) -> None:
        """Start or connect to the target; idempotent."""
        self._opened = True

    def close(self) -> None:
        """Release the target; idempotent and bounded in time."""
        self._opened = False

    # -- facts ---------------------------------------------------------------

    @abc.abstractmethod
    def info(self) -> TargetInfo:
        """Platform facts: memory map, PA size, granule pool, RMM version, capabilities."""

    # -- the agent's operations -----------------------------------------------

    @abc.abstractmethod
    def smc(self, fid: int, *args: int) -> tuple[int, ...]:
        """Issue an SMC from the Non-secure host world (NS-EL2); returns X0..X4 at least."""

    def read(self, pa: int, size: int) -> bytes:
        """Read ``size`` bytes of Non-secure memory at ``pa`` (GranuleProtectionFault on a GPF)."""
        raise CapabilityError(Capability.MEMORY, self.name)

    def write(self, pa: int, data: bytes) -> None:
        """Write Non-secure memory at ``pa`` (GranuleProtectionFault on a GPF)."""
        raise CapabilityError(Capability.MEMORY, self.name)

    def access(self, pa: int, op: AccessOp, size: int = 8, value: int = 0) -> AccessResult:
        """One probing Non-secure load or store that may fault; the fault is returned, not raised."""
        raise CapabilityError(Capability.ACCESS, self.name)

    def gpt_pas(self, pa: int) -> Pas:
        """The PAS the GPT currently gives the granule containing ``pa`` (needs ``gpt_read``)."""
        raise CapabilityError(Capability.GPT_READ, self.name)

    def gpt_registers(self) -> tuple[int, int]:
        """GPCCR_EL3 and GPTBR_EL3 as programmed (DDI0487 D24.2.56/57; needs ``gpt_read``)."""
        raise CapabilityError(Capability.GPT_READ, self.name)

    def gpt_tables(self) -> dict[int, bytes]:
        """The L0 GPT and every L1 GPT it points to, as ``{PA: bytes}`` (needs ``gpt_read``)."""
        raise CapabilityError(Capability.GPT_READ, self.name)

    def access_from(
        self, world: Pas, pa: int, op: AccessOp, size: int = 8, value: int = 0, *, pas: Pas | None = None
    ) -> AccessResult:
        """One probing load/store by Security state ``world`` (at EL2; Root at EL3) to (``pa``, ``pas``).

        ``pas`` defaults to the world's own PAS. Only Non-secure accesses are
        possible through the agent; targets that can act in other worlds override this.
        """
        if world is Pas.NONSECURE and pas in (None, Pas.NONSECURE):
            return self.access(pa, op, size, value)
        raise CapabilityError(f"{Capability.ACCESS} from the {world.value} world", self.name)

    def read_physical(self, pa: int, size: int, pas: Pas, mecid: int = 0) -> bytes:
        """A debug read of (``pa``, ``pas``, ``mecid``) past the GPC: what memory holds for that context.

        Needs ``encryption`` (it is how ciphertext is observed, rme-gpt-mec.md §7.2).
        """
        raise CapabilityError(Capability.ENCRYPTION, self.name)

    def realm_mecid(self, rd: int) -> int | None:
        """The MECID the RMM gave the realm whose RD is at ``rd`` (None: no such realm; needs ``mec``)."""
        raise CapabilityError(Capability.MEC, self.name)

    @property
    def rmi_condition(self) -> str | None:
        """Spec label of the failure condition the RMM reported for the last RMI call.

        Only a target that can see inside its RMM (the model) knows it; others return None.
        """
        return None

    @property
    def rsi_condition(self) -> str | None:
        """Spec label of the failure condition the realm's last RSI (or PSCI) call met.

        Only a target that can see inside its RMM (the model) knows it; others return None.
        Per action, the condition reaches :meth:`RealmActionLike.complete`.
        """
        return None

    def realm_enter(self, rec_pa: int, run_pa: int, actions: Sequence[Any] = ()) -> tuple[int, ...]:
        """RMI_REC_ENTER through the agent, the realm payload performing ``actions``.

        Each action is shaped like :class:`RealmActionLike` (typed ``Any`` here so that
        callers may pass their own action class without importing this protocol).
        """
        raise CapabilityError(Capability.REALM_EXEC, self.name)

    def load(
        self,
        image: Path,
        address: int | None = None,
        *,
        verify: bool = True,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        """Load an ELF/HEX/BIN image onto the target.

        ``address`` places a raw binary (ELF and HEX images carry their addresses);
        ``verify`` reads the image back and compares it; ``progress(done, total)``
        is called as bytes move (``total`` counts the read-back too when verifying).
        """
        raise CapabilityError(Capability.LOAD, self.name)

    def reset(self) -> None:
        """Reset the target to a fresh boot."""
        raise CapabilityError(Capability.RESET, self.name)

    def power(self, action: PowerAction) -> None:
        """Switch target power on, off, or cycle it."""
        raise CapabilityError(Capability.POWER, self.name)
