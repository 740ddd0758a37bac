"""A board in a labgrid farm (profile kind ``labgrid``): a place acquired from a labgrid coordinator.

labgrid (≥ 25, gRPC; reference targets-transports.md §7) keeps a farm's boards as
*places* on a coordinator, each a set of resources that exporters publish. When
the target opens it acquires its place (the coordinator's lock, recorded as
``host/user``; ``LG_HOSTNAME``/``LG_USERNAME`` override them), takes the place's
``NetworkSerialPort`` as the agent's UART — opened by cca-hil itself as
``rfc2217://host:port`` (``socket://`` for ``protocol: raw``), through labgrid's
proxy manager so ``LG_PROXY`` and exporter proxies work — and its power
resource (``NetworkPowerPort``, ``PDUDaemonPort`` …) through labgrid's power
driver for ``power``/``reset``. The place is released whenever the target
closes, and when opening fails half way; a process killed outright (SIGKILL)
cannot release it: ``labgrid-client -p PLACE release --kick``.

The coordinator is ``labgrid.coordinator`` of the profile, else
``$LG_COORDINATOR``, else ``127.0.0.1:20408``. labgrid is an optional extra
(``pip install 'cca-hil[labgrid]'``); it is imported only when a target of this
kind acquires its place. What labgrid logs goes to ``labgrid.log`` in the run
folder. Each exchange with the coordinator is one short client session, so
nothing of labgrid runs between them.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from cca_hil.agent.streams import ByteStream
from cca_hil.errors import ProfileError, TargetError, TransportError
from cca_hil.targets.agent import LINK_PARAMS, AgentTarget
from cca_hil.targets.base import Capability, PowerAction
from cca_hil.targets.serial import DEFAULT_BAUDRATE, open_port

if TYPE_CHECKING:
    from cca_hil.profiles import Profile

COORDINATOR_ENV = "LG_COORDINATOR"
DEFAULT_COORDINATOR = "127.0.0.1:20408"
LABGRID_LOG = "labgrid.log"
INSTALL_HINT = "pip install 'cca-hil[labgrid]'"
POWER_CLASSES = ("NetworkPowerPort", "PDUDaemonPort")
"""Power resources of a place this target switches, with the labgrid driver for each."""
_POWER_DRIVERS = {"NetworkPowerPort": "NetworkPowerDriver", "PDUDaemonPort": "PDUDaemonDriver"}


@dataclass(frozen=True)
class SerialEndpoint:
    """Where a place's ``NetworkSerialPort`` is reached from here (after labgrid's proxy manager)."""

    host: str
    port: int
    speed: int
    protocol: str

    @property
    def url(self) -> str:
        """The pySerial URL: ``rfc2217://host:port`` (``ign_set_control``, as labgrid) or ``socket://``."""
        if self.protocol == "raw":
            return f"socket://{self.host}:{self.port}"
        return f"rfc2217://{self.host}:{self.port}?ign_set_control"


class _Coordinator:
    """One short labgrid client session with the coordinator, on a private event loop."""

    def __init__(self, address: str, *, timeout: float, log: Path | None) -> None:
        self.address = address
        self.timeout = timeout
        self.log = log
        self.session: Any = None
        self._loop: Any = None
        self._handler: logging.Handler | None = None

    def __enter__(self) -> _Coordinator:
        import asyncio

        try:
            from labgrid.remote.client import ClientSession
        except ImportError as exc:
            raise TargetError(f"the labgrid target kind needs labgrid ({INSTALL_HINT}): {exc}") from None
        self._capture_logs()
        self._loop = asyncio.new_event_loop()
        # grpc.aio binds its channel to the current event loop.
        asyncio.set_event_loop(self._loop)
        try:
            self.session = ClientSession(self.address, self._loop, prog="cca-hil")
            self.run(self.session.start(), what="connect")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        import asyncio

        try:
            if self.session is not None:
                with contextlib.suppress(Exception):
                    self.run(self.session.stop(), what="disconnect")
                with contextlib.suppress(Exception):
                    self.run(self.session.close(), what="disconnect")
        finally:
            self.session = None
            if self._loop is not None:
                self._loop.close()
                self._loop = None
                asyncio.set_event_loop(None)
            if self._handler is not None:
                logging.getLogger().removeHandler(self._handler)
                self._handler.close()
                self._handler = None

    def _capture_logs(self) -> None:
        # labgrid logs through the root logger; kept in the run folder, off the one-line error output.
        handler: logging.Handler = (
            logging.FileHandler(self.log, encoding="utf-8") if self.log is not None else logging.NullHandler()
        )
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
        self._handler = handler

    def run(self, awaitable: Any, *, what: str) -> Any:
        """Run one coroutine of the session to its end within the deadline; labgrid's errors translated."""
        import asyncio

        from labgrid.remote.client import Error as ClientError

        try:
            return self._loop.run_until_complete(asyncio.wait_for(awaitable, self.timeout))
        except TimeoutError:
            raise TransportError(
                f"labgrid coordinator {self.address}: no answer to {what} within {self.timeout:g} s"
            ) from None
        except ClientError as exc:
            raise TransportError(f"labgrid coordinator {self.address}: {what}: {_message(exc)}") from None
        except Exception as exc:
            if type(exc).__module__.startswith("grpc"):
                details = exc.details() if hasattr(exc, "details") else str(exc)
                raise TransportError(f"labgrid coordinator {self.address}: {what}: {details}") from None
            raise

    def place(self, name: str) -> Any:
        """The place called ``name`` (TargetError naming the places there are)."""
        from labgrid.remote.client import Error as ClientError

        try:
            return self.session.get_place(name)
        except ClientError:
            places = sorted(self.session.places)
            raise TargetError(
                f"labgrid coordinator {self.address} has no place {name!r}"
                f" (places: {', '.join(places) or 'none'})"
            ) from None

    def me(self) -> str:
        """``host/user`` as the coordinator records who acquired a place."""
        return f"{self.session.gethostname()}/{self.session.getuser()}"

    def acquire(self, name: str) -> None:
        """Acquire the place (TargetError when someone holds it or a match has no resource)."""
        from labgrid.remote.client import Error as ClientError
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb2

        place = self.place(name)
        if place.acquired == self.me():
            raise TargetError(
                f"labgrid place {name!r} is acquired by {place.acquired} (this host and user: another "
                f"session, or a run that was killed); release it with "
                f"'labgrid-client -x {self.address} -p {name} release'"
            )
        if place.acquired:
            raise TargetError(f"labgrid place {name!r} is acquired by {place.acquired}")
        try:
            self.session.check_matches(place)
        except ClientError as exc:
            raise TargetError(f"labgrid place {name!r}: {_message(exc)}") from None
        self.run(self.session.stub.AcquirePlace(pb2.AcquirePlaceRequest(placename=name)), what="acquire")
        self.run(self.session.sync_with_coordinator(), what="acquire")

    def release(self, name: str) -> None:
        """Release the place if this host/user holds it."""
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb2

        place = self.place(name)
        if not place.acquired or place.acquired != self.me():
            return
        self.run(self.session.stub.ReleasePlace(pb2.ReleasePlaceRequest(placename=name)), what="release")
        self.run(self.session.sync_with_coordinator(), what="release")

    @contextlib.contextmanager
    def target(self, name: str) -> Iterator[Any]:
        """A labgrid Target holding the acquired place's resources (RemotePlace), cleaned up after."""
        from labgrid import Target as LgTarget
        from labgrid.resource.remote import RemotePlace, RemotePlaceManager

        manager = RemotePlaceManager.get()
        # The place manager is labgrid's process-wide singleton; point it at this session.
        manager.session = self.session
        manager.loop = self._loop
        target = LgTarget(name)
        try:
            RemotePlace(target, name=name)
            yield target
        finally:
            target.cleanup()


def _message(exc: BaseException) -> str:
    text = " ".join(str(a) for a in exc.args) or type(exc).__name__
    return " ".join(text.split())


class LabgridTarget(AgentTarget):
    """A board of a labgrid place: agent link over the place's NetworkSerialPort, power through labgrid."""

    kind: ClassVar[str] = "labgrid"

    PARAMS: ClassVar[dict[str, Any]] = {
        "coordinator": str,
        "place": str,
        "timeout": float,
        "power_delay": float,
        "link": LINK_PARAMS,
    }

    def __init__(self, *, profile: Profile, run_dir: Path | None = None) -> None:
        super().__init__(profile=profile, run_dir=run_dir)
        params = profile.params
        place = params.get("place")
        if not place:
            raise ProfileError(
                "a labgrid profile needs labgrid.place (the place to acquire)", where=profile.source
            )
        self.place: str = str(place)
        self.coordinator: str = str(
            params.get("coordinator") or os.environ.get(COORDINATOR_ENV) or DEFAULT_COORDINATOR
        )
        self.timeout = float(params.get("timeout", 10.0))
        self.power_delay = float(params.get("power_delay", 2.0))
        for key, value in (("timeout", self.timeout), ("power_delay", self.power_delay)):
            if value <= 0:
                raise ProfileError(f"labgrid.{key} must be positive, got {value:g}", where=profile.source)
        self.acquired_by: str | None = None
        """``host/user`` the place was acquired as, while this target holds it."""
        self.endpoint: SerialEndpoint | None = None
        self.power_resource: str | None = None
        """Class of the place's power resource (None: the place has none, or it was not looked at yet)."""
        self.port: Any = None
        self._keep_place = False
        """Set while power() closes the agent link around a power change: the place stays acquired."""

    # -- the place ----------------------------------------------------------------------------------------

    def _session(self) -> _Coordinator:
        return _Coordinator(self.coordinator, timeout=self.timeout, log=self.folder / LABGRID_LOG)

    def acquire(self) -> None:
        """Acquire the place and learn its serial port and power resource; idempotent."""
        if self.acquired_by is not None:
            return
        with self._session() as lab:
            lab.acquire(self.place)
            self.acquired_by = lab.me()
            try:
                with lab.target(self.place) as target:
                    self.endpoint = _serial_endpoint(target, self.place)
                    self.power_resource = _power_class(target)
            except BaseException:
                with contextlib.suppress(Exception):
                    lab.release(self.place)
                self.acquired_by = None
                raise

    def release(self) -> None:
        """Release the place if this target acquired it (idempotent, bounded by ``labgrid.timeout``)."""
        if self.acquired_by is None:
            return
        try:
            with self._session() as lab:
                lab.release(self.place)
        finally:
            self.acquired_by = None

    def _lease_identity(self) -> str | None:
        """The place, ``labgrid:COORDINATOR/PLACE``: cca-hil users of one host wait for it by lease."""
        return f"labgrid:{self.coordinator}/{self.place}"

    # -- capabilities, power ------------------------------------------------------------------------------

    @property
    def capabilities(self) -> frozenset[str]:
        """The agent's, and ``power``/``reset`` when the place has a power resource (or not yet known)."""
        caps = set(super().capabilities)
        if self.acquired_by is None or self.power_resource is not None:
            caps |= {Capability.POWER, Capability.RESET}
        return frozenset(caps)

    def power(self, action: PowerAction) -> None:
        """Switch the place's power ``on``, ``off`` or ``cycle`` it through labgrid's power driver.

        An open agent link is closed first and, unless the board was switched
        off, opened again afterwards (the agent reboots with the board).
        """
        relink = self._opened
        if relink:
            self._keep_place = True
            try:
                super().close()
            finally:
                self._keep_place = False
        self.acquire()
        if self.power_resource is None:
            raise TargetError(
                f"labgrid place {self.place!r} has no power resource (one of {', '.join(POWER_CLASSES)})"
            )
        with self._session() as lab, lab.target(self.place) as target:
            driver = _power_driver(target, self.power_resource, delay=self.power_delay)
            try:
                getattr(driver, action)()
            except Exception as exc:
                raise TransportError(
                    f"labgrid place {self.place!r}: power {action}: {_message(exc)}"
                ) from None
        if relink and action != "off":
            self.open()

    def reset(self) -> None:
        """Reset the board by cycling its power."""
        self.power("cycle")

    # -- the agent's line ---------------------------------------------------------------------------------

    def _connect(self, folder: Path) -> ByteStream:
        self.acquire()
        assert self.endpoint is not None
        self.port = open_port(self.endpoint.url, baudrate=self.endpoint.speed, exclusive=False)
        stream: ByteStream = self.port
        return stream

    def _disconnect(self) -> None:
        port, self.port = self.port, None
        try:
            if port is not None:
                port.close()
        finally:
            # Also when opening failed half way: the place is never left acquired.
            if not self._keep_place:
                self.release()

    def close(self) -> None:
        """Close the agent link and release the place; idempotent."""
        try:
            super().close()
        finally:
            self.release()

    def _facts(self) -> dict[str, str]:
        facts = {
            "labgrid place": f"{self.place} on {self.coordinator} (acquired as {self.acquired_by})",
        }
        if self.endpoint is not None:
            facts["serial port"] = f"{self.endpoint.url} @ {self.endpoint.speed} baud"
        facts["power control"] = self.power_resource or "none"
        return facts


def _serial_endpoint(target: Any, place: str) -> SerialEndpoint:
    from labgrid.exceptions import NoResourceFoundError
    from labgrid.resource import NetworkSerialPort
    from labgrid.util.proxy import proxymanager

    try:
        resource = target.get_resource(NetworkSerialPort, wait_avail=False)
    except NoResourceFoundError:
        raise TargetError(f"labgrid place {place!r} has no NetworkSerialPort for the agent's UART") from None
    host, port = proxymanager.get_host_and_port(resource)
    return SerialEndpoint(
        host=str(host),
        port=int(port),
        speed=int(resource.speed or DEFAULT_BAUDRATE),
        protocol=str(resource.protocol or "rfc2217"),
    )


def _power_class(target: Any) -> str | None:
    for resource in target.resources:
        name = type(resource).__name__
        if name in POWER_CLASSES:
            return name
    return None


def _power_driver(target: Any, resource_class: str, *, delay: float) -> Any:
    from labgrid import driver as drivers

    driver = getattr(drivers, _POWER_DRIVERS[resource_class])(target, name=None, delay=delay)
    target.activate(driver)
    return driver
