"""Stand-ins for bench hardware that speak the real libraries' interfaces.

``cca_hil.sim.probe`` is a DAP-level debug probe that pyOCD loads through its
``pyocd.probe`` entry point; ``cca_hil.sim.ftdi`` is a pyusb backend emulating an
FTDI bridge for pyftdi's GPIO path. Both are driven by pyOCD's and pyftdi's own
code, so tests and users exercise the same paths as with hardware attached.
"""
