"""Byte-stream transports to targets: TCP terminals of simulation models (raw or telnet)."""

from __future__ import annotations

from cca_hil.transport.telnet import TelnetNegotiator, TerminalClient, TerminalClosedError, TerminalMode

__all__ = ["TelnetNegotiator", "TerminalClient", "TerminalClosedError", "TerminalMode"]
