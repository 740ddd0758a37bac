"""Errors of the agent link, as branches of AgentLinkError carrying the facts (sequence number, phase)."""

from __future__ import annotations

from cca_hil.errors import AgentLinkError, TargetError
from cca_hil.targets.base import Fault


class AgentTimeoutError(AgentLinkError):
    """The agent did not answer within the phase's timeout, after every retry."""

    def __init__(
        self, message: str, *, phase: str, seq: int | None = None, attempts: int = 0, damaged: bool = False
    ) -> None:
        self.phase = phase
        self.seq = seq
        self.attempts = attempts
        self.damaged = damaged
        """True when damaged frames or NAKs were seen: the agent is alive but the line is too noisy."""
        super().__init__(message)


class AgentDisconnectedError(AgentLinkError):
    """The byte stream to the agent closed or failed."""


class AgentVersionError(AgentLinkError):
    """The agent speaks a protocol major version this host does not."""

    def __init__(self, agent: tuple[int, int], host: tuple[int, int]) -> None:
        self.agent = agent
        self.host = host
        super().__init__(
            f"agent speaks link protocol {agent[0]}.{agent[1]}, this host speaks {host[0]}.{host[1]}: "
            f"use an agent and a cca-hil built for the same major version"
        )


class AgentRefusedError(AgentLinkError):
    """The agent answered ERROR: the request was not executed."""

    def __init__(self, message: str, *, code: int, seq: int | None = None) -> None:
        self.code = code
        self.seq = seq
        super().__init__(message)


class AgentRestartedError(AgentLinkError):
    """The agent lost its session (it was reset); the interrupted call may or may not have run."""


class FrameTooLargeError(AgentLinkError):
    """A request would exceed the frame size both ends agreed on."""

    def __init__(self, size: int, limit: int, what: str) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"{what}: frame body of {size} bytes exceeds the agreed maximum of {limit}")


class MemoryFaultError(TargetError):
    """A memory read/write/fill by the agent took a synchronous exception that is not a GPF."""

    def __init__(self, fault: Fault, *, write: bool) -> None:
        self.fault = fault
        self.write = write
        kind = "store to" if write else "load from"
        super().__init__(f"{kind} {fault.far:#x} faulted: {fault.describe()}")
