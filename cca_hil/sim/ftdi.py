"""An FT232H/FT2232H on a virtual USB bus: a pyusb backend pyftdi drives through its ordinary code.

Enough of the chip is emulated for pyftdi's enumeration, ``ftdi://`` URL
resolution, string descriptors and its bit-bang GPIO path (FTDI AN_232R-01 /
AN_373 vendor requests): reset and purge, latency timer, baud rate, flow
control, bit mode with its direction mask, pin read-back, modem status, a blank
EEPROM, and data bytes on the OUT endpoint latching the outputs. MPSSE and UART
data paths are not emulated.

Every change of the lines the board sees (driven outputs, otherwise the pull
level) is recorded as a :class:`PinChange` stamped by the device's clock; tests
pass a virtual clock and assert on the recorded sequence, never on real time.

pyftdi finds USB backends by module name (``UsbTools.BACKENDS``, each module
offering ``get_backend()``); :func:`plugged` points it at this module for the
duration of a ``with`` block and serves the devices it was given.
"""

from __future__ import annotations

import array
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Literal

import usb.backend
from usb.core import USBError

FTDI_VID = 0x0403

# bmRequestType values (USB 2.0 9.3) and FTDI vendor requests (pyftdi's Ftdi.SIO_REQ_*).
_STANDARD_IN = 0x80
_VENDOR = 0x40
_GET_DESCRIPTOR = 0x06
_DESC_STRING = 0x03
SIO_RESET = 0x00
SIO_SET_MODEM_CTRL = 0x01
SIO_SET_FLOW_CTRL = 0x02
SIO_SET_BAUDRATE = 0x03
SIO_SET_DATA = 0x04
SIO_POLL_MODEM_STATUS = 0x05
SIO_SET_EVENT_CHAR = 0x06
SIO_SET_ERROR_CHAR = 0x07
SIO_SET_LATENCY_TIMER = 0x09
SIO_GET_LATENCY_TIMER = 0x0A
SIO_SET_BITMODE = 0x0B
SIO_READ_PINS = 0x0C
SIO_READ_EEPROM = 0x90

BITMODE_RESET = 0x00
BITMODE_BITBANG = 0x01
BITMODE_SYNCBB = 0x04
_DRIVING_MODES = frozenset({BITMODE_BITBANG, BITMODE_SYNCBB})

_MODEM_STATUS = bytes([0x01, 0x60])
"""Modem status bytes every IN packet starts with: THRE and TEMT set (transmitter idle)."""

Model = Literal["ft232h", "ft2232h"]


@dataclass(frozen=True, slots=True)
class _Chip:
    pid: int
    bcd_device: int
    interfaces: int
    product: str


_CHIPS: dict[Model, _Chip] = {
    "ft232h": _Chip(0x6014, 0x0900, 1, "Single RS232-HS"),
    "ft2232h": _Chip(0x6010, 0x0700, 2, "Dual RS232-HS"),
}


@dataclass(frozen=True, slots=True)
class PinChange:
    """The 8 low lines of one interface changed: what the board sees, and which lines the chip drives."""

    time: float
    interface: int
    """1-based, as in ``ftdi://…/1``."""
    levels: int
    driven: int

    def level(self, pin: int) -> bool:
        """The level of line ``pin`` after the change."""
        return bool(self.levels >> pin & 1)


class _Port:
    """One interface's GPIO state: bit mode, direction, output latch and the board's pulls."""

    def __init__(self, pulls: int) -> None:
        self.mode = BITMODE_RESET
        self.direction = 0
        self.latch = 0
        self.pulls = pulls
        self.latency = 16
        self.baudrate = (0, 0)

    @property
    def driven(self) -> int:
        return self.direction if self.mode in _DRIVING_MODES else 0

    @property
    def levels(self) -> int:
        return (self.latch & self.driven) | (self.pulls & ~self.driven & 0xFF)


class VirtualFtdi:
    """One emulated FTDI chip; its pins keep their state while the USB handle comes and goes."""

    def __init__(
        self,
        model: Model = "ft232h",
        serial: str = "CCAFT001",
        *,
        pulls: int = 0x00,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if model not in _CHIPS:
            raise ValueError(f"unknown FTDI model {model!r} (valid: {', '.join(_CHIPS)})")
        self.model: Model = model
        self.chip = _CHIPS[model]
        self.serial = serial
        self.clock = clock
        self.bus = 1
        self.address = 1
        self.ports = [_Port(pulls) for _ in range(self.chip.interfaces)]
        self.changes: list[PinChange] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The ``ftdi://`` URL of interface 1 by serial number."""
        return f"ftdi://ftdi:{self.model.removeprefix('ft')}:{self.serial}/1"

    def levels(self, interface: int = 1) -> int:
        """The 8 lines of ``interface`` as the board sees them now."""
        return self.ports[interface - 1].levels

    def history(self, interface: int = 1) -> list[PinChange]:
        """Recorded changes of one interface, oldest first."""
        return [c for c in self.changes if c.interface == interface]

    def _update(self, interface: int, change: Callable[[_Port], None]) -> None:
        port = self.ports[interface - 1]
        before = (port.levels, port.driven)
        change(port)
        if (port.levels, port.driven) != before:
            self.changes.append(PinChange(self.clock(), interface, port.levels, port.driven))

    # -- what the USB side does -----------------------------------------------------------

    def string(self, index: int) -> str:
        """String descriptor ``index`` (1 manufacturer, 2 product, 3 serial)."""
        strings = {1: "FTDI", 2: self.chip.product, 3: self.serial}
        if index not in strings:
            raise USBError("string descriptor index out of range", errno=32)
        return strings[index]

    def vendor_out(self, request: int, value: int, index: int) -> None:
        """A vendor OUT request addressed to interface ``index`` (1-based)."""
        interface = (index & 0xFF) or 1
        if interface > len(self.ports):
            raise USBError(f"no interface {interface}", errno=32)
        with self._lock:
            if request == SIO_SET_BITMODE:
                direction, mode = value & 0xFF, value >> 8

                def set_mode(port: _Port) -> None:
                    port.mode, port.direction = mode, direction

                self._update(interface, set_mode)
            elif request == SIO_SET_LATENCY_TIMER:
                self.ports[interface - 1].latency = value & 0xFF
            elif request == SIO_SET_BAUDRATE:
                self.ports[interface - 1].baudrate = (value, index >> 8)
            elif request not in (
                SIO_RESET,
                SIO_SET_MODEM_CTRL,
                SIO_SET_FLOW_CTRL,
                SIO_SET_DATA,
                SIO_SET_EVENT_CHAR,
                SIO_SET_ERROR_CHAR,
            ):
                raise USBError(f"unsupported FTDI request {request:#x}", errno=32)

    def vendor_in(self, request: int, value: int, index: int, length: int) -> bytes:
        """A vendor IN request; the reply bytes."""
        interface = (index & 0xFF) or 1
        with self._lock:
            if request == SIO_READ_PINS:
                return bytes([self.ports[interface - 1].levels])
            if request == SIO_POLL_MODEM_STATUS:
                return _MODEM_STATUS
            if request == SIO_GET_LATENCY_TIMER:
                return bytes([self.ports[interface - 1].latency])
            if request == SIO_READ_EEPROM:
                return b"\xff\xff"  # a blank EEPROM
        raise USBError(f"unsupported FTDI request {request:#x}", errno=32)

    def data_out(self, interface: int, data: bytes) -> int:
        """Bytes on the OUT endpoint: in bit-bang mode each one latches the outputs."""
        with self._lock:
            for byte in data:

                def latch(port: _Port, byte: int = byte) -> None:
                    port.latch = byte

                self._update(interface, latch)
        return len(data)

    def data_in(self, interface: int, size: int) -> bytes:
        """An IN packet: modem status, then one sample of the lines in bit-bang mode."""
        with self._lock:
            port = self.ports[interface - 1]
            sample = bytes([port.levels]) if port.mode in _DRIVING_MODES else b""
        return (_MODEM_STATUS + sample)[:size]


# -- the pyusb backend -------------------------------------------------------------------------


def _in_endpoint(interface: int) -> int:
    return 0x81 + 2 * interface


def _out_endpoint(interface: int) -> int:
    return 0x02 + 2 * interface


class _Handle:
    def __init__(self, device: VirtualFtdi) -> None:
        self.device = device
        self.configuration = 1
        self.claimed: set[int] = set()


class VirtualUsbBackend(usb.backend.IBackend):  # type: ignore[misc]
    """pyusb backend whose bus holds :class:`VirtualFtdi` devices."""

    def __init__(self, devices: Sequence[VirtualFtdi]) -> None:
        self.devices = list(devices)
        for address, device in enumerate(self.devices, start=1):
            device.address = address

    def enumerate_devices(self) -> Iterator[VirtualFtdi]:
        """The devices on the virtual bus."""
        return iter(self.devices)

    def get_device_descriptor(self, dev: VirtualFtdi) -> Any:
        """USB device descriptor fields pyusb copies onto ``usb.core.Device``."""
        return SimpleNamespace(
            bLength=18,
            bDescriptorType=1,
            bcdUSB=0x0200,
            bDeviceClass=0,
            bDeviceSubClass=0,
            bDeviceProtocol=0,
            bMaxPacketSize0=64,
            idVendor=FTDI_VID,
            idProduct=dev.chip.pid,
            bcdDevice=dev.chip.bcd_device,
            iManufacturer=1,
            iProduct=2,
            iSerialNumber=3,
            bNumConfigurations=1,
            address=dev.address,
            bus=dev.bus,
            port_number=dev.address,
            port_numbers=(dev.address,),
            speed=3,  # high speed
        )

    def get_configuration_descriptor(self, dev: VirtualFtdi, config: int) -> Any:
        """The one configuration."""
        if config != 0:
            raise IndexError(config)
        return SimpleNamespace(
            bLength=9,
            bDescriptorType=2,
            wTotalLength=9 + dev.chip.interfaces * (9 + 2 * 7),
            bNumInterfaces=dev.chip.interfaces,
            bConfigurationValue=1,
            iConfiguration=0,
            bmAttributes=0x80,
            bMaxPower=50,
            extra_descriptors=[],
        )

    def get_interface_descriptor(self, dev: VirtualFtdi, intf: int, alt: int, config: int) -> Any:
        """A vendor-class interface with a bulk IN and a bulk OUT endpoint."""
        if alt != 0 or not 0 <= intf < dev.chip.interfaces:
            raise IndexError(intf)
        return SimpleNamespace(
            bLength=9,
            bDescriptorType=4,
            bInterfaceNumber=intf,
            bAlternateSetting=0,
            bNumEndpoints=2,
            bInterfaceClass=0xFF,
            bInterfaceSubClass=0xFF,
            bInterfaceProtocol=0xFF,
            iInterface=2,
            extra_descriptors=[],
        )

    def get_endpoint_descriptor(self, dev: VirtualFtdi, ep: int, intf: int, alt: int, config: int) -> Any:
        """Endpoint 0 is bulk IN, endpoint 1 bulk OUT (0x81/0x02 on interface A, 0x83/0x04 on B)."""
        if ep not in (0, 1):
            raise IndexError(ep)
        return SimpleNamespace(
            bLength=7,
            bDescriptorType=5,
            bEndpointAddress=_in_endpoint(intf) if ep == 0 else _out_endpoint(intf),
            bmAttributes=0x02,
            wMaxPacketSize=512,
            bInterval=0,
            bRefresh=0,
            bSynchAddress=0,
            extra_descriptors=[],
        )

    def open_device(self, dev: VirtualFtdi) -> _Handle:
        """A handle on ``dev``."""
        if dev not in self.devices:
            raise USBError("no such device (it may have been disconnected)", errno=19)
        return _Handle(dev)

    def close_device(self, dev_handle: _Handle) -> None:
        """Close a handle; the chip keeps its pin state."""
        dev_handle.claimed.clear()

    def set_configuration(self, dev_handle: _Handle, config_value: int) -> None:
        """Select the configuration (there is one)."""
        dev_handle.configuration = config_value

    def get_configuration(self, dev_handle: _Handle) -> int:
        """The active configuration value."""
        return dev_handle.configuration

    def set_interface_altsetting(self, dev_handle: _Handle, intf: int, altsetting: int) -> None:
        """Only alternate setting 0 exists."""
        if altsetting != 0:
            raise USBError("no such alternate setting", errno=32)

    def claim_interface(self, dev_handle: _Handle, intf: int) -> None:
        """Claim an interface."""
        dev_handle.claimed.add(intf)

    def release_interface(self, dev_handle: _Handle, intf: int) -> None:
        """Release an interface."""
        dev_handle.claimed.discard(intf)

    def is_kernel_driver_active(self, dev_handle: _Handle, intf: int) -> bool:
        """No kernel driver sits on a virtual device."""
        return False

    def detach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        """Nothing to detach."""

    def bulk_write(
        self, dev_handle: _Handle, ep: int, intf: int, data: array.array[int], timeout: int
    ) -> int:
        """Data to the chip's OUT endpoint of interface ``intf``."""
        if ep != _out_endpoint(intf):
            raise USBError(f"endpoint {ep:#x} is not an OUT endpoint of interface {intf}", errno=32)
        return dev_handle.device.data_out(intf + 1, bytes(data))

    def bulk_read(self, dev_handle: _Handle, ep: int, intf: int, buff: array.array[int], timeout: int) -> int:
        """An IN packet from interface ``intf``."""
        if ep != _in_endpoint(intf):
            raise USBError(f"endpoint {ep:#x} is not an IN endpoint of interface {intf}", errno=32)
        packet = dev_handle.device.data_in(intf + 1, len(buff))
        buff[: len(packet)] = array.array("B", packet)
        return len(packet)

    def ctrl_transfer(  # noqa: PLR0917 - pyusb's IBackend signature
        self,
        dev_handle: _Handle,
        bmRequestType: int,
        bRequest: int,
        wValue: int,
        wIndex: int,
        data: array.array[int],
        timeout: int,
    ) -> int:
        """Standard string descriptors and FTDI vendor requests."""
        device = dev_handle.device
        if bmRequestType == _STANDARD_IN and bRequest == _GET_DESCRIPTOR and wValue >> 8 == _DESC_STRING:
            index = wValue & 0xFF
            if index == 0:
                payload = bytes([4, _DESC_STRING]) + (0x0409).to_bytes(2, "little")
            else:
                text = device.string(index).encode("utf-16-le")
                payload = bytes([2 + len(text), _DESC_STRING]) + text
            return _reply(data, payload)
        if bmRequestType & 0x60 != _VENDOR:
            raise USBError(f"unsupported control request {bmRequestType:#x}/{bRequest:#x}", errno=32)
        if bmRequestType & 0x80:
            return _reply(data, device.vendor_in(bRequest, wValue, wIndex, len(data)))
        device.vendor_out(bRequest, wValue, wIndex)
        return len(data)

    def reset_device(self, dev_handle: _Handle) -> None:
        """A USB reset returns every interface to reset bit mode."""
        for interface in range(1, dev_handle.device.chip.interfaces + 1):
            dev_handle.device.vendor_out(SIO_SET_BITMODE, BITMODE_RESET << 8, interface)


def _reply(buffer: array.array[int], payload: bytes) -> int:
    count = min(len(buffer), len(payload))
    buffer[:count] = array.array("B", payload[:count])
    return count


# pyftdi asks a backend *module* for its backend; a context variable scopes which virtual bus it gets.
_BACKEND: ContextVar[VirtualUsbBackend | None] = ContextVar("cca_hil_sim_usb_backend", default=None)


def get_backend(find_library: Callable[..., Any] | None = None) -> VirtualUsbBackend | None:
    """pyusb/pyftdi backend-module entry point: the virtual bus plugged in here, if any."""
    return _BACKEND.get()


@contextmanager
def plugged(*devices: VirtualFtdi) -> Iterator[VirtualUsbBackend]:
    """Make pyftdi use a virtual USB bus holding ``devices`` for the duration of the block."""
    from pyftdi.usbtools import UsbTools

    backend = VirtualUsbBackend(devices)
    token = _BACKEND.set(backend)
    saved = UsbTools.BACKENDS
    UsbTools.BACKENDS = (__name__,)
    # pyftdi caches enumerations per (vid, pid); a different bus must not see the last one's devices.
    UsbTools.flush_cache()
    try:
        yield backend
    finally:
        UsbTools.release_all_devices(VirtualFtdi)
        UsbTools.flush_cache()
        UsbTools.BACKENDS = saved
        _BACKEND.reset(token)
