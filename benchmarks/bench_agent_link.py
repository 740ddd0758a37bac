"""Wire efficiency of the agent link, measured on the bytes a real session puts on the line.

Runs the host session against the agent emulator over an in-process stream pair
and counts every byte both ways (frames only: the handshake is excluded).
Rates at 115200 baud assume 10 bits per byte on the wire (8N1) and a line that is
the only limit (no agent execution time), with requests and answers taking turns.

    python benchmarks/bench_agent_link.py
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cca_hil.agent.emulator import AgentEmulator
from cca_hil.agent.link import AgentLink
from cca_hil.agent.protocol import SmcStep, Step
from cca_hil.agent.streams import stream_pair
from cca_hil.arch.rmi_1_0 import RMI_1_0

BAUD = 115200
BITS_PER_BYTE = 10
LINE_BYTES_PER_S = BAUD / BITS_PER_BYTE
DELEGATE = RMI_1_0["granule_delegate"].fid
UNDELEGATE = RMI_1_0["granule_undelegate"].fid
POOL = 0x9000_0000
RAW_CALL = 8 * 2 + 8 * 5
"""An RMI call with one argument as raw registers: X0 (FID) and X1 in, X0..X4 out, 8 bytes each."""


@dataclass(frozen=True)
class Figures:
    """What the benchmark measures (bytes on the wire, both directions)."""

    call_wire: float
    write_wire_per_kib: float
    read_wire_per_kib: float
    batch_sequential_wire: float
    batch_alternating_wire: float

    @staticmethod
    def rate(wire_per_call: float) -> float:
        """Calls per second the line carries at that many wire bytes per call."""
        return LINE_BYTES_PER_S / wire_per_call


def _wire(link: AgentLink, action: Callable[[], object]) -> int:
    before = link.stats.bytes_out + link.stats.bytes_in
    action()
    return link.stats.bytes_out + link.stats.bytes_in - before


def measure(calls: int = 256, kib: int = 64, batch: int = 64) -> Figures:
    """Run the workloads against the emulator and return bytes per operation."""
    host, device = stream_pair()
    emulator = AgentEmulator()
    emulator.start(device)
    try:
        with AgentLink(host) as link:
            # Each granule is delegated by a fresh address so every call succeeds like a real sequence.
            granules = iter(range(POOL, POOL + 0x1000_0000, 0x1000))
            single = _wire(link, lambda: [link.smc(DELEGATE, next(granules)) for _ in range(calls)])
            data = bytes((i * 131 + 7) & 0xFF for i in range(kib * 1024))
            write = _wire(link, lambda: link.write(POOL + 0x2000_0000, data))
            read = _wire(link, lambda: link.read(POOL + 0x2000_0000, len(data)))
            sequential: list[Step] = [SmcStep(DELEGATE, (next(granules),)) for _ in range(batch)]
            seq_wire = _wire(link, lambda: link.batch(sequential))
            pairs = [next(granules) for _ in range(batch // 2)]
            alternating: list[Step] = []
            for pa in pairs:
                alternating += [SmcStep(DELEGATE, (pa,)), SmcStep(UNDELEGATE, (pa,))]
            alt_wire = _wire(link, lambda: link.batch(alternating))
            assert link.stats.resends == 0
    finally:
        emulator.stop()
        host.close()
        device.close()
    return Figures(
        call_wire=single / calls,
        write_wire_per_kib=write / kib,
        read_wire_per_kib=read / kib,
        batch_sequential_wire=seq_wire / batch,
        batch_alternating_wire=alt_wire / len(alternating),
    )


def main() -> None:
    """Print one line per figure, each with its ratio against the raw payload."""
    f = measure()
    single_rate = f.rate(f.call_wire)
    print(f"line: {BAUD} baud, {BITS_PER_BYTE} bits/byte = {LINE_BYTES_PER_S:.0f} B/s")
    print(
        f"rmi call (granule_delegate, unbatched): {f.call_wire:.1f} wire B/call vs {RAW_CALL} raw B "
        f"(X0-X1 in, X0-X4 out) = {f.call_wire / RAW_CALL:.2f}x raw; {single_rate:.0f} calls/s"
    )
    for label, wire in (("write", f.write_wire_per_kib), ("read", f.read_wire_per_kib)):
        print(
            f"memory {label}: {wire:.1f} wire B per KiB vs 1024 raw B = {wire / 1024:.3f}x raw; "
            f"payload efficiency {100 * 1024 / wire:.1f} %; {LINE_BYTES_PER_S * 1024 / wire / 1024:.2f} KiB/s"
        )
    for label, wire in (
        ("batched, consecutive delegates", f.batch_sequential_wire),
        ("batched, alternating delegate/undelegate", f.batch_alternating_wire),
    ):
        rate = f.rate(wire)
        print(
            f"rmi call ({label}, 64/batch): {wire:.1f} wire B/call vs {RAW_CALL} raw B = "
            f"{wire / RAW_CALL:.2f}x raw; {rate:.0f} calls/s = {rate / single_rate:.1f}x unbatched"
        )


if __name__ == "__main__":
    main()
