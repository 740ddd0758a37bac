"""Targets driven through the resident agent: everything a target does over an :class:`AgentLink`.

A subclass only says how to reach the agent's UART (:meth:`AgentTarget._connect`)
and how to let go of it (:meth:`AgentTarget._disconnect`); the link session, the
run folder's ``console.log`` (console text from the first byte the link reads)
and ``link.trace.log`` (one line per transmission, retry and resync), platform
facts from the handshake and the operations of the target interface live here.

Link settings are a ``link:`` section of the kind's profile section
(:data:`LINK_PARAMS`): timeouts per phase, retries, the largest frame, and an
optional ``noise`` specification that wraps the stream in
:class:`~cca_hil.agent.noise.NoisyStream` for farm diagnostics.
"""

from __future__ import annotations

import abc
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar

from cca_hil.agent.link import AgentLink, LinkTimeouts
from cca_hil.agent.noise import NoiseSpec, NoisyStream
from cca_hil.agent.protocol import AgentCaps, HelloReply, InfoReply, RealmActionKind
from cca_hil.agent.protocol import RealmAction as WireAction
from cca_hil.agent.protocol import sysreg_encoding as _sysreg_encoding
from cca_hil.agent.streams import ByteStream
from cca_hil.arch.rmi import SMCCC_NOT_SUPPORTED, RmiStatus
from cca_hil.arch.rsi_1_0 import RSI_1_0, WIDE_REGISTERS, RsiCommand, psci_function, wide_to_registers
from cca_hil.errors import InputError, ProfileError, TargetError
from cca_hil.targets.base import AccessOp, AccessResult, Capability, RealmActionLike, Target, TargetInfo

if TYPE_CHECKING:
    from cca_hil.profiles import Profile

RMI_VERSION_FID = 0xC400_0150
RMI_VERSION_REQUESTED = 0x10000
"""RMI ABI 1.0, the version the host asks for when it probes the RMM."""

CONSOLE_LOG = "console.log"
TRACE_LOG = "link.trace.log"

LINK_PARAMS: dict[str, Any] = {
    "timeouts": dict.fromkeys(("boot", "handshake", "request", "bulk", "gap"), float),
    "retries": int,
    "max_frame": int,
    "noise": str,
    "noise_seed": int,
}
"""Schema of the ``link:`` section every agent-driven kind accepts."""


def sysreg_encoding(name: str) -> int:
    """op0:op1:CRn:CRm:op2 of a register, as in MRS bits [20:5] (the agent's SYSREG action field)."""
    try:
        return _sysreg_encoding(name)
    except ValueError as exc:
        raise TargetError(str(exc)) from None


def wire_actions(actions: Sequence[RealmActionLike]) -> list[WireAction]:
    """The agent's encoding of a REC entry's realm actions (``cca_hil.sequences.RealmAction``).

    The realm payload is told exactly what the model's payload does for the same
    action (``cca_hil.targets.model.realm_step``): a call loads the registers the
    spec gives its inputs — zeros included, the others keep their values — with a
    64-byte value in eight registers, little-endian; ``host_call`` is a HOST_CALL
    action (the payload builds the RsiHostCall from ``imm`` and ``gprs``, at ``addr``
    when given); accesses and register reads use X1.
    """
    return [_wire_action(action) for action in actions]


def _wire_action(action: RealmActionLike) -> WireAction:
    kind = str(action.kind)
    args: Mapping[str, Any] = action.args
    if kind == "rsi":
        command = RSI_1_0.by_name.get(action.name)
        if command is None:
            raise InputError(f"unknown RSI command {action.name!r}", valid=list(RSI_1_0.by_name))
        if command.name == "host_call":
            gprs: Mapping[int, Any] = args.get("gprs", {})
            top = max((int(i) for i in gprs), default=-1)
            return WireAction(
                RealmActionKind.HOST_CALL,
                imm=int(args.get("imm", 0)),
                addr=int(args["addr"]) if "addr" in args else None,
                args=tuple(int(gprs.get(i, 0)) for i in range(top + 1)),
            )
        return WireAction(RealmActionKind.RSI, fid=command.fid, args=_rsi_registers(command, args))
    if kind in ("psci", "smc"):
        if action.fid is None:
            raise InputError(f"realm {kind} action {action.name!r} has no function identifier")
        fid = int(action.fid)
        if kind == "psci":
            function = psci_function(fid)
            names = function.inputs if function is not None else ()
            return WireAction(RealmActionKind.PSCI, fid=fid, args=tuple(int(args.get(n, 0)) for n in names))
        count = max((int(k[1:]) for k in args if k.startswith("x")), default=0)
        return WireAction(
            RealmActionKind.SMC, fid=fid, args=tuple(int(args.get(f"x{i}", 0)) for i in range(1, count + 1))
        )
    if kind == "mmio":
        return WireAction(
            RealmActionKind.MMIO,
            ipa=int(args["ipa"]),
            size=int(args.get("size", 8)),
            write=action.name == "write",
            value=int(args.get("value", 0)),
        )
    if kind == "hvc":
        return WireAction(RealmActionKind.HVC, imm=int(args.get("imm", 0)))
    if kind == "sysreg":
        return WireAction(RealmActionKind.SYSREG, fid=sysreg_encoding(action.name))
    if kind in ("wfi", "wfe", "irq", "fiq", "serror"):
        return WireAction(RealmActionKind[kind.upper()])
    raise TargetError(f"realm action {kind!r} has no agent encoding")


def _rsi_registers(command: RsiCommand, args: Mapping[str, Any]) -> tuple[int, ...]:
    """X1.. of an RSI call: each input in its registers, up to the highest one the command uses."""
    registers: dict[int, int] = {}
    for param in command.inputs:
        raw = args.get(param.name)
        if param.name == "size" and command.name == "measurement_extend" and raw is None:
            # An extension without a size hashes the whole value given (64 bytes when none is).
            value = args.get("value")
            raw = len(value) if isinstance(value, bytes) else 8 * WIDE_REGISTERS
        if param.count > 1:
            data = raw if isinstance(raw, bytes) else int(raw or 0).to_bytes(8, "little")
            for i, value in enumerate(wide_to_registers(data, param.count)):
                registers[param.reg + i] = value
        else:
            registers[param.reg] = int(raw or 0)
    top = max(registers, default=0)
    return tuple(registers.get(i, 0) for i in range(1, top + 1))


@dataclass(frozen=True)
class LinkSettings:
    """The agent link's settings from a profile's ``link:`` section."""

    timeouts: LinkTimeouts = field(default_factory=LinkTimeouts)
    retries: int = 8
    max_frame: int = 65536
    noise: NoiseSpec | None = None
    noise_seed: int = 0

    @classmethod
    def from_section(
        cls, section: Mapping[str, Any], *, where: str, defaults: LinkTimeouts | None = None
    ) -> LinkSettings:
        """Build from a ``link:`` section already validated against :data:`LINK_PARAMS`."""
        base = defaults or LinkTimeouts()
        values = {f.name: getattr(base, f.name) for f in fields(base)}
        values.update(section.get("timeouts", {}))
        try:
            timeouts = LinkTimeouts(**values)
        except ValueError as exc:
            raise ProfileError(f"link.timeouts: {exc}", where=where) from None
        retries = int(section.get("retries", 8))
        if retries < 0:
            raise ProfileError(f"link.retries must be 0 or more, got {retries}", where=where)
        max_frame = int(section.get("max_frame", 65536))
        if max_frame < 256:
            raise ProfileError(f"link.max_frame must be at least 256 bytes, got {max_frame}", where=where)
        noise = None
        text = section.get("noise")
        if text:
            try:
                noise = NoiseSpec.parse(str(text))
            except InputError as exc:
                raise ProfileError(f"link.noise: {exc.what}", where=where, valid=exc.valid) from None
        return cls(
            timeouts=timeouts,
            retries=retries,
            max_frame=max_frame,
            noise=noise,
            noise_seed=int(section.get("noise_seed", 0)),
        )


class _TraceLog:
    """``link.trace.log``: the link's trace lines with a time since open, written as they come."""

    def __init__(self, path: Path) -> None:
        self._file: IO[str] = path.open("a", encoding="utf-8", buffering=1)
        self._lock = threading.Lock()
        self._start = time.monotonic()

    def __call__(self, message: str) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.write(f"{time.monotonic() - self._start:10.4f} {message}\n")

    def close(self) -> None:
        with self._lock:
            self._file.close()


class AgentTarget(Target):
    """A target reached through the resident agent on a byte stream (a UART, a model terminal, TCP)."""

    kind: ClassVar[str] = ""

    DEFAULT_TIMEOUTS: ClassVar[LinkTimeouts] = LinkTimeouts()
    """Link timeouts of the kind when its profile names none (a model boots slower than a board)."""

    def __init__(self, *, profile: Profile, run_dir: Path | None = None) -> None:
        super().__init__(profile=profile, run_dir=run_dir)
        self.link_settings = LinkSettings.from_section(
            profile.params.get("link", {}), where=profile.source, defaults=self.DEFAULT_TIMEOUTS
        )
        self.link: AgentLink | None = None
        self._folder: Path | None = None
        self._console: IO[bytes] | None = None
        self._trace: _TraceLog | None = None
        self._hello: HelloReply | None = None
        self._info: InfoReply | None = None
        self._rmm: tuple[int, ...] | None = None
        self._caps: frozenset[str] = frozenset()
        self._in_flight: dict[int, Any] = {}
        """Per REC: the realm action left in progress by its last exit (answered on the next entry)."""

    # -- transport hooks -----------------------------------------------------------------------

    @abc.abstractmethod
    def _connect(self, folder: Path) -> ByteStream:
        """Reach the agent's UART and return its byte stream (logs of the transport go in ``folder``)."""

    @abc.abstractmethod
    def _disconnect(self) -> None:
        """Release what :meth:`_connect` set up; idempotent, bounded, safe after a failed connect."""

    def _facts(self) -> dict[str, str]:
        """Rows the kind adds to ``info()`` (transport, ports, process)."""
        return {}

    # -- run folder and logs ---------------------------------------------------------------------

    @property
    def folder(self) -> Path:
        """The run folder holding this target's logs (a fresh temporary one when none was given)."""
        if self._folder is None:
            if self.run_dir is not None:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                self._folder = self.run_dir
            else:
                self._folder = Path(tempfile.mkdtemp(prefix=f"cca-hil-{self.kind}-"))
        return self._folder

    @property
    def console_log(self) -> Path:
        """The console capture: everything the target printed that was not a frame."""
        return self.folder / CONSOLE_LOG

    @property
    def trace_log(self) -> Path:
        """The link trace: transmissions, retries, damage and resynchronisation."""
        return self.folder / TRACE_LOG

    def console_write(self, data: bytes) -> None:
        """Append console bytes the transport saw before the link started (e.g. waiting for a banner)."""
        if self._console is not None and data:
            self._console.write(data)
            self._console.flush()

    # -- lifecycle -------------------------------------------------------------------------------

    def open(self) -> None:
        """Reach the agent, shake hands, ask the platform facts and probe the RMM; idempotent."""
        if self._opened:
            return
        folder = self.folder
        self._console = (folder / CONSOLE_LOG).open("ab", buffering=0)
        self._trace = _TraceLog(folder / TRACE_LOG)
        try:
            stream = self._connect(folder)
            settings = self.link_settings
            if settings.noise is not None:
                self._trace(f"noise: {settings.noise} seed={settings.noise_seed}")
                stream = NoisyStream(stream, settings.noise, seed=settings.noise_seed)
            self.link = AgentLink(
                stream,
                timeouts=settings.timeouts,
                retries=settings.retries,
                console=self._console,
                trace=self._trace,
                max_frame=settings.max_frame,
                name=f"{self.name} agent",
            )
            self._hello = self.link.open()
            self._info = self.link.info()
            caps = set(self.link.capabilities())
            if self._hello.caps & AgentCaps.SMC:
                self._rmm = self.link.smc(RMI_VERSION_FID, RMI_VERSION_REQUESTED)
                if self._rmm[0] != SMCCC_NOT_SUPPORTED:
                    caps.add(Capability.RME)
            self._caps = frozenset(caps | self._extra_capabilities())
        except BaseException:
            self._teardown()
            raise
        self._opened = True

    def _extra_capabilities(self) -> frozenset[str]:
        """Capabilities the kind adds to what the agent announced (e.g. ``mec`` from the model's config)."""
        return frozenset()

    def close(self) -> None:
        """Stop the link, release the transport, close the logs; idempotent and bounded."""
        self._teardown()
        self._opened = False

    def _teardown(self) -> None:
        link, self.link = self.link, None
        try:
            if link is not None:
                link.close()
        finally:
            try:
                self._disconnect()
            finally:
                # The reader has stopped (or never started): nothing writes to the logs any more.
                if self._console is not None:
                    self._console.close()
                    self._console = None
                if self._trace is not None:
                    self._trace.close()
                    self._trace = None

    def _link(self) -> AgentLink:
        if self.link is None:
            raise TargetError(f"target {self.name!r} is not open")
        return self.link

    # -- facts -----------------------------------------------------------------------------------

    @property
    def capabilities(self) -> frozenset[str]:
        """What the agent announced, ``rme`` when an RMM answers RMI_VERSION; empty until opened."""
        return self._caps

    def info(self) -> TargetInfo:
        """Platform facts from the handshake and INFO (memory map, granule pool, ``platform.*`` names)."""
        link = self._link()
        assert self._hello is not None and self._info is not None
        hello, reply = self._hello, self._info
        facts = dict(reply.facts)
        facts.update(
            {
                "agent": hello.agent,
                "link protocol": f"{hello.major}.{hello.minor}",
                "agent boot id": str(hello.boot_id),
                "frame limit": f"{link.frame_limit} B",
                "console log": str(self.console_log),
            }
        )
        if self.link_settings.noise is not None:
            facts["injected noise"] = f"{self.link_settings.noise} (seed {self.link_settings.noise_seed})"
        facts.update(self._facts())
        rmm_version = None
        if self._rmm is not None and (self._rmm[0] & 0xFF) in (RmiStatus.SUCCESS, RmiStatus.ERROR_INPUT):
            rmm_version = self._rmm[2]
        return TargetInfo(
            name=self.name,
            kind=self.kind,
            pa_bits=reply.pa_bits,
            regions=reply.regions,
            granule_pool=reply.granule_pool,
            rmm_version=rmm_version,
            capabilities=self.capabilities,
            platform=dict(reply.platform),
            facts=facts,
        )

    # -- operations ------------------------------------------------------------------------------

    def smc(self, fid: int, *args: int) -> tuple[int, ...]:
        """An SMC issued by the agent at NS-EL2; X0..X4."""
        return self._link().smc(fid, *args)

    def read(self, pa: int, size: int) -> bytes:
        """Non-secure memory read by the agent (GranuleProtectionFault on a GPF)."""
        return self._link().read(pa, size)

    def write(self, pa: int, data: bytes) -> None:
        """Non-secure memory write by the agent (GranuleProtectionFault on a GPF)."""
        self._link().write(pa, data)

    def access(self, pa: int, op: AccessOp, size: int = 8, value: int = 0) -> AccessResult:
        """One probing load or store by the agent; a fault is returned."""
        return self._link().access(pa, op, size, value)

    def realm_enter(self, rec_pa: int, run_pa: int, actions: Sequence[Any] = ()) -> tuple[int, ...]:
        """RMI_REC_ENTER through the agent with the realm payload performing ``actions``.

        Marks the actions the realm began (``start()``) and hands each call its
        result (``complete(regs)``) when the realm observed it — possibly on a later
        entry of the same REC, for calls that exit to the host.
        """
        self.require(Capability.REALM_EXEC)
        reply = self._link().realm_run(rec_pa, run_pa, wire_actions(actions))
        pending = self._in_flight.pop(rec_pa, None)
        begun = list(actions[: reply.started])
        for action in begun:
            action.start()
        answered: set[int] = set()
        for obs in reply.observations:
            if obs.index == 0:
                if pending is not None:
                    pending.complete(obs.regs)
                    pending = None
                continue
            if obs.index <= len(begun):
                begun[obs.index - 1].complete(obs.regs)
                answered.add(obs.index - 1)
        if pending is not None:
            self._in_flight[rec_pa] = pending
        # The last action the realm began without an answer is the one it exited in.
        unanswered = [a for i, a in enumerate(begun) if i not in answered]
        if unanswered:
            self._in_flight[rec_pa] = unanswered[-1]
        return reply.regs
