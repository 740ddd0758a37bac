"""cca_hil.svg: any PAS map draws as a well-formed picture whose rectangles, axis and legend match it."""

from __future__ import annotations

import itertools
from xml.etree import ElementTree as ET

from hypothesis import given, settings
from hypothesis import strategies as st

from cca_hil.svg import LABEL_SPACING, MARGIN, PAS_COLOURS, WIDTH, Run, pas_map_svg

SVG = "{http://www.w3.org/2000/svg}"
PAS_NAMES = (*PAS_COLOURS, "odd & <named>")


@st.composite
def pas_maps(draw: st.DrawFn) -> list[Run]:
    """Contiguous runs from 0, sizes from one granule to terabytes, neighbours of any PAS."""
    sizes = draw(st.lists(st.integers(min_value=0, max_value=30), min_size=1, max_size=300))
    runs, start = [], 0
    for bits in sizes:
        end = start + (1 << (12 + bits))
        runs.append(Run(start, end, draw(st.sampled_from(PAS_NAMES))))
        start = end
    return runs


@given(pas_maps())
@settings(max_examples=100, deadline=None)
def test_every_run_is_drawn_in_order_and_the_band_is_filled(runs: list[Run]) -> None:
    root = ET.fromstring(pas_map_svg(runs, title="GPT & <map>", subtitle="a < b"))
    rects = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "run"]
    assert [
        (int(r.get("data-start", ""), 0), int(r.get("data-end", ""), 0), r.get("data-pas")) for r in rects
    ] == [(run.start, run.end, run.pas) for run in runs]
    xs = [(float(r.get("x", "")), float(r.get("width", ""))) for r in rects]
    assert abs(xs[0][0] - MARGIN) < 0.01
    assert abs(xs[-1][0] + xs[-1][1] - (WIDTH - MARGIN)) < 0.05
    assert all(abs(a[0] + a[1] - b[0]) < 0.02 for a, b in itertools.pairwise(xs))
    labels = [int(t.text or "", 0) for t in root.iter(f"{SVG}text") if t.get("class") == "address"]
    assert labels[0] == runs[0].start and labels[-1] == runs[-1].end
    assert set(labels) <= {run.start for run in runs} | {runs[-1].end}
    # Labels never crowd each other.
    positions = [float(t.get("x", "")) for t in root.iter(f"{SVG}text") if t.get("class") == "address"]
    assert all(b - a >= LABEL_SPACING - 0.01 for a, b in itertools.pairwise(positions))
    legend = {
        t.text.split(":")[0] for t in root.iter(f"{SVG}text") if t.get("class") == "legend-label" and t.text
    }
    assert legend == {run.pas for run in runs}
