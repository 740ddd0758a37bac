"""Debug probes through pyOCD: listing, opening by unique id, memory over one MEM-AP, loading, reset.

A-profile boards have no Cortex-M core for pyOCD to drive, so a session here
stops at the DAP: it connects the debug port, finds the APs, and moves memory
through one MEM-AP with pyOCD's own block-transfer code (CSW once, TAR per
auto-increment block, DRW streamed).

Which PAS a probe access uses: a MEM-AP's bus attributes select **Secure or
Non-secure** only (AxPROT[1] on an AXI-AP, HNONSEC on an AHB-AP). **Realm and Root
memory are never reachable this way**, and a probe read that succeeds or
faults says nothing about what the GPT allows the PE: it never stands in for a
GPT isolation check (``check gpt`` does that through the agent).

pyOCD, pyftdi and intelhex are imported inside the functions that use them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from cca_hil.arch.pas import Pas
from cca_hil.errors import ProfileError, TargetError, TransportError
from cca_hil.images import Image, check_fits, load_image
from cca_hil.resource import Resource
from cca_hil.targets.base import MemoryRegion

ApKind = Literal["mem", "axi", "ahb", "apb"]
AP_KINDS: tuple[ApKind, ...] = ("mem", "axi", "ahb", "apb")
PROBE_PAS: tuple[Pas, ...] = (Pas.NONSECURE, Pas.SECURE)
"""The only PAS a MEM-AP can select; Realm and Root are unreachable from a debugger."""

PROBE_PARAMS: Mapping[str, Any] = MappingProxyType(
    {"unique_id": str, "ap": int, "ap_kind": str, "pas": str, "frequency": int}
)
"""Profile schema of a ``probe:`` section (see :func:`cca_hil.profiles.validate`)."""

CHUNK = 64 * 1024
"""Bytes per block call: a whole number of 1 KiB auto-increment blocks, and the progress step."""

ProgressFn = Callable[[str, int, int], None]
"""``progress(phase, done, total)``; phases are ``load``, ``verify`` and ``read``."""


@dataclass(frozen=True, slots=True)
class ProbeConfig:
    """Which probe, which MEM-AP, and the PAS its accesses use."""

    unique_id: str
    ap: int = 0
    ap_kind: ApKind = "axi"
    pas: Pas = Pas.NONSECURE
    frequency: int = 1_000_000

    @classmethod
    def from_params(cls, params: Mapping[str, Any], *, where: str = "probe") -> ProbeConfig:
        """Build from a validated profile section; values outside their range are ProfileErrors."""
        uid = params.get("unique_id")
        if not isinstance(uid, str) or not uid:
            raise ProfileError(f"{where}.unique_id is required (see `cca-hil probe list`)")
        kind = params.get("ap_kind", "axi")
        if kind not in AP_KINDS:
            raise ProfileError(f"{where}.ap_kind {kind!r} is not a MEM-AP kind", valid=AP_KINDS)
        try:
            pas = Pas.parse(str(params.get("pas", "nonsecure")))
        except ValueError:
            pas = Pas.NONE
        if pas not in PROBE_PAS:
            raise ProfileError(
                f"{where}.pas {params.get('pas')!r}: a MEM-AP reaches the Secure or Non-secure PAS only",
                valid=[str(p) for p in PROBE_PAS],
            )
        ap = int(params.get("ap", 0))
        if not 0 <= ap <= 255:
            raise ProfileError(f"{where}.ap {ap} is not an APSEL (0-255)")
        frequency = int(params.get("frequency", 1_000_000))
        if frequency <= 0:
            raise ProfileError(f"{where}.frequency must be positive, got {frequency}")
        return cls(unique_id=uid, ap=ap, ap_kind=kind, pas=pas, frequency=frequency)


# -- listing -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """One attached debug probe (pyOCD) or FTDI interface (pyftdi)."""

    kind: Literal["debug-probe", "ftdi"]
    unique_id: str
    description: str
    url: str | None = None
    """``ftdi://`` URL for FTDI interfaces (what a power profile names)."""


@dataclass(frozen=True, slots=True)
class DeviceListing:
    """What ``probe list`` shows: the devices found, and why a source could not be asked."""

    devices: tuple[DeviceInfo, ...]
    problems: tuple[str, ...] = ()


def list_debug_probes() -> list[DeviceInfo]:
    """Debug probes every pyOCD probe plugin sees (simulated ones included when plugged)."""
    from pyocd.core import exceptions
    from pyocd.probe.aggregator import DebugProbeAggregator

    try:
        probes = DebugProbeAggregator.get_all_connected_probes()
    except exceptions.Error as error:
        raise TransportError(f"pyOCD could not enumerate debug probes: {error}") from error
    return [DeviceInfo("debug-probe", p.unique_id, p.description) for p in probes]


def list_ftdi_devices() -> list[DeviceInfo]:
    """FTDI interfaces pyftdi sees, one per ``ftdi://`` URL."""
    from pyftdi.ftdi import Ftdi
    from pyftdi.usbtools import UsbTools

    try:
        found = Ftdi.list_devices()
    except ValueError as error:
        # pyftdi raises ValueError("No backend available") when libusb cannot be loaded.
        raise TransportError(
            f"pyftdi cannot enumerate USB devices: {error} (is libusb-1.0 installed?)"
        ) from error
    out = []
    for url, description in UsbTools.build_dev_strings("ftdi", Ftdi.VENDOR_IDS, Ftdi.PRODUCT_IDS, found):
        serial = url.split("/")[2].rsplit(":", 1)[-1]
        out.append(DeviceInfo("ftdi", serial, description.strip("()"), url=url))
    return out


def list_devices() -> DeviceListing:
    """Debug probes and FTDI interfaces; a source that cannot be asked is reported, not fatal."""
    devices: list[DeviceInfo] = []
    problems: list[str] = []
    for source in (list_debug_probes, list_ftdi_devices):
        try:
            devices += source()
        except TransportError as error:
            problems.append(str(error))
    return DeviceListing(tuple(devices), tuple(problems))


def find_debug_probe(unique_id: str) -> Any:
    """The pyOCD ``DebugProbe`` whose unique id is exactly ``unique_id`` (``type:ID`` selects a plugin)."""
    from pyocd.core import exceptions
    from pyocd.probe.aggregator import DebugProbeAggregator

    try:
        probe = DebugProbeAggregator.get_probe_with_id(unique_id)
    except exceptions.Error as error:
        raise TransportError(f"debug probe {unique_id!r}: {error}") from error
    if probe is not None:
        return probe
    present = [info.unique_id for info in list_debug_probes()]
    attached = f"present: {', '.join(present)}" if present else "no debug probes are attached"
    raise TransportError(f"no debug probe with unique id {unique_id!r} ({attached})")


# -- sessions ---------------------------------------------------------------------------


class _CorelessDelegate:
    """pyOCD target delegate for A-profile boards: no core check, no halt, no flash setup."""

    def will_init_target(self, target: Any, init_sequence: Any) -> None:
        """Drop the init steps that need a Cortex-M core."""
        for task in ("check_for_cores", "halt_on_connect", "create_flash"):
            if init_sequence.has_task(task):
                init_sequence.remove_task(task)


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What a load did."""

    bytes_loaded: int
    segments: int
    verified: bool
    entry: int | None


class ProbeSession(Resource):
    """A pyOCD session on one debug probe, moving memory through one MEM-AP in one PAS.

    ``pas`` is the PAS of every access (Secure or Non-secure, from the MEM-AP's
    bus attributes; None for an AP without them, such as the debug APB). Realm
    and Root memory are never reachable, and what a probe access sees is no
    evidence about GPT isolation.
    """

    def __init__(self, config: ProbeConfig, *, probe: Any | None = None) -> None:
        self.config = config
        self._probe = probe
        self._session: Any = None
        self._ap: Any = None
        self._pas: Pas | None = None

    @property
    def name(self) -> str:
        """``probe ID AP#n`` for messages."""
        return f"probe {self.config.unique_id} AP#{self.config.ap}"

    @property
    def pas(self) -> Pas | None:
        """The PAS the MEM-AP's accesses use once open (Secure or Non-secure only)."""
        return self._pas

    @property
    def is_open(self) -> bool:
        """True between open() and close()."""
        return self._session is not None

    # -- lifecycle ----------------------------------------------------------------

    def open(self) -> None:
        """Find the probe, connect its debug port without cores, and select the MEM-AP; idempotent."""
        if self._session is not None:
            return
        from pyocd.core import exceptions
        from pyocd.core.session import Session

        probe = self._probe if self._probe is not None else find_debug_probe(self.config.unique_id)
        options = {
            "allow_no_cores": True,
            "connect_mode": "attach",
            "target_override": "cortex_m",
            "warning.cortex_m_default": False,
            "no_config": True,
            "frequency": self.config.frequency,
        }
        session = Session(probe, auto_open=False, options=options)
        session.delegate = _CorelessDelegate()
        try:
            session.open()
        except exceptions.Error as error:
            session.close()
            raise TransportError(f"{self.name}: cannot connect: {error}") from error
        self._session = session
        try:
            self._ap = self._select_ap()
            self._pas = self._select_pas()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Disconnect and close the probe; idempotent."""
        session, self._session, self._ap = self._session, None, None
        if session is not None:
            session.close()

    def _select_ap(self) -> Any:
        from pyocd.coresight import ap as pyocd_ap

        aps = self._session.target.aps
        present = ", ".join(f"AP#{a.address.nominal_address} {a.type_name}" for a in aps.values()) or "none"
        found = next((a for a in aps.values() if a.address.nominal_address == self.config.ap), None)
        if found is None:
            raise TargetError(f"{self.name}: no such access port (present: {present})")
        wanted = {
            "mem": pyocd_ap.MEM_AP,
            "axi": pyocd_ap.AXI_AP,
            "ahb": pyocd_ap.AHB_AP,
            "apb": pyocd_ap.APB_AP,
        }[self.config.ap_kind]
        if not isinstance(found, wanted):
            raise TargetError(
                f"{self.name}: the access port is {found.type_name} but the profile's ap_kind is "
                f"{self.config.ap_kind!r} (present: {present})"
            )
        return found

    def _select_pas(self) -> Pas | None:
        from pyocd.core.target import Target as PyocdTarget
        from pyocd.coresight import ap as pyocd_ap

        ap = self._ap
        secure = self.config.pas is Pas.SECURE
        if secure and not ap.is_enabled_for(PyocdTarget.SecurityState.SECURE):
            raise TargetError(
                f"{self.name}: secure debug is disabled (CSW.SDeviceEn=0); the Secure PAS is unreachable"
            )
        if isinstance(ap, pyocd_ap.AXI_AP):
            if not ap.implemented_hprot_mask & pyocd_ap.PROT_NONSECURE:
                raise TargetError(
                    f"{self.name}: CSW.Prot[1] (AxPROT[1]) is not implemented; cannot select the PAS"
                )
            ns = 0 if secure else pyocd_ap.PROT_NONSECURE
            ap.hprot = (ap.hprot & ~pyocd_ap.PROT_NONSECURE) | ns
            return self.config.pas
        if isinstance(ap, pyocd_ap.AHB_AP):
            if not ap.implemented_hnonsec_mask:
                raise TargetError(f"{self.name}: CSW.HNONSEC is not implemented; cannot select the PAS")
            ap.hnonsec = pyocd_ap.SECURE if secure else pyocd_ap.NONSECURE
            return self.config.pas
        # APB-APs and unknown MEM-APs carry no security attribute for system memory.
        return None

    # -- memory -----------------------------------------------------------------------

    def _require_open(self) -> Any:
        if self._ap is None:
            raise TransportError(f"{self.name}: session is not open")
        return self._ap

    @contextmanager
    def _transfer(self, action: str) -> Iterator[None]:
        from pyocd.core import exceptions

        try:
            yield
        except exceptions.TransferFaultError as error:
            start = error.fault_address
            where = f" at {start:#x}-{error.fault_end_address:#x}" if start is not None else ""
            pas = f" ({self._pas} PAS)" if self._pas is not None else ""
            raise TargetError(f"{self.name}: transfer fault{where}{pas} while {action}") from error
        except exceptions.Error as error:
            raise TransportError(f"{self.name}: {action} failed: {error}") from error

    def _check_range(self, pa: int, size: int) -> None:
        # pyOCD's MEM-AP has no Large Physical Address support: TAR is 32 bits.
        if pa < 0 or pa + size > 1 << 32:
            raise TargetError(
                f"{self.name}: {pa:#x}+{size:#x} is beyond the 32-bit address reach of a pyOCD MEM-AP"
            )

    def write(self, pa: int, data: bytes, *, progress: ProgressFn | None = None, phase: str = "load") -> None:
        """Write ``data`` at ``pa`` with block transfers (unaligned ends as byte/halfword accesses)."""
        ap = self._require_open()
        self._check_range(pa, len(data))
        total = len(data)
        head = min((-pa) & 3, total)
        body = (total - head) & ~3
        with self._transfer(f"writing {pa:#x}+{total:#x}"):
            if head:
                ap.write_memory_block8(pa, list(data[:head]))
            for offset in range(head, head + body, CHUNK):
                chunk = data[offset : min(offset + CHUNK, head + body)]
                ap.write_memory_block32(pa + offset, struct.unpack(f"<{len(chunk) // 4}I", chunk))
                if progress is not None:
                    progress(phase, offset + len(chunk), total)
            if head + body < total:
                ap.write_memory_block8(pa + head + body, list(data[head + body :]))
        if progress is not None:
            progress(phase, total, total)

    def iter_read(self, pa: int, size: int) -> Iterator[bytes]:
        """Read ``size`` bytes at ``pa`` in chunks of at most :data:`CHUNK`."""
        ap = self._require_open()
        self._check_range(pa, size)
        head = min((-pa) & 3, size)
        body = (size - head) & ~3
        with self._transfer(f"reading {pa:#x}+{size:#x}"):
            if head:
                yield bytes(ap.read_memory_block8(pa, head))
            for offset in range(head, head + body, CHUNK):
                count = min(CHUNK, head + body - offset) // 4
                words = ap.read_memory_block32(pa + offset, count)
                yield struct.pack(f"<{count}I", *words)
            if head + body < size:
                yield bytes(ap.read_memory_block8(pa + head + body, size - head - body))

    def read(self, pa: int, size: int, *, progress: ProgressFn | None = None) -> bytes:
        """Read ``size`` bytes at ``pa``."""
        out = bytearray()
        for chunk in self.iter_read(pa, size):
            out += chunk
            if progress is not None:
                progress("read", len(out), size)
        return bytes(out)

    def read_to_file(self, pa: int, size: int, path: Path, *, progress: ProgressFn | None = None) -> int:
        """Stream ``size`` bytes at ``pa`` into ``path`` as they arrive; returns the bytes written."""
        done = 0
        with path.open("wb") as out:
            for chunk in self.iter_read(pa, size):
                out.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress("read", done, size)
        return done

    def verify(self, pa: int, expected: bytes, *, progress: ProgressFn | None = None, total: int = 0) -> None:
        """Read back and compare; TargetError names the first differing address."""
        offset = 0
        for chunk in self.iter_read(pa, len(expected)):
            want = expected[offset : offset + len(chunk)]
            if chunk != want:
                index = next(i for i, (a, b) in enumerate(zip(chunk, want, strict=True)) if a != b)
                address = pa + offset + index
                wrote, read = want[index], chunk[index]
                raise TargetError(
                    f"{self.name}: verify failed at {address:#x}: wrote {wrote:#04x}, read {read:#04x}"
                )
            offset += len(chunk)
            if progress is not None:
                progress("verify", offset, total or len(expected))

    def load(self, image: Image, *, verify: bool = True, progress: ProgressFn | None = None) -> LoadResult:
        """Write every segment of ``image``, then (by default) read each back and compare."""
        total = image.size
        done = 0

        def step(base: int) -> ProgressFn | None:
            if progress is None:
                return None
            return lambda phase, n, _: progress(phase, base + n, total)

        for segment in image.segments:
            self.write(segment.address, segment.data, progress=step(done))
            done += len(segment.data)
        if verify:
            done = 0
            for segment in image.segments:
                self.verify(segment.address, segment.data, progress=step(done))
                done += len(segment.data)
        return LoadResult(total, len(image.segments), verify, image.entry)

    def load_file(
        self,
        path: Path | str,
        *,
        address: int | None = None,
        regions: Iterable[MemoryRegion] = (),
        verify: bool = True,
        progress: ProgressFn | None = None,
    ) -> LoadResult:
        """Parse an image, check it against the memory map (and this session's PAS), and load it."""
        image = load_image(path, address=address)
        regions = tuple(regions)
        if regions:
            check_fits(image, regions, pas=self._pas if self.is_open else self.config.pas)
        self.open()
        return self.load(image, verify=verify, progress=progress)

    # -- control ------------------------------------------------------------------------

    def reset(self) -> None:
        """System reset through the probe's nRESET (no core to reset through)."""
        self._require_open()
        from pyocd.core import exceptions

        try:
            self._session.target.reset()
        except exceptions.Error as error:
            raise TransportError(f"{self.name}: reset failed: {error}") from error


def rich_progress(progress: Any) -> ProgressFn:
    """A :data:`ProgressFn` that drives one task per phase of a caller-owned ``rich.progress.Progress``."""
    tasks: dict[str, Any] = {}

    def update(phase: str, done: int, total: int) -> None:
        task = tasks.get(phase)
        if task is None:
            task = tasks[phase] = progress.add_task(phase, total=total)
        progress.update(task, completed=done, total=total)

    return update


def open_probe(config: ProbeConfig) -> ProbeSession:
    """An opened :class:`ProbeSession` (use as a context manager)."""
    session = ProbeSession(config)
    session.open()
    return session


def describe_pas(pas: Pas | None) -> str:
    """One line for CLI output saying what a probe access can and cannot reach."""
    reach = f"the {pas} PAS" if pas is not None else "the AP's own bus (no PAS attribute)"
    return f"probe accesses use {reach}; Realm and Root are never reachable; this is no GPT isolation check"
