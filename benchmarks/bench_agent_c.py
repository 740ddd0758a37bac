"""The C agent against the Python agent emulator: calls and bulk reads per second through the link.

Three targets behind the same host side (``AgentLink`` through pySerial), measured one after the
other in this run:

* ``board-sim`` — the Python agent emulator on a local socket (the baseline);
* ``agent-host`` — the C agent of ``tools/agent`` built for the host, on a pty, its SMCs and memory
  accesses executed on the model by ``cca_hil.tools.agent_shim``;
* ``qemu-virt`` — the C agent cross-built for QEMU ``virt``, booted at EL2 in qemu-system-aarch64
  (software emulation of the CPU; the SMC is answered by QEMU's own PSCI).

Every figure is printed with its ratio to board-sim's. The images are built with make when missing;
a target whose tools are not installed is reported as such.

    python benchmarks/bench_agent_c.py
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from _timing import rate

from cca_hil.errors import CcaHilError
from cca_hil.profiles import build_target, load_profile
from cca_hil.targets.base import Target

ROOT = Path(__file__).resolve().parents[1]
AGENT = ROOT / "tools" / "agent"
RMI_VERSION = 0xC400_0150
PSCI_VERSION = 0x8400_0000
BULK = 16 * 1024


def _built(goal: list[str], product: Path, tools: tuple[str, ...]) -> str | None:
    """None when ``product`` exists (building it with make if needed), else why it cannot."""
    if product.exists():
        return None
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        return f"not measured: {', '.join(missing)} not installed"
    done = subprocess.run(["make", "-C", str(AGENT), *goal], check=False, capture_output=True, text=True)
    return None if done.returncode == 0 else f"not measured: make {' '.join(goal)} failed"


def _figures(target: Target, fid: int, args: tuple[int, ...]) -> tuple[float, float]:
    """(calls/s of one SMC, KiB/s of bulk reads from the start of the granule pool)."""
    base = target.info().granule_pool[0][0]

    def calls(n: int) -> None:
        for _ in range(n):
            target.smc(fid, *args)

    def reads(n: int) -> None:
        for _ in range(n):
            target.read(base, BULK)

    return rate(calls, min_seconds=1.0, repeats=3), rate(reads, unit_per_call=BULK // 1024, repeats=3)


def measure(profile: str, fid: int, args: tuple[int, ...]) -> tuple[float, float] | str:
    with tempfile.TemporaryDirectory() as folder:
        try:
            with build_target(load_profile(profile), run_dir=Path(folder)) as target:
                return _figures(target, fid, args)
        except CcaHilError as exc:
            return f"not measured: {exc}"


def main() -> None:
    """One line per target: calls/s and KiB/s, each with its ratio to the Python emulator's."""
    baseline = measure("board-sim", RMI_VERSION, (0x10000,))
    if isinstance(baseline, str):
        print(f"board-sim: {baseline}")
        return
    calls0, kib0 = baseline
    print(f"board-sim (Python emulator, socket): {calls0:,.0f} RMI_VERSION calls/s, {kib0:,.0f} KiB/s read")
    cases = [
        ("agent-host", "C agent, host build, pty", ["host"], AGENT / "build/host/cca-hil-agent-host",
         ("make", "gcc"), RMI_VERSION, (0x10000,)),
        ("qemu-virt", "C agent in QEMU, socket", ["PLATFORM=qemu"], AGENT / "build/qemu/agent.elf",
         ("make", "aarch64-linux-gnu-gcc", "qemu-system-aarch64"), PSCI_VERSION, ()),
    ]  # fmt: skip
    for profile, what, goal, product, tools, fid, args in cases:
        why = _built(goal, product, tools)
        figures = measure(profile, fid, args) if why is None else why
        if isinstance(figures, str):
            print(f"{profile} ({what}): {figures}")
            continue
        calls, kib = figures
        call = "RMI_VERSION" if fid == RMI_VERSION else "PSCI_VERSION"
        print(
            f"{profile} ({what}): {calls:,.0f} {call} calls/s = {calls / calls0:.2f}x board-sim, "
            f"{kib:,.0f} KiB/s read = {kib / kib0:.2f}x board-sim"
        )


if __name__ == "__main__":
    main()
