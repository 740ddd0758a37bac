"""A PAS map as a picture: plain SVG text, written by hand (no drawing library).

One band of coloured rectangles, one per run of equal PAS, on a
log-compressed address axis — each run is as wide as log2 of its size, so a
single 4 KiB Realm granule stays visible beside terabytes of unmapped space —
with a tick and its physical address at every run boundary that has room
for a label (the first and the last always), and a legend of the PAS present
with their run count and total size.

Each run's rectangle carries ``data-start``, ``data-end`` and ``data-pas`` and
a ``<title>`` (a tooltip in browsers), so the picture can be checked
against the map it shows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from xml.sax.saxutils import escape, quoteattr

PAS_COLOURS: Final = {
    "nonsecure": ("#2e9d4a", "#ffffff"),
    "secure": ("#2f6fd6", "#ffffff"),
    "realm": ("#a845c9", "#ffffff"),
    "root": ("#e8b400", "#000000"),
    "any": ("#a0a4a8", "#000000"),
    "none": ("#44484c", "#ffffff"),
    "fault": ("#d93025", "#ffffff"),
}
"""Fill and text colour of each PAS (the same hues as the terminal band)."""
OTHER_COLOURS: Final = ("#7a7a7a", "#ffffff")

WIDTH: Final = 1200
MARGIN: Final = 40
BAND_TOP: Final = 96
BAND_HEIGHT: Final = 56
FONT: Final = "DejaVu Sans Mono, Menlo, Consolas, monospace"
LABEL_SPACING: Final = 16
"""Pixels between two address labels (they are drawn at 45°)."""
LABEL_DROP: Final = 110
"""Height of the rotated address labels below the band."""
MIN_INSIDE_LABEL: Final = 48
"""Width a run needs to carry its PAS name inside."""


@dataclass(frozen=True, slots=True)
class Run:
    """A run of granules with one PAS: [start, end)."""

    start: int
    end: int
    pas: str


def _size(size: int) -> str:
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift:
            value = size / (1 << shift)
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size} B"


def _colours(pas: str) -> tuple[str, str]:
    return PAS_COLOURS.get(pas, OTHER_COLOURS)


def run_widths(runs: Sequence[Run], width: float, *, granule_bits: int = 12) -> list[float]:
    """Pixel widths of the runs: proportional to log2 of their size (at least one granule's worth)."""
    weights = [max(math.log2(max(run.end - run.start, 1)) - granule_bits + 1, 1.0) for run in runs]
    total = sum(weights) or 1.0
    return [w / total * width for w in weights]


def pas_map_svg(runs: Sequence[Run], *, title: str, subtitle: str = "", granule_bits: int = 12) -> str:
    """The SVG document for ``runs`` (contiguous, ascending)."""
    band_width = WIDTH - 2 * MARGIN
    widths = run_widths(runs, band_width, granule_bits=granule_bits)
    legend_top = BAND_TOP + BAND_HEIGHT + LABEL_DROP + 36
    present = [p for p in PAS_COLOURS if any(r.pas == p for r in runs)]
    present += sorted({r.pas for r in runs} - set(PAS_COLOURS))
    height = legend_top + 28 * ((len(present) + 2) // 3) + 20
    out: list[str] = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family={quoteattr(FONT)}>',
        f"<title>{escape(title)}</title>",
        f'<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        f'<text x="{MARGIN}" y="36" font-size="20" font-weight="bold" fill="#202124">{escape(title)}</text>',
    ]
    if subtitle:
        out.append(f'<text x="{MARGIN}" y="60" font-size="13" fill="#5f6368">{escape(subtitle)}</text>')
    out.append(
        f'<text x="{MARGIN}" y="{BAND_TOP - 10}" font-size="12" fill="#5f6368">physical address → '
        "(each run's width grows with log2 of its size)</text>"
    )
    out.append('<g class="band">')
    x = float(MARGIN)
    edges: list[tuple[float, int]] = []
    for run, w in zip(runs, widths, strict=True):
        fill, ink = _colours(run.pas)
        label = f"{run.pas} [{run.start:#x}, {run.end:#x}) {_size(run.end - run.start)}"
        out.append(
            f'<rect class="run" x="{x:.2f}" y="{BAND_TOP}" width="{w:.2f}" height="{BAND_HEIGHT}" '
            f'fill="{fill}" stroke="#ffffff" stroke-width="1" data-pas={quoteattr(run.pas)} '
            f'data-start="{run.start:#x}" data-end="{run.end:#x}"><title>{escape(label)}</title></rect>'
        )
        if w >= MIN_INSIDE_LABEL:
            size = _size(run.end - run.start)
            centre = x + w / 2
            out.append(
                f'<text class="run-label" x="{centre:.2f}" y="{BAND_TOP + BAND_HEIGHT / 2 - 2:.2f}" '
                f'font-size="12" text-anchor="middle" fill="{ink}">{escape(run.pas)}</text>'
            )
            out.append(
                f'<text class="run-size" x="{centre:.2f}" y="{BAND_TOP + BAND_HEIGHT / 2 + 14:.2f}" '
                f'font-size="11" text-anchor="middle" fill="{ink}">{escape(size)}</text>'
            )
        edges.append((x, run.start))
        x += w
    if runs:
        edges.append((x, runs[-1].end))
    out.append("</g>")
    out.append(
        f'<line x1="{MARGIN}" y1="{BAND_TOP + BAND_HEIGHT}" x2="{WIDTH - MARGIN}" '
        f'y2="{BAND_TOP + BAND_HEIGHT}" stroke="#202124" stroke-width="1"/>'
    )
    out.append('<g class="axis">')
    for position, address in _labelled(edges):
        y = BAND_TOP + BAND_HEIGHT
        out.append(f'<line x1="{position:.2f}" y1="{y}" x2="{position:.2f}" y2="{y + 6}" stroke="#202124"/>')
        out.append(
            f'<text class="address" x="{position:.2f}" y="{y + 16}" font-size="11" fill="#202124" '
            f'text-anchor="end" transform="rotate(-45 {position:.2f} {y + 16})">{address:#x}</text>'
        )
    out.append("</g>")
    out.append('<g class="legend">')
    for number, pas in enumerate(present):
        column, row = number % 3, number // 3
        lx = MARGIN + column * 370
        ly = legend_top + row * 28
        fill, _ = _colours(pas)
        mine = [r for r in runs if r.pas == pas]
        total = sum(r.end - r.start for r in mine)
        noun = "run" if len(mine) == 1 else "runs"
        out.append(
            f'<rect class="legend-swatch" x="{lx}" y="{ly}" width="18" height="18" fill="{fill}" '
            f"data-pas={quoteattr(pas)}/>"
        )
        out.append(
            f'<text class="legend-label" x="{lx + 26}" y="{ly + 14}" font-size="13" fill="#202124">'
            f"{escape(pas)}: {len(mine)} {noun}, {escape(_size(total))}</text>"
        )
    out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _labelled(edges: Sequence[tuple[float, int]]) -> list[tuple[float, int]]:
    """The boundaries that get an address label: the first and last, and others with room."""
    if not edges:
        return []
    last_x = edges[-1][0]
    chosen = [edges[0]]
    for position, address in edges[1:-1]:
        if position - chosen[-1][0] >= LABEL_SPACING and last_x - position >= LABEL_SPACING:
            chosen.append((position, address))
    if len(edges) > 1:
        chosen.append(edges[-1])
    return chosen
