"""FVP launch layer against the FVP stand-in: launch to connected terminals, to the agent's first answer.

Baseline, measured in the same run: a bare ``subprocess.Popen`` of the same
argument list that reads stdout until the port lines and opens one TCP
connection — the floor of any launcher, so the ratio is the launcher's own
overhead (reader threads, logs, four terminal connections, group shutdown).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _timing import wall

from cca_hil.fvp import FvpConfig, FvpLauncher, command_line, probe_version

STANDIN = Path(__file__).resolve().parents[1] / "tools" / "fvp-standin"
PORT = re.compile(rb"^terminal_(\d+): Listening for serial connection on port (\d+)", re.M)
RMI_VERSION = 0xC400_0150
BANNER = re.compile(rb"cca-hil agent [^\r\n]* ready")


def _config(images: Path, *, check_version: bool = False) -> FvpConfig:
    return FvpConfig.from_section(
        {
            "binary": str(STANDIN),
            "images_dir": str(images),
            "firmware": {"bl1": "bl1.bin", "fip": "fip.bin"},
            "check_version": check_version,
            "params": {"standin.agent": True},
        },
        where="bench",
    )


def _bare(argv: list[str]) -> None:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    with proc:
        assert proc.stdout is not None
        seen = b""
        deadline = time.monotonic() + 60
        while len(PORT.findall(seen)) < 4 and time.monotonic() < deadline:
            seen += proc.stdout.read1(65536)
        port = int(PORT.findall(seen)[0][1])
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            pass
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def _launch(config: FvpConfig, run_dir: Path) -> None:
    with FvpLauncher(config, run_dir=run_dir).start():
        pass


def _launch_and_hello(config: FvpConfig, run_dir: Path) -> None:
    from cca_hil.agent.link import AgentLink

    with FvpLauncher(config, run_dir=run_dir).start() as fvp:
        # Wait for the agent's banner first: a HELLO sent while firmware still boots is lost and
        # costs the link one handshake timeout (0.5 s) before it retries.
        fvp.agent_terminal.expect(BANNER, timeout=30)
        with AgentLink(fvp.agent_terminal) as link:
            link.smc(RMI_VERSION, 0x10000)


def main() -> None:
    """Print one line per figure."""
    # tools/fvp-standin runs on "python3" from PATH: make that this interpreter.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    with tempfile.TemporaryDirectory(prefix="bench-fvp-") as tmp:
        root = Path(tmp)
        images = root / "images"
        images.mkdir()
        (images / "bl1.bin").write_bytes(bytes(20 * 1024))
        (images / "fip.bin").write_bytes(bytes(900 * 1024))
        config = _config(images)
        runs = iter(range(1_000_000))

        def run_dir() -> Path:
            return root / f"run{next(runs)}"

        bare = wall(lambda: _bare(command_line(config)))
        launched = wall(lambda: _launch(config, run_dir()))
        probe = wall(lambda: probe_version(STANDIN))
        hello = wall(lambda: _launch_and_hello(config, run_dir()))
    print(
        f"fvp.launch_to_terminals: {launched * 1e3:.0f} ms from spawn to all 4 terminals connected, "
        f"including shutdown (bare Popen to ports + one connect + SIGTERM {bare * 1e3:.0f} ms; "
        f"ratio {launched / bare:.2f}x)"
    )
    print(f"fvp.version_probe: {probe * 1e3:.0f} ms for --version (added when fvp.check_version is on)")
    print(
        f"fvp.launch_to_agent: {hello * 1e3:.0f} ms from spawn to the agent's first RMI answer, "
        f"including shutdown ({hello / bare:.2f}x the bare launch)"
    )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
