"""The emulated FTDI bridge through pyusb and pyftdi: enumeration, strings, bit-bang GPIO, recorded pins."""

from __future__ import annotations

import pytest
import usb.core
import usb.util
from pyftdi.ftdi import Ftdi
from pyftdi.gpio import GpioAsyncController
from pyftdi.usbtools import UsbTools

from cca_hil.sim.ftdi import VirtualFtdi, VirtualUsbBackend, plugged


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_pyusb_enumerates_and_reads_string_descriptors() -> None:
    backend = VirtualUsbBackend([VirtualFtdi("ft232h", "FTA"), VirtualFtdi("ft2232h", "FTB")])
    devices = list(usb.core.find(find_all=True, backend=backend))
    assert [(d.idVendor, d.idProduct, d.bcdDevice) for d in devices] == [
        (0x403, 0x6014, 0x900),
        (0x403, 0x6010, 0x700),
    ]
    try:
        assert usb.util.get_string(devices[1], devices[1].iSerialNumber) == "FTB"
        assert usb.util.get_string(devices[1], devices[1].iProduct) == "Dual RS232-HS"
        assert [i.bInterfaceNumber for i in devices[1].get_active_configuration()] == [0, 1]
        endpoints = [e.bEndpointAddress for e in devices[1].get_active_configuration()[(1, 0)]]
        assert endpoints == [0x83, 0x04]
    finally:
        for device in devices:
            usb.util.dispose_resources(device)


def test_unknown_vendor_request_stalls() -> None:
    backend = VirtualUsbBackend([VirtualFtdi()])
    device = usb.core.find(backend=backend)
    try:
        with pytest.raises(usb.core.USBError, match="unsupported FTDI request 0x42"):
            device.ctrl_transfer(Ftdi.REQ_OUT, 0x42, 0, 1)
    finally:
        usb.util.dispose_resources(device)


def test_gpio_writes_are_recorded_in_order_with_the_device_clock() -> None:
    chip = VirtualFtdi("ft232h", "FTA", clock=Ticks())
    with plugged(chip):
        gpio = GpioAsyncController()
        gpio.configure(chip.url, direction=0x0F)
        try:
            gpio.write(0x01)
            gpio.write(0x03)
            gpio.write(0x03)  # no change: nothing recorded
            gpio.write(0xF2)  # the high nibble are inputs: only bit 0 changes on the wire
            assert gpio.read() == 0x02
            # The buffered read path: modem status, then a sample of the lines.
            assert gpio.read(readlen=1, peek=False) == b"\x02"
        finally:
            gpio.close()
    levels = [(c.time, c.levels, c.driven) for c in chip.history()]
    # bit-bang on (outputs at 0), 1, 3, 2; close puts the port back in reset: nothing driven.
    assert [(lv, dr) for _, lv, dr in levels] == [(0, 0x0F), (1, 0x0F), (3, 0x0F), (2, 0x0F), (0, 0)]
    times = [t for t, _, _ in levels]
    assert times == sorted(times)


def test_pins_keep_their_state_across_a_frozen_close_and_fall_to_the_pulls_on_reopen() -> None:
    chip = VirtualFtdi("ft232h", "FTA", pulls=0x80)
    with plugged(chip):
        gpio = GpioAsyncController()
        gpio.configure(chip.url, direction=0x01, initial=0x01)
        gpio.close(freeze=True)
        assert chip.levels() == 0x81
        # pyftdi resets the bit mode when it opens an interface: the lines show the pulls.
        gpio.configure(chip.url, direction=0x00)
        try:
            assert gpio.read() == 0x80
        finally:
            gpio.close()


def test_plugged_restores_pyftdi_backends_and_forgets_its_devices() -> None:
    saved = UsbTools.BACKENDS
    with plugged(VirtualFtdi("ft232h", "FTA")):
        assert [d.sn for d, _ in Ftdi.list_devices()] == ["FTA"]
    assert saved == UsbTools.BACKENDS
    with plugged(VirtualFtdi("ft232h", "FTC")):
        assert [d.sn for d, _ in Ftdi.list_devices()] == ["FTC"]


def test_unknown_model_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown FTDI model 'ft4232h'"):
        VirtualFtdi("ft4232h")  # type: ignore[arg-type]
