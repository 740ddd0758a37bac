"""The modelled Realm Management Monitor: RMI 1.0 commands with every failure condition in order.

RMM 1.0 (DEN0137 1.0-rel0) part B. Each handler evaluates the conditions of
its command in the order of ``arch.rmi_1_0`` and reports the first that holds
by its spec label (:attr:`Rmm.last_condition`), so that results, tests and the
conformance suite all speak of ``rd_state`` or ``rtt_walk`` rather than of a
bare status code.

``RmmConfig.quirks`` selects the answer where TF-RMM departs from the
specification (rmm-abi.md §12): ``spec`` answers the specification's column,
``tf-rmm`` TF-RMM's. Where the specification allows a choice or is silent both
modes answer as TF-RMM does. Each mode check sits at its condition, asks
:meth:`Rmm.quirk` with its §12 row number (``RmmConfig.quirk_rows`` switches
rows one by one) and carries a comment naming the row.

RMI_REC_ENTER runs the REC through :class:`~cca_hil.model.realm_exec.RealmExecution`,
which carries out the realm payload's actions and the RMM's side of RSI and
PSCI (RMM 1.0 B5); the REC exit it reports is written back here.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from cca_hil.arch import measurement
from cca_hil.arch.esr import ExceptionClass, FaultStatus
from cca_hil.arch.pas import Pas
from cca_hil.arch.rmi import (
    GRANULE_SIZE,
    MASK64,
    SMCCC_NOT_SUPPORTED,
    Condition,
    GranuleState,
    HashAlgorithm,
    RealmState,
    RecState,
    Ripas,
    RmiCommand,
    RmiStatus,
    pack_return,
    to_signed64,
)
from cca_hil.arch.rmi_1_0 import RMI_1_0
from cca_hil.arch.structs import (
    REC_RUN_EXIT_OFFSET,
    RMI_MPIDR_VALID_MASK,
    RecEnterFlags,
    RecExit,
    rec_mpidr_index,
)
from cca_hil.model.attestation import AttestationConfig, PlatformAttestation
from cca_hil.model.gpt import GranuleProtection
from cca_hil.model.memory import PhysicalMemory
from cca_hil.model.monitor import Monitor
from cca_hil.model.platform import PlatformConfig, RmmConfig
from cca_hil.model.realm import GPR_COUNT, PSCI_AFFINITY_INFO_FIDS, Realm, Rec
from cca_hil.model.realm_exec import RealmExecution
from cca_hil.model.rtt import (
    DESC_ATTR_MASK,
    DESC_MEMATTR,
    DESC_OA_LPA2_HIGH,
    MEMATTR_RESERVED,
    MIN_BLOCK_LEVEL,
    PAGE_LEVEL,
    UNASSIGNED_DESTROYED,
    UNASSIGNED_EMPTY,
    UNASSIGNED_NS,
    UNASSIGNED_RAM,
    Hipas,
    Rtt,
    Rtte,
    entries_per_table,
    entry_size,
    level_shift,
    unassigned,
)

Regs = tuple[int, int, int, int, int]
Handler = Callable[[tuple[int, ...]], Regs]

_SHIFT = 12
_ALIGN = GRANULE_SIZE - 1
_SUCCESS: Regs = (0, 0, 0, 0, 0)
_PA_LIMIT_NO_LPA2 = 1 << 48
_MIN_IPA_WIDTH = 32
_MAX_IPA_WIDTH_NO_LPA2 = 48
_MAX_CONCATENATED = 16
_MAX_AUX = 16
_U8 = 0xFF
_U16 = 0xFFFF
_U32 = 0xFFFF_FFFF
_RTT_READ_ENTRY_FID = RMI_1_0.by_name["rtt_read_entry"].fid

_RSI_SUCCESS = 0
_RSI_ACCEPT = 0
_RSI_REJECT = 1
_PSCI_SUCCESS = 0
_PSCI_OFF = 1
_PSCI_DENIED = -3
_PSCI_ALREADY_ON = -4

_EXIT_IMM = 0x600
"""RmiRecExit.imm, relative to the exit half of RecRun."""
_ESR_EC_DABT_LOWER = int(ExceptionClass.DATA_ABORT_LOWER)
_DFSC_TRANSLATION_L0 = int(FaultStatus.TRANSLATION_L0)

GICV3_HCR_HOST_BITS = (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 14)
"""ICH_HCR_EL2 bits the Host may set (UIE, LRENPIE, NPIE, VGrp*E/DIE, TDIR; RMM 1.0 Gicv3ConfigIsValid)."""
GICV3_HCR_EXIT_BITS = GICV3_HCR_HOST_BITS | (0x1F << 27)
"""ICH_HCR_EL2 bits reported in RmiRecExit (adds EOIcount)."""
_LR_HW = 1 << 61
_LR_EOI = 1 << 41
_LR_PINTID = 0x1FFF << 32
_LR_STATE_SHIFT = 62
_LR_PRIORITY_SHIFT = 48
_GIC_SPECIAL_INTID_BASE = 1020
_GIC_LPI_BASE = 8192

_ENTER = struct.Struct("<Q504x31Q8x17Q")
"""RmiRecEnter: flags @0x000, gprs[0..30] @0x200, gicv3_hcr @0x300, gicv3_lrs[0..15] @0x308."""


def rtt_num_start_for(*, s2sz: int, level: int, lpa2: bool) -> int | None:
    """Starting RTTs a (s2sz, start level) needs, or None if the pair is not a valid VMSA geometry.

    RMM 1.0 RttConfigIsValid: one table at ``level`` resolves
    ``level_shift(level) + 9`` bits (level -1: 4 bits); up to 16 tables may be
    concatenated, and a geometry that the next level down could serve
    without concatenation is not valid at ``level``.
    """
    if level < -1 or level > PAGE_LEVEL or (level == -1 and not lpa2):
        return None
    covered = level_shift(level) + (4 if level < 0 else 9)
    below = level_shift(level + 1) + 9 if level < PAGE_LEVEL else 12
    if not below < s2sz <= covered + 4:
        return None
    return 1 << max(0, s2sz - covered)


class _Refused(Exception):
    """A shared check found a failure; :meth:`Rmm.handle` returns the registers it carries."""

    def __init__(self, regs: Regs) -> None:
        super().__init__()
        self.regs = regs


class Rmm:
    """RMI 1.0 state machine over the platform's memory and granule protection."""

    def __init__(
        self,
        *,
        config: RmmConfig,
        platform: PlatformConfig,
        memory: PhysicalMemory,
        gpt: GranuleProtection,
        monitor: Monitor,
    ) -> None:
        self.config = config
        self.platform = platform
        self.memory = memory
        self.gpt = gpt
        self.monitor = monitor
        self.interface = RMI_1_0
        self.tf_rmm = config.quirks == "tf-rmm"
        """TF-RMM's register widths where the spec's are narrower (not §12 rows; ``quirks`` as a whole)."""
        self._quirk_rows = config.active_quirk_rows()
        self._fault = config.fault
        self.granules: dict[int, GranuleState] = {}
        """State of every granule that is not UNDELEGATED, by granule index."""
        self.realms: dict[int, Realm] = {}
        """Realms by the granule index of their RD."""
        self.recs: dict[int, Rec] = {}
        """RECs by the granule index of their REC granule."""
        self.vmids: set[int] = set()
        self._delegable = platform.delegable_ranges()
        self._max_recs = (1 << config.max_recs_order) - 1
        self.last_condition: str | None = None
        """Spec label of the failure condition the last command reported (None on success)."""
        self.last_rsi_condition: str | None = None
        """Spec label of the failure condition the Realm's last RSI command met (None on success)."""
        self.attestation = PlatformAttestation.build(
            seed=platform.seed,
            config=AttestationConfig(),
            platform_config=config.feature_register_0().to_bytes(8, "little"),
        )
        """What EL3 provides for attestation: the RAK and the platform token (profile data, §10.4)."""
        self.realm_exec = RealmExecution(self)
        """Runs RECs: the realm payload's actions and the RMM's RSI/PSCI handling."""
        self.calls = 0
        self._handlers: dict[int, Handler] = {}
        self._commands: dict[str, RmiCommand] = {}
        self._fail_x0: dict[tuple[str, str], int] = {}
        self._conditions: dict[tuple[str, str], Condition] = {}
        for command in self.interface.commands:
            handler = getattr(self, f"_rmi_{command.name}", None)
            if handler is not None:
                self._handlers[command.fid] = handler
            self._commands[command.name] = command
            for cond in command.conditions:
                self._conditions[command.name, cond.id] = cond
                if isinstance(cond.index, int):
                    self._fail_x0[command.name, cond.id] = pack_return(cond.status, cond.index)
        self._delegate = self._commands["granule_delegate"]
        self._undelegate = self._commands["granule_undelegate"]

    # -- dispatch ------------------------------------------------------------

    def handle(self, fid: int, args: tuple[int, ...]) -> Regs:
        """Execute one RMI call (X1.. in ``args``); return X0..X4."""
        self.calls += 1
        self.last_condition = None
        handler = self._handlers.get(fid)
        if handler is None:
            return (SMCCC_NOT_SUPPORTED, 0, 0, 0, 0)
        if len(args) < 6:
            args = (*args, *(0,) * (6 - len(args)))
        try:
            regs = handler(args)
        except _Refused as refused:
            regs = refused.regs
        if self.quirk(19) and fid != _RTT_READ_ENTRY_FID:
            # rmm-abi.md §12 #19: TF-RMM preserves the caller's X4 unless the command outputs X4.
            return (regs[0], regs[1], regs[2], regs[3], args[3])
        return regs

    def quirk(self, row: int) -> bool:
        """Whether §12 row ``row`` answers as TF-RMM does (``RmmConfig.active_quirk_rows``)."""
        return row in self._quirk_rows

    def _fail(self, command: RmiCommand, cond_id: str, *outputs: int, index: int | None = None) -> Regs:
        """X0..X4 for failure condition ``cond_id`` of ``command``; ``index`` when the rule is dynamic."""
        cond = self._conditions[command.name, cond_id]
        self.last_condition = cond.label
        fault = self._fault
        if fault is not None and fault.command == command.name and fault.condition in (cond.id, cond.label):
            # Test-only fault switch (RmmConfig.fault): the wrong status for this one condition.
            x0 = pack_return(RmiStatus[fault.status.upper()], 0)
        elif index is None:
            x0 = self._fail_x0[command.name, cond.id]
        else:
            x0 = pack_return(cond.status, index)
        out = (*outputs, 0, 0, 0, 0)
        return (x0, out[0], out[1], out[2], out[3])

    # -- read-only views for tools and tests ------------------------------------

    def is_delegable(self, pa: int) -> bool:
        """PaIsDelegable: ``pa`` lies in DRAM the RMM tracks (RMM 1.0 A2.2.2)."""
        for base, end in self._delegable:
            if base <= pa < end:
                return True
        return False

    def granule_state(self, pa: int) -> GranuleState:
        """Abstract state of the granule containing ``pa``."""
        return self.granules.get(pa >> _SHIFT, GranuleState.UNDELEGATED)

    def realm_at(self, rd: int) -> Realm:
        """The Realm whose RD is at ``rd`` (KeyError if there is none)."""
        return self.realms[rd >> _SHIFT]

    def rec_at(self, rec: int) -> Rec:
        """The REC at ``rec`` (KeyError if there is none)."""
        return self.recs[rec >> _SHIFT]

    # -- shared checks -------------------------------------------------------

    def _granule_fault(self, addr: int, state: GranuleState, prefix: str, state_id: str = "") -> str | None:
        """The ``<prefix>_align/_bound/_state`` condition ``addr`` fails as a granule in ``state``."""
        if addr & _ALIGN:
            return f"{prefix}_align"
        if not self.is_delegable(addr):
            return f"{prefix}_bound"
        if self.granules.get(addr >> _SHIFT, GranuleState.UNDELEGATED) is not state:
            return state_id or f"{prefix}_state"
        return None

    def _ns_fault(self, addr: int, prefix: str) -> str | None:
        """The ``<prefix>_align/_bound/_pas`` condition an NS structure pointer fails (RMM 1.0 A2.2.2)."""
        if addr & _ALIGN:
            return f"{prefix}_align"
        if not self.is_delegable(addr):
            return f"{prefix}_bound"
        if addr >> _SHIFT in self.granules or not self.gpt.check(addr, Pas.NONSECURE):
            return f"{prefix}_pas"
        return None

    def _scrub(self, pa: int) -> None:
        """Wipe a granule on its way through DELEGATED (RMM 1.0 A2.2.4)."""
        self.memory.wipe(pa)

    def _release(self, pa: int) -> None:
        """Return a granule to DELEGATED, wiped."""
        self.granules[pa >> _SHIFT] = GranuleState.DELEGATED
        self.memory.wipe(pa)

    # -- RMI_VERSION / RMI_FEATURES ------------------------------------------

    def _rmi_version(self, args: tuple[int, ...]) -> Regs:
        """RMI_VERSION (RMM 1.0 B3.3): SUCCESS iff a supported revision is compatible with ``req``."""
        req = args[0]
        supported = self.config.version
        if req >> 31 == 0 and (req >> 16) == (supported >> 16) and (req & 0xFFFF) <= (supported & 0xFFFF):
            return (RmiStatus.SUCCESS, req, supported, 0, 0)
        return (RmiStatus.ERROR_INPUT, supported, supported, 0, 0)

    def _rmi_features(self, args: tuple[int, ...]) -> Regs:
        """RMI_FEATURES (RMM 1.0 B3.3): register 0 describes the implementation; others read as zero."""
        value = self.config.feature_register_0() if args[0] == 0 else 0
        return (RmiStatus.SUCCESS, value, 0, 0, 0)

    # -- granule delegation --------------------------------------------------

    def _rmi_granule_delegate(self, args: tuple[int, ...]) -> Regs:
        """RMI_GRANULE_DELEGATE (RMM 1.0 B3.3)."""
        addr = args[0]
        if addr & _ALIGN:
            return self._fail(self._delegate, "gran_align")
        if not self.is_delegable(addr):
            return self._fail(self._delegate, "gran_bound")
        index = addr >> _SHIFT
        if index in self.granules:
            return self._fail(self._delegate, "gran_state")
        if not self.monitor.gtsi_delegate(addr):
            return self._fail(self._delegate, "gran_gpt")
        self.granules[index] = GranuleState.DELEGATED
        self.memory.wipe(addr)
        return _SUCCESS

    def _rmi_granule_undelegate(self, args: tuple[int, ...]) -> Regs:
        """RMI_GRANULE_UNDELEGATE (RMM 1.0 B3.3)."""
        addr = args[0]
        if addr & _ALIGN:
            return self._fail(self._undelegate, "gran_align")
        if not self.is_delegable(addr):
            return self._fail(self._undelegate, "gran_bound")
        index = addr >> _SHIFT
        if self.granules.get(index) is not GranuleState.DELEGATED:
            return self._fail(self._undelegate, "gran_state")
        self.monitor.gtsi_undelegate(addr)
        del self.granules[index]
        self.memory.wipe(addr)
        return _SUCCESS

    # -- Realm lifecycle -----------------------------------------------------

    def _rmi_realm_create(self, args: tuple[int, ...]) -> Regs:
        """RMI_REALM_CREATE (RMM 1.0 B3.3): validate RmiRealmParams, build the Realm, initialise the RIM."""
        rd, params_ptr = args[0], args[1]
        command = self._commands["realm_create"]
        fault = self._ns_fault(params_ptr, "params")
        if fault:
            return self._fail(command, fault)
        raw = self.memory.read_granule(params_ptr)
        # TF-RMM reads the UInt8 fields as 32-bit words; the spec gives them 8 bits.
        narrow = _U32 if self.tf_rmm else _U8
        flags = int.from_bytes(raw[0x000:0x008], "little")
        s2sz, sve_vl, num_bps, num_wps, pmu_num_ctrs = (
            int.from_bytes(raw[off : off + 8], "little") & narrow
            for off in (0x008, 0x010, 0x018, 0x020, 0x028)
        )
        hash_algo = raw[0x030]
        rpv = bytes(raw[0x400:0x440])
        vmid = int.from_bytes(raw[0x800:0x802], "little")
        rtt_base = int.from_bytes(raw[0x808:0x810], "little")
        level_start = to_signed64(int.from_bytes(raw[0x810:0x818], "little"))
        num_start = int.from_bytes(raw[0x818:0x81C], "little")

        if hash_algo not in (HashAlgorithm.SHA256, HashAlgorithm.SHA512):
            return self._fail(command, "params_valid")
        if not self._params_supported(
            flags=flags,
            s2sz=s2sz,
            sve_vl=sve_vl,
            num_bps=num_bps,
            num_wps=num_wps,
            pmu_num_ctrs=pmu_num_ctrs,
            hash_algo=hash_algo,
        ):
            return self._fail(command, "params_supp")
        lpa2 = bool(flags & 1)
        expected = rtt_num_start_for(s2sz=s2sz, level=level_start, lpa2=lpa2)
        if expected is None or expected != num_start or (level_start == 0 and not self._level0_ok()):
            return self._fail(command, "rtt_num_level")
        if vmid >> self.config.vmid_bits or vmid in self.vmids:
            return self._fail(command, "vmid_valid")
        if rtt_base <= rd < rtt_base + num_start * GRANULE_SIZE:
            return self._fail(command, "alias")
        fault = self._granule_fault(rd, GranuleState.DELEGATED, "rd")
        if fault:
            return self._fail(command, fault)
        # rmm-abi.md §12 #1: TF-RMM only checks that each starting RTT is 4 KiB aligned;
        # the spec wants rtt_base aligned to the size of all concatenated starting RTTs.
        rtt_alignment = GRANULE_SIZE if self.quirk(1) else num_start * GRANULE_SIZE
        if rtt_base % rtt_alignment:
            return self._fail(command, "rtt_align")
        for i in range(num_start):
            table = rtt_base + i * GRANULE_SIZE
            if self._granule_fault(table, GranuleState.DELEGATED, "rtt"):
                return self._fail(command, "rtt_state")

        algo = HashAlgorithm(hash_algo)
        starts = tuple(
            self._starting_rtt(rtt_base + i * GRANULE_SIZE, level_start, i, s2sz) for i in range(num_start)
        )
        realm = Realm(
            rd=rd,
            state=RealmState.NEW,
            ipa_width=s2sz,
            hash_algo=algo,
            lpa2=lpa2,
            vmid=vmid,
            rpv=rpv,
            rtt_base=rtt_base,
            rtt_level_start=level_start,
            rtt_num_start=num_start,
            starts=starts,
            sve_vl=sve_vl,
            num_bps=num_bps,
            num_wps=num_wps,
            pmu_num_ctrs=pmu_num_ctrs,
            flags=flags,
        )
        image = measurement.realm_params_image(
            flags=flags,
            s2sz=s2sz,
            sve_vl=sve_vl,
            num_bps=num_bps,
            num_wps=num_wps,
            pmu_num_ctrs=pmu_num_ctrs,
            hash_algo=hash_algo,
        )
        realm.measurements[0] = measurement.rim_init(algo, image)
        self.realms[rd >> _SHIFT] = realm
        self.granules[rd >> _SHIFT] = GranuleState.RD
        for start in starts:
            self.granules[start.addr >> _SHIFT] = GranuleState.RTT
        self.vmids.add(vmid)
        return _SUCCESS

    def _params_supported(
        self,
        *,
        flags: int,
        s2sz: int,
        sve_vl: int,
        num_bps: int,
        num_wps: int,
        pmu_num_ctrs: int,
        hash_algo: int,
    ) -> bool:
        """params_supp (RMM 1.0 B3.3): every feature the Host asks for is one this RMM offers."""
        cfg = self.config
        lpa2 = bool(flags & 1)
        if lpa2 and not cfg.lpa2:
            return False
        max_s2sz = cfg.s2sz if lpa2 else min(cfg.s2sz, _MAX_IPA_WIDTH_NO_LPA2)
        if not _MIN_IPA_WIDTH <= s2sz <= max_s2sz:
            return False
        if not 0 < num_bps <= cfg.num_bps or not 0 < num_wps <= cfg.num_wps:
            return False
        if flags & 2 and (not cfg.sve or sve_vl > cfg.sve_vl):
            return False
        if flags & 4 and (not cfg.pmu or pmu_num_ctrs > cfg.pmu_num_ctrs):
            return False
        if hash_algo == HashAlgorithm.SHA256:
            return cfg.sha256
        return cfg.sha512

    def _level0_ok(self) -> bool:
        """A level-0 start needs the PE's PA width to be at least 44 bits (VMSA, TF-RMM)."""
        return self.platform.pa_bits >= self.config.pa_bits_for_start_level_0

    @staticmethod
    def _starting_rtt(addr: int, level: int, position: int, ipa_width: int) -> Rtt:
        """Starting RTT number ``position``: protected entries UNASSIGNED EMPTY, the others UNASSIGNED_NS."""
        size = entry_size(level)
        count = entries_per_table(level)
        base = position * count * size
        protected_top = 1 << (ipa_width - 1)
        entries = [
            UNASSIGNED_EMPTY if base + i * size < protected_top else UNASSIGNED_NS for i in range(count)
        ]
        return Rtt(addr=addr, level=level, base=base, entries=entries)

    def _refuse(self, command: RmiCommand, cond_id: str, *outputs: int, index: int | None = None) -> _Refused:
        """The exception a shared check raises for failure condition ``cond_id``."""
        return _Refused(self._fail(command, cond_id, *outputs, index=index))

    def _rd_realm(self, command: RmiCommand, rd: int) -> Realm:
        """The Realm at ``rd``; refuses with its rd_align / rd_bound / rd_state condition.

        Outputs a command defines on failure (``top``) are zero on these INPUT errors, as in TF-RMM.
        """
        fault = self._granule_fault(rd, GranuleState.RD, "rd")
        if fault:
            raise self._refuse(command, fault)
        return self.realms[rd >> _SHIFT]

    def _rmi_realm_activate(self, args: tuple[int, ...]) -> Regs:
        """RMI_REALM_ACTIVATE (RMM 1.0 B3.3): NEW → ACTIVE, freezing the RIM."""
        command = self._commands["realm_activate"]
        realm = self._rd_realm(command, args[0])
        if realm.state is not RealmState.NEW:
            return self._fail(command, "realm_state")
        realm.state = RealmState.ACTIVE
        return _SUCCESS

    def _rmi_realm_destroy(self, args: tuple[int, ...]) -> Regs:
        """RMI_REALM_DESTROY (RMM 1.0 B3.3): a Realm that is not live returns its RD and starting RTTs."""
        command = self._commands["realm_destroy"]
        realm = self._rd_realm(command, args[0])
        if realm.is_live():
            return self._fail(command, "realm_live")
        for table in realm.starts:
            self._release(table.addr)
        self._release(realm.rd)
        del self.realms[realm.rd >> _SHIFT]
        self.vmids.discard(realm.vmid)
        return _SUCCESS

    # -- RECs ----------------------------------------------------------------

    def _rmi_rec_aux_count(self, args: tuple[int, ...]) -> Regs:
        """RMI_REC_AUX_COUNT (RMM 1.0 B3.3): auxiliary granules every REC of the Realm needs."""
        command = self._commands["rec_aux_count"]
        self._rd_realm(command, args[0])
        return (RmiStatus.SUCCESS, self.config.aux_count, 0, 0, 0)

    def _rmi_rec_create(self, args: tuple[int, ...]) -> Regs:
        """RMI_REC_CREATE (RMM 1.0 B3.3): check RmiRecParams and the aux list, create the REC, measure it."""
        rd, rec_addr, params_ptr = args[0], args[1], args[2]
        command = self._commands["rec_create"]
        fault = self._ns_fault(params_ptr, "params")
        if fault:
            return self._fail(command, fault)
        raw = self.memory.read_granule(params_ptr)
        flags = int.from_bytes(raw[0x000:0x008], "little")
        mpidr = int.from_bytes(raw[0x100:0x108], "little")
        pc = int.from_bytes(raw[0x200:0x208], "little")
        gprs = [int.from_bytes(raw[0x300 + 8 * i : 0x308 + 8 * i], "little") for i in range(8)]
        num_aux = int.from_bytes(raw[0x800:0x808], "little")
        if self.tf_rmm:
            # Not a §12 row (marked in the TF-RMM data): TF-RMM reads num_aux as 32 bits.
            num_aux &= _U32
        aux = [int.from_bytes(raw[0x808 + 8 * i : 0x810 + 8 * i], "little") for i in range(_MAX_AUX)]

        # rmm-abi.md §12 #2: the aux list is checked before the Realm's state (TF-RMM order, allowed).
        if num_aux > _MAX_AUX:
            return self._fail(command, "tf_rmm_num_aux_gt_16")
        seen: set[int] = set()
        for addr in aux[:num_aux]:
            if addr & _ALIGN:
                return self._fail(command, "aux_align")
            if self._granule_fault(addr, GranuleState.DELEGATED, "aux"):
                return self._fail(command, "aux_state")
            if addr == rec_addr or addr in seen:
                return self._fail(command, "aux_alias")
            seen.add(addr)
        fault = self._granule_fault(rec_addr, GranuleState.DELEGATED, "rec")
        if fault:
            return self._fail(command, fault)
        realm = self._rd_realm(command, rd)
        if realm.num_recs >= self._max_recs:
            return self._fail(command, "num_recs")
        if realm.state is not RealmState.NEW:
            return self._fail(command, "realm_state")
        if mpidr & ~RMI_MPIDR_VALID_MASK & MASK64 or rec_mpidr_index(mpidr) != realm.rec_index:
            return self._fail(command, "mpidr_index")
        if num_aux != self.config.aux_count:
            return self._fail(command, "num_aux")

        runnable = bool(flags & 1)
        rec = Rec(
            addr=rec_addr,
            owner=realm,
            mpidr=mpidr,
            pc=pc,
            gprs=gprs + [0] * (GPR_COUNT - len(gprs)),
            runnable=runnable,
            aux=tuple(aux[:num_aux]),
        )
        self.recs[rec_addr >> _SHIFT] = rec
        self.granules[rec_addr >> _SHIFT] = GranuleState.REC
        for addr in rec.aux:
            self.granules[addr >> _SHIFT] = GranuleState.REC_AUX
        realm.rec_index += 1
        realm.num_recs += 1
        if runnable:
            image = measurement.rec_params_image(flags=flags, pc=pc, gprs=gprs)
            realm.measurements[0] = measurement.rim_extend_rec(realm.hash_algo, realm.rim, rec_image=image)
        return _SUCCESS

    def _rec(
        self, command: RmiCommand, addr: int, prefix: str = "rec", state_id: str = "rec_gran_state"
    ) -> Rec:
        """The REC at ``addr``; refuses with its align / bound / granule-state condition."""
        fault = self._granule_fault(addr, GranuleState.REC, prefix, state_id)
        if fault:
            raise self._refuse(command, fault)
        return self.recs[addr >> _SHIFT]

    def _rmi_rec_destroy(self, args: tuple[int, ...]) -> Regs:
        """RMI_REC_DESTROY (RMM 1.0 B3.3): the REC and its aux granules go back to DELEGATED."""
        command = self._commands["rec_destroy"]
        rec = self._rec(command, args[0])
        if rec.state is RecState.RUNNING:
            return self._fail(command, "rec_state")
        for addr in rec.aux:
            self._release(addr)
        self._release(rec.addr)
        del self.recs[rec.addr >> _SHIFT]
        rec.owner.num_recs -= 1
        return _SUCCESS

    def _rmi_rec_enter(self, args: tuple[int, ...]) -> Regs:
        """RMI_REC_ENTER (RMM 1.0 B3.3): validate the entry, complete the last exit, run, report the exit."""
        rec_addr, run_ptr = args[0], args[1]
        command = self._commands["rec_enter"]
        fault = self._ns_fault(run_ptr, "run")
        if fault:
            return self._fail(command, fault)
        rec = self._rec(command, rec_addr)
        if rec.state is RecState.RUNNING:
            return self._fail(command, "rec_state")
        realm = rec.owner
        if realm.state is RealmState.NEW:
            return self._fail(command, "realm_new")
        if realm.state is RealmState.SYSTEM_OFF:
            return self._fail(command, "system_off")
        if not rec.runnable:
            return self._fail(command, "rec_runnable")
        if rec.psci_pending is not None:
            return self._fail(command, "rec_psci")
        enter = _ENTER.unpack_from(self.memory.read(run_ptr, _ENTER.size))
        flags, gprs, hcr, lrs = enter[0], enter[1:32], enter[32], enter[33:49]
        if not self._gicv3_valid(hcr, lrs):
            return self._fail(command, "rec_gicv3")
        inject_sea = bool(flags & RecEnterFlags.INJECT_SEA)
        # rmm-abi.md §12 #14 (spec silent): TF-RMM refuses inject_sea unless the last exit was a data
        # abort at an Unprotected IPA.
        if inject_sea and not rec.unprotected_abort:
            return self._fail(command, "tf_rmm_inject_sea")
        if flags & RecEnterFlags.EMUL_MMIO and not inject_sea and rec.emulatable_abort is None:
            return self._fail(command, "rec_mmio")

        rec.state = RecState.RUNNING
        try:
            self._complete_exit(rec, flags, gprs)
            exit_ = self._run(rec, flags)
        finally:
            rec.state = RecState.READY
        rec.entries += 1
        self._write_exit(run_ptr, exit_, hcr, lrs)
        return _SUCCESS

    def _gicv3_valid(self, hcr: int, lrs: tuple[int, ...]) -> bool:
        """Gicv3ConfigIsValid (RMM 1.0): Host-writable HCR bits only, well-formed implemented LRs."""
        if hcr & ~GICV3_HCR_HOST_BITS:
            return False
        priority_res0 = (1 << (8 - self.config.gicv3_priority_bits)) - 1
        seen: set[int] = set()
        for lr in lrs[: self.config.gicv3_num_lrs + 1]:
            if lr >> _LR_STATE_SHIFT == 0:
                continue
            if lr & _LR_HW or lr & _LR_PINTID & ~_LR_EOI:
                return False
            if (lr >> _LR_PRIORITY_SHIFT) & priority_res0:
                return False
            vintid = lr & _U32
            lpi = _GIC_LPI_BASE <= vintid < 1 << self.config.gicv3_id_bits
            if not (vintid < _GIC_SPECIAL_INTID_BASE or lpi) or vintid in seen:
                return False
            seen.add(vintid)
        return True

    def _complete_exit(self, rec: Rec, flags: int, gprs: tuple[int, ...]) -> None:
        """What the Host's answer to the last exit does to the REC before it runs again (RMM 1.0 A4.3)."""
        abort = rec.emulatable_abort
        if flags & RecEnterFlags.INJECT_SEA:
            rec.sea_pending = True
        elif abort is not None and flags & RecEnterFlags.EMUL_MMIO:
            rec.pc = (rec.pc + 4) & MASK64
            if not abort.write and abort.register != 31:
                value = gprs[0] & ((1 << (8 * abort.size)) - 1)
                if abort.sign_extend and value >> (8 * abort.size - 1):
                    value -= 1 << (8 * abort.size)
                width = 64 if abort.sixty_four else 32
                rec.gprs[abort.register] = value & ((1 << width) - 1)
        if rec.ripas_change_pending:
            reject = flags & RecEnterFlags.RIPAS_RESPONSE
            rejected = rec.ripas_value is Ripas.RAM and rec.ripas_addr != rec.ripas_top and reject
            # X1..X3 carry the outputs or zero, as for every RSI command (rmm-abi.md §1.3).
            rec.gprs[0:4] = [_RSI_SUCCESS, rec.ripas_addr, _RSI_REJECT if rejected else _RSI_ACCEPT, 0]
            rec.ripas_addr = rec.ripas_top = 0
        if rec.host_call_pending is not None:
            ipa = rec.host_call_pending
            pa = self.realm_ram_pa(rec.owner, ipa)
            if pa is not None:
                self.memory.write(pa + 8, struct.pack("<31Q", *gprs))
                rec.gprs[0] = _RSI_SUCCESS
                rec.host_call_pending = None
            elif rec.owner.walk(ipa, PAGE_LEVEL).entry.ripas is Ripas.EMPTY:
                # rmm-abi.md §6.2 (spec silent): TF-RMM drops the answer for a page that became EMPTY
                # and leaves the Realm's X0 as it was.
                rec.host_call_pending = None

    def _run(self, rec: Rec, flags: int) -> RecExit:
        """Run the REC until it exits (realm execution, ``model/realm_exec.py``).

        A Host call whose answer could not be delivered exits at once with the
        synthetic stage-2 abort TF-RMM reports for it (rmm-abi.md §6.2, §7.2).
        """
        self.last_rsi_condition = None
        if rec.host_call_pending is not None:
            self.realm_exec.staged.pop(rec.addr, None)
            return self.synthetic_abort(rec, rec.host_call_pending)
        return self.realm_exec.run(rec, flags)

    def synthetic_abort(self, rec: Rec, ipa: int) -> RecExit:
        """The stage-2 data abort exit TF-RMM makes when RSI must touch an unmapped Realm page (§7.2).

        ``hpfar`` is ``ipa >> 8`` exactly as TF-RMM computes it (it keeps IPA bits below the page).
        """
        level = rec.owner.walk(ipa, PAGE_LEVEL).level
        esr = (_ESR_EC_DABT_LOWER << 26) | (_DFSC_TRANSLATION_L0 + level)
        return rec.exit_data_abort(esr=esr, hpfar=ipa >> 8, unprotected=False, emulatable=None)

    def rec_of(self, realm: Realm, mpidr: int) -> Rec | None:
        """The REC of ``realm`` whose RmiRecMpidr is ``mpidr`` (the Realm names RECs by MPIDR)."""
        for rec in self.recs.values():
            if rec.owner is realm and rec.mpidr == mpidr:
                return rec
        return None

    def _write_exit(self, run_ptr: int, exit_: RecExit, hcr: int, lrs: tuple[int, ...]) -> None:
        """Write RmiRecExit back to the Host's RecRun (the GIC state is always reported)."""
        implemented = self.config.gicv3_num_lrs + 1
        exit_lrs = tuple(lrs[:implemented]) + (0,) * (len(lrs) - implemented)
        report = RecExit(
            exit_reason=exit_.exit_reason,
            esr=exit_.esr,
            far=exit_.far,
            hpfar=exit_.hpfar,
            gprs=exit_.gprs,
            gicv3_hcr=hcr & GICV3_HCR_EXIT_BITS,
            gicv3_lrs=exit_lrs,
            ripas_base=exit_.ripas_base,
            ripas_top=exit_.ripas_top,
            ripas_value=exit_.ripas_value,
            imm=exit_.imm,
        )
        self.memory.write(run_ptr + REC_RUN_EXIT_OFFSET, report.pack())
        if self.tf_rmm:
            # TF-RMM stores 32 bits of the Host call immediate in its 8-byte slot (spec: UInt16).
            self.memory.write(run_ptr + REC_RUN_EXIT_OFFSET + _EXIT_IMM, struct.pack("<Q", exit_.imm))

    def realm_ram_pa(self, realm: Realm, ipa: int) -> int | None:
        """PA behind a Protected IPA the Realm can access (ASSIGNED with RIPAS RAM), else None."""
        if ipa >= realm.protected_top:
            return None
        found = realm.walk(ipa, PAGE_LEVEL)
        entry = found.entry
        if entry.state is not Hipas.ASSIGNED or entry.ripas is not Ripas.RAM:
            return None
        return entry.addr + (ipa & (entry_size(found.level) - 1))

    def _rmi_psci_complete(self, args: tuple[int, ...]) -> Regs:
        """RMI_PSCI_COMPLETE (RMM 1.0 B3.3): the Host's answer to a Realm's CPU_ON / AFFINITY_INFO."""
        calling_addr, target_addr = args[0], args[1]
        status = to_signed64(args[2])
        command = self._commands["psci_complete"]
        if calling_addr == target_addr:
            return self._fail(command, "alias")
        calling = self._rec(command, calling_addr, "calling", "calling_state")
        target = self._rec(command, target_addr, "target", "target_state")
        if calling.state is RecState.RUNNING:
            return self._fail(command, "tf_rmm_calling_running")
        request = calling.psci_pending
        if request is None:
            return self._fail(command, "pending")
        if target.owner is not calling.owner:
            return self._fail(command, "owner")
        if target.mpidr != request.target_mpidr:
            return self._fail(command, "target")
        on = target.runnable
        permitted = status == _PSCI_SUCCESS or (status == _PSCI_DENIED and request.is_cpu_on and not on)
        if not permitted:
            if self.quirk(13) and status == _PSCI_DENIED and request.is_cpu_on:
                # rmm-abi.md §12 #13: TF-RMM answers the caller ALREADY_ON and clears the request
                # before it rejects the status.
                self._psci_result(calling, _PSCI_ALREADY_ON)
            return self._fail(command, "status")

        if request.is_cpu_on:
            if on:
                self._psci_result(calling, _PSCI_ALREADY_ON)
            elif status == _PSCI_DENIED:
                self._psci_result(calling, _PSCI_DENIED)
            else:
                # rmm-abi.md §12 #12: the spec resets the target's X1..X30; TF-RMM leaves them.
                if not self.quirk(12):
                    target.gprs[1:] = [0] * (GPR_COUNT - 1)
                target.gprs[0] = request.context
                target.pc = request.entry
                target.runnable = True
                # A REC that turned itself off never sees its PSCI_CPU_OFF return; it starts afresh.
                target.in_flight = None
                target.faulted = None
                self._psci_result(calling, _PSCI_SUCCESS)
        elif request.fid in PSCI_AFFINITY_INFO_FIDS:
            self._psci_result(calling, _PSCI_SUCCESS if on else _PSCI_OFF)
        return _SUCCESS

    @staticmethod
    def _psci_result(calling: Rec, result: int) -> None:
        """The Realm's PSCI call returns ``result`` in X0 with X1..X3 zero; the request is closed."""
        calling.gprs[0:4] = [result & MASK64, 0, 0, 0]
        calling.psci_pending = None

    # -- RTT commands --------------------------------------------------------

    def _table_checks(self, command: RmiCommand, rd: int, ipa: int, raw_level: int) -> tuple[Realm, int]:
        """rd, level_bound, ipa_align (to level-1), ipa_bound of RTT_CREATE / DESTROY / FOLD."""
        realm = self._rd_realm(command, rd)
        level = to_signed64(raw_level)
        if not realm.rtt_level_start < level <= PAGE_LEVEL:
            raise self._refuse(command, "level_bound")
        if ipa & (entry_size(level - 1) - 1):
            raise self._refuse(command, "ipa_align")
        if ipa >= realm.ipa_top:
            raise self._refuse(command, "ipa_bound")
        return realm, level

    def _rmi_rtt_create(self, args: tuple[int, ...]) -> Regs:
        """RMI_RTT_CREATE (RMM 1.0 B3.3): a new RTT at ``level`` unfolds a non-TABLE entry at level-1."""
        command = self._commands["rtt_create"]
        rtt_addr, ipa = args[1], args[2]
        realm, level = self._table_checks(command, args[0], ipa, args[3])
        fault = self._granule_fault(rtt_addr, GranuleState.DELEGATED, "rtt")
        if fault:
            return self._fail(command, fault)
        if not realm.lpa2 and rtt_addr >= _PA_LIMIT_NO_LPA2:
            return self._fail(command, "rtt_bound2")
        found = realm.walk(ipa, level - 1)
        if found.level < level - 1:
            return self._fail(command, "rtt_walk", index=found.level)
        if found.entry.state is Hipas.TABLE:
            return self._fail(command, "rtte_state", index=found.level)
        parent = found.rtt
        child = parent.unfold_into(addr=rtt_addr, parent=found.entry, base=parent.ipa_of(found.index))
        parent.entries[found.index] = Rtte(Hipas.TABLE, Ripas.EMPTY, rtt_addr, 0, child)
        self.granules[rtt_addr >> _SHIFT] = GranuleState.RTT
        return _SUCCESS

    def _rmi_rtt_destroy(self, args: tuple[int, ...]) -> Regs:
        """RMI_RTT_DESTROY (RMM 1.0 B3.3): a non-live RTT goes; its parent entry becomes UNASSIGNED."""
        command = self._commands["rtt_destroy"]
        ipa = args[1]
        realm, level = self._table_checks(command, args[0], ipa, args[2])
        found = realm.walk(ipa, level - 1)
        if found.level < level - 1:
            return self._fail(command, "rtt_walk", 0, found.rtt.skip_non_live(ipa), index=found.level)
        child = found.entry.table
        if child is None:
            return self._fail(command, "rtte_state", 0, found.rtt.skip_non_live(ipa), index=found.level)
        if child.is_live():
            return self._fail(command, "rtt_live", 0, ipa, index=level)
        # rmm-abi.md §12 #11 (spec silent on the unprotected case): TF-RMM makes the parent UNASSIGNED_NS.
        parent_entry = UNASSIGNED_DESTROYED if ipa < realm.protected_top else UNASSIGNED_NS
        found.rtt.entries[found.index] = parent_entry
        self._release(child.addr)
        return (RmiStatus.SUCCESS, child.addr, found.rtt.skip_non_live(ipa), 0, 0)

    def _rmi_rtt_fold(self, args: tuple[int, ...]) -> Regs:
        """RMI_RTT_FOLD (RMM 1.0 B3.3): a homogeneous RTT collapses into its parent entry."""
        command = self._commands["rtt_fold"]
        ipa = args[1]
        realm, level = self._table_checks(command, args[0], ipa, args[2])
        found = realm.walk(ipa, level - 1)
        if found.level < level - 1:
            return self._fail(command, "rtt_walk", index=found.level)
        child = found.entry.table
        if child is None:
            return self._fail(command, "rtte_state", index=found.level)
        folded = child.fold()
        if folded is None:
            index = level
            if self.quirk(5) and level == MIN_BLOCK_LEVEL and child.maps_block():
                # rmm-abi.md §12 #5: a level-1 RTT of contiguous ASSIGNED(_NS) entries cannot become a
                # level-0 block; TF-RMM reports the parent's level, the spec rtt_homo's own level.
                index = level - 1
            return self._fail(command, "rtt_homo", index=index)
        found.rtt.entries[found.index] = folded
        self._release(child.addr)
        return (RmiStatus.SUCCESS, child.addr, 0, 0, 0)

    def _rmi_rtt_read_entry(self, args: tuple[int, ...]) -> Regs:
        """RMI_RTT_READ_ENTRY (RMM 1.0 B3.3): the entry RttWalk(rd, ipa, level) reaches, wherever it stops."""
        command = self._commands["rtt_read_entry"]
        ipa = args[1]
        realm = self._rd_realm(command, args[0])
        level = to_signed64(args[2])
        if not realm.rtt_level_start <= level <= PAGE_LEVEL:
            return self._fail(command, "level_bound")
        if ipa & (entry_size(level) - 1):
            return self._fail(command, "ipa_align")
        if ipa >= realm.ipa_top:
            return self._fail(command, "ipa_bound")
        found = realm.walk(ipa, level)
        entry = found.entry
        return (
            RmiStatus.SUCCESS,
            found.level & MASK64,
            entry.state.reported,
            entry.desc(),
            entry.reported_ripas(),
        )

    def _unprotected_checks(
        self, command: RmiCommand, rd: int, ipa: int, raw_level: int, desc: int | None
    ) -> tuple[Realm, int]:
        """level_bound, rd, [attr_valid, addr_align, addr_bound], ipa_align, ipa_bound of (UN)MAP."""
        level = to_signed64(raw_level)
        if not MIN_BLOCK_LEVEL <= level <= PAGE_LEVEL:
            raise self._refuse(command, "level_bound")
        realm = self._rd_realm(command, rd)
        if level < realm.rtt_level_start:
            # A block level above the starting level has no entry to name (rmm-abi.md §3.4).
            raise self._refuse(command, "level_bound")
        size = entry_size(level)
        if desc is not None:
            oa_mask = ((1 << 50) - 1) & ~_ALIGN
            attr_mask = DESC_ATTR_MASK | (DESC_OA_LPA2_HIGH if realm.lpa2 else 0)
            if desc & ~(oa_mask | attr_mask) or desc & DESC_MEMATTR == MEMATTR_RESERVED:
                raise self._refuse(command, "attr_valid")
            oa = desc & oa_mask
            if oa & (size - 1):
                raise self._refuse(command, "addr_align")
            if not realm.lpa2 and oa >= _PA_LIMIT_NO_LPA2:
                raise self._refuse(command, "addr_bound")
        if ipa & (size - 1):
            raise self._refuse(command, "ipa_align")
        if not realm.protected_top <= ipa < realm.ipa_top:
            raise self._refuse(command, "ipa_bound")
        return realm, level

    def _rmi_rtt_map_unprotected(self, args: tuple[int, ...]) -> Regs:
        """RMI_RTT_MAP_UNPROTECTED (RMM 1.0 B3.3): an UNASSIGNED_NS entry maps the Host's NS address."""
        command = self._commands["rtt_map_unprotected"]
        rd, ipa, desc = args[0], args[1], args[3]
        realm, level = self._unprotected_checks(command, rd, ipa, args[2], desc)
        found = realm.walk(ipa, level)
        if found.level < level:
            return self._fail(command, "rtt_walk", index=found.level)
        if found.entry.state is not Hipas.UNASSIGNED_NS:
            return self._fail(command, "rtte_state", index=found.level)
        oa_mask = ((1 << 50) - 1) & ~_ALIGN
        oa = desc & oa_mask
        attr = desc & (DESC_ATTR_MASK | (DESC_OA_LPA2_HIGH if realm.lpa2 else 0))
        found.rtt.entries[found.index] = Rtte(Hipas.ASSIGNED_NS, Ripas.EMPTY, oa, attr)
        return _SUCCESS

    def _rmi_rtt_unmap_unprotected(self, args: tuple[int, ...]) -> Regs:
        """RMI_RTT_UNMAP_UNPROTECTED (RMM 1.0 B3.3): an ASSIGNED_NS entry becomes UNASSIGNED_NS."""
        command = self._commands["rtt_unmap_unprotected"]
        rd, ipa = args[0], args[1]
        realm, level = self._unprotected_checks(command, rd, ipa, args[2], None)
        found = realm.walk(ipa, level)
        if found.level < level:
            return self._fail(command, "rtt_walk", found.rtt.skip_non_live(ipa), index=found.level)
        if found.entry.state is not Hipas.ASSIGNED_NS:
            return self._fail(command, "rtte_state", found.rtt.skip_non_live(ipa), index=found.level)
        found.rtt.entries[found.index] = UNASSIGNED_NS
        return (RmiStatus.SUCCESS, found.rtt.skip_non_live(ipa), 0, 0, 0)

    # -- DATA granules -------------------------------------------------------

    def _rmi_data_create(self, args: tuple[int, ...]) -> Regs:
        """RMI_DATA_CREATE (RMM 1.0 B3.3): an NS page copied into a new DATA granule of a NEW Realm."""
        rd, data, ipa, src, flags = args[0], args[1], args[2], args[3], args[4]
        command = self._commands["data_create"]
        if flags not in (0, 1):
            return self._fail(command, "tf_rmm_flags_encoding")
        if src & _ALIGN:
            return self._fail(command, "src_align")
        if not self.is_delegable(src):
            return self._fail(command, "src_bound")
        # rmm-abi.md §12 #4: only the RMM's own tracking is checked here; the NS read comes last.
        if src >> _SHIFT in self.granules:
            return self._fail(command, "src_pas")
        fault = self._granule_fault(data, GranuleState.DELEGATED, "data")
        if fault:
            return self._fail(command, fault)
        realm = self._rd_realm(command, rd)
        # rmm-abi.md §12 #3: realm_state before the IPA and PA checks (TF-RMM order, allowed).
        if realm.state is not RealmState.NEW:
            return self._fail(command, "realm_state")
        self._data_ipa_checks(command, realm, data, ipa)
        found = realm.walk(ipa, PAGE_LEVEL)
        if found.level < PAGE_LEVEL:
            return self._fail(command, "rtt_walk", index=found.level)
        if found.entry.state is not Hipas.UNASSIGNED:
            return self._fail(command, "rtte_state")
        if not self.gpt.check(src, Pas.NONSECURE):
            return self._fail(command, "tf_rmm_src_pas_read_fault")
        content = self.memory.read_granule(src)
        self.memory.write(data, content)
        found.rtt.entries[found.index] = Rtte(Hipas.ASSIGNED, Ripas.RAM, data)
        self.granules[data >> _SHIFT] = GranuleState.DATA
        realm.measurements[0] = measurement.rim_extend_data(
            realm.hash_algo, realm.rim, ipa=ipa, flags=flags, data=content if flags & 1 else None
        )
        return _SUCCESS

    def _data_ipa_checks(self, command: RmiCommand, realm: Realm, data: int, ipa: int) -> None:
        """ipa_bound, ipa_align, data_bound2 of DATA_CREATE / DATA_CREATE_UNKNOWN."""
        if ipa >= realm.protected_top:
            raise self._refuse(command, "ipa_bound")
        if ipa & _ALIGN:
            raise self._refuse(command, "ipa_align")
        if not realm.lpa2 and data >= _PA_LIMIT_NO_LPA2:
            raise self._refuse(command, "data_bound2")

    def _rmi_data_create_unknown(self, args: tuple[int, ...]) -> Regs:
        """RMI_DATA_CREATE_UNKNOWN (RMM 1.0 B3.3): a wiped DATA granule, RIPAS unchanged."""
        rd, data, ipa = args[0], args[1], args[2]
        command = self._commands["data_create_unknown"]
        fault = self._granule_fault(data, GranuleState.DELEGATED, "data")
        if fault:
            return self._fail(command, fault)
        realm = self._rd_realm(command, rd)
        self._data_ipa_checks(command, realm, data, ipa)
        found = realm.walk(ipa, PAGE_LEVEL)
        if found.level < PAGE_LEVEL:
            return self._fail(command, "rtt_walk", index=found.level)
        entry = found.entry
        if entry.state is not Hipas.UNASSIGNED:
            return self._fail(command, "rtte_state")
        self._scrub(data)
        found.rtt.entries[found.index] = Rtte(Hipas.ASSIGNED, entry.ripas, data)
        self.granules[data >> _SHIFT] = GranuleState.DATA
        return _SUCCESS

    def _rmi_data_destroy(self, args: tuple[int, ...]) -> Regs:
        """RMI_DATA_DESTROY (RMM 1.0 B3.3): the DATA granule goes; RIPAS RAM becomes DESTROYED."""
        rd, ipa = args[0], args[1]
        command = self._commands["data_destroy"]
        realm = self._rd_realm(command, rd)
        if ipa & _ALIGN:
            return self._fail(command, "ipa_align")
        if ipa >= realm.protected_top:
            return self._fail(command, "ipa_bound")
        found = realm.walk(ipa, PAGE_LEVEL)
        if found.level < PAGE_LEVEL:
            return self._fail(command, "rtt_walk", 0, found.rtt.skip_non_live(ipa), index=found.level)
        entry = found.entry
        if entry.state is not Hipas.ASSIGNED:
            return self._fail(command, "rtte_state", 0, found.rtt.skip_non_live(ipa))
        ripas = Ripas.DESTROYED if entry.ripas is Ripas.RAM else entry.ripas
        found.rtt.entries[found.index] = unassigned(ripas)
        self._release(entry.addr)
        return (RmiStatus.SUCCESS, entry.addr, found.rtt.skip_non_live(ipa), 0, 0)

    # -- RIPAS ---------------------------------------------------------------

    def _rmi_rtt_init_ripas(self, args: tuple[int, ...]) -> Regs:
        """RMI_RTT_INIT_RIPAS (RMM 1.0 B3.3): RIPAS RAM over [base, top) of a NEW Realm, per entry."""
        rd, base, top = args[0], args[1], args[2]
        command = self._commands["rtt_init_ripas"]
        if top <= base:
            return self._fail(command, "size_valid")
        realm = self._rd_realm(command, rd)
        # rmm-abi.md §12 #6: TF-RMM rejects an unaligned base as an input error; the spec has no such
        # condition (the case falls to base_align below).
        if self.quirk(6) and base & _ALIGN:
            return self._fail(command, "tf_rmm_base_granule_align")
        # rmm-abi.md §12 #7: top_gran_align before realm_state and the walk (TF-RMM order, allowed).
        if top & _ALIGN:
            return self._fail(command, "top_gran_align")
        if top - GRANULE_SIZE >= realm.protected_top:
            return self._fail(command, "top_bound")
        if realm.state is not RealmState.NEW:
            return self._fail(command, "realm_state")
        found = realm.walk(base, PAGE_LEVEL)
        size = entry_size(found.level)
        if base & (size - 1):
            return self._fail(command, "base_align", index=found.level)
        if found.entry.state is not Hipas.UNASSIGNED:
            return self._fail(command, "rtte_state", index=found.level)
        entries = found.rtt.entries
        index = found.index
        ipa = base
        rim = realm.rim
        algo = realm.hash_algo
        while index < len(entries) and ipa + size <= top:
            entry = entries[index]
            if self.quirk(8):
                # rmm-abi.md §12 #8: TF-RMM stops at the first entry that is not UNASSIGNED EMPTY/RAM;
                # the spec's RttInitRipas processes every entry below top that is not a TABLE.
                if entry.state is not Hipas.UNASSIGNED or entry.ripas is Ripas.DESTROYED:
                    break
            elif entry.state is Hipas.TABLE:
                break
            entries[index] = (
                UNASSIGNED_RAM if entry.state is Hipas.UNASSIGNED else _with_ripas(entry, Ripas.RAM)
            )
            rim = measurement.rim_extend_ripas(algo, rim, base=ipa, top=ipa + size)
            ipa += size
            index += 1
        if ipa == base:
            return self._fail(command, "no_progress", index=found.level)
        realm.measurements[0] = rim
        return (RmiStatus.SUCCESS, ipa, 0, 0, 0)

    def _rmi_rtt_set_ripas(self, args: tuple[int, ...]) -> Regs:
        """RMI_RTT_SET_RIPAS (RMM 1.0 B3.3): carry out (part of) the RIPAS change a REC asked for."""
        rd, rec_addr, base, top = args[0], args[1], args[2], args[3]
        command = self._commands["rtt_set_ripas"]
        # rmm-abi.md §12 #10: size and top alignment before the RD/REC checks (TF-RMM order, allowed).
        if top <= base:
            return self._fail(command, "size_valid")
        if top & _ALIGN:
            return self._fail(command, "top_gran_align")
        realm = self._rd_realm(command, rd)
        rec = self._rec(command, rec_addr)
        if rec.state is RecState.RUNNING:
            return self._fail(command, "rec_state")
        if rec.owner is not realm:
            return self._fail(command, "rec_owner")
        if base != rec.ripas_addr:
            return self._fail(command, "base_bound")
        if top > rec.ripas_top:
            return self._fail(command, "top_bound")
        target = rec.ripas_value
        found = realm.walk(base, PAGE_LEVEL)
        size = entry_size(found.level)
        entries = found.rtt.entries
        index = found.index
        first = entries[index]
        # rmm-abi.md §12 #9: the spec excuses an unaligned base or a stuck first entry whose RIPAS
        # already is the requested one; TF-RMM fails both.
        already = not self.quirk(9) and first.ripas is target and first.state is not Hipas.TABLE
        if base & (size - 1) and not already:
            return self._fail(command, "base_align", index=found.level)
        ipa = base
        while index < len(entries) and ipa < top:
            entry = entries[index]
            entry_top = found.rtt.ipa_of(index) + size
            if entry.state is Hipas.TABLE:
                break
            if entry.ripas is target and not self.quirk(9):
                ipa = min(entry_top, top)
                index += 1
                continue
            if entry_top > top or ipa & (size - 1):
                break
            if entry.ripas is Ripas.DESTROYED and not rec.ripas_destroyed:
                break
            entries[index] = (
                unassigned(target) if entry.state is Hipas.UNASSIGNED else _with_ripas(entry, target)
            )
            ipa = entry_top
            index += 1
        if ipa == base:
            return self._fail(command, "no_progress", index=found.level)
        rec.ripas_addr = ipa
        return (RmiStatus.SUCCESS, ipa, 0, 0, 0)


def _with_ripas(entry: Rtte, ripas: Ripas) -> Rtte:
    """``entry`` with another RIPAS (ASSIGNED entries keep their address)."""
    return Rtte(entry.state, ripas, entry.addr, entry.attr, entry.table)
