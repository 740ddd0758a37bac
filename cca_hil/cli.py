"""The ``cca-hil`` command line (placeholder until the CLI lands in this session)."""

from __future__ import annotations


def main() -> None:
    """Entry point of the console script."""
    raise SystemExit("cca-hil: the command line is being built")
