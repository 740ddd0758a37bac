"""``cca-hil --help`` stays light: heavy dependencies are imported only by the commands that use them."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("pyocd", "pyftdi", "cryptography", "numpy")


def imported_modules(*args: str) -> set[str]:
    """Top-level names of every module a ``python -m cca_hil …`` process imported (``-X importtime``)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "cca_hil", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            module = line.rsplit("|", 1)[1].strip()
            names.add(module.split(".")[0])
    return names


@pytest.mark.parametrize(
    "args",
    [["--help"], ["--version"], ["rmi", "--help"], ["run", "--help"], ["profiles", "--help"]],
    ids=" ".join,
)
def test_help_imports_none_of_the_heavy_dependencies(args: list[str]) -> None:
    modules = imported_modules(*args)
    # The measurement works: the CLI itself shows up in it.
    assert "cca_hil" in modules and "typer" in modules
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


def test_help_does_not_load_the_model_or_the_runner() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from cca_hil.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('cca_hil'))))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded = set(proc.stdout.strip().splitlines()[-1].split())
    assert "cca_hil.cli" in loaded
    for lazy in ("cca_hil.model.machine", "cca_hil.sequences", "cca_hil.profiles", "cca_hil.session"):
        assert lazy not in loaded
