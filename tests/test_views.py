"""cca_hil.views: merging RTT entries and granules into runs loses nothing and merges all it can."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from cca_hil.arch.pas import Pas
from cca_hil.arch.rmi import GRANULE_SIZE, GranuleState
from cca_hil.profiles import load_profile
from cca_hil.rmi_client import RmiClient
from cca_hil.targets.model import ModelTarget
from cca_hil.views import EntryView, level_shift, merge_entries, model_granules, read_pas_map

LEAF_STATES = ("unassigned", "assigned", "assigned_ns", "unassigned_ns")


@st.composite
def tables(draw: st.DrawFn) -> tuple[int, int, list[EntryView]]:
    """A level, a base IPA and a table's entries: leaves (some with following output addresses) and tables."""
    level = draw(st.integers(min_value=1, max_value=3))
    size = 1 << level_shift(level)
    count = draw(st.integers(min_value=1, max_value=40))
    entries: list[EntryView] = []
    next_addr = 0x9000_0000
    for _ in range(count):
        state = draw(st.sampled_from((*LEAF_STATES, "table")))
        if state == "table":
            entries.append(EntryView("table", None, draw(st.integers(0, 1 << 40)) * GRANULE_SIZE))
            continue
        ripas = draw(st.sampled_from(("empty", "ram"))) if state in ("unassigned", "assigned") else None
        addr = None
        if state.startswith("assigned"):
            # Mostly the next address (a run continues), sometimes a jump (a run must break).
            addr = next_addr if draw(st.booleans()) else draw(st.integers(1, 1 << 20)) * size
            next_addr = addr + size
        entries.append(EntryView(state, ripas, addr))
    return level, draw(st.integers(0, 15)) * size * 512, entries


@given(tables())
@settings(max_examples=300)
def test_merged_runs_expand_back_to_the_entries(table: tuple[int, int, list[EntryView]]) -> None:
    level, base, entries = table
    size = 1 << level_shift(level)
    runs = merge_entries(level, base, entries)
    assert sum(run.count for run in runs) == len(entries)
    assert runs[0].ipa == base and runs[-1].top == base + len(entries) * size
    assert all(a.top == b.ipa for a, b in itertools.pairwise(runs))
    expanded = [
        (run.state, run.ripas, None if run.addr is None or run.state == "table" else run.addr + k * size)
        for run in runs
        for k in range(run.count)
    ]
    original = [(e.state, e.ripas, None if e.state == "table" else e.addr) for e in entries]
    assert expanded == original
    assert all(run.count == 1 for run in runs if run.state == "table")


@given(tables())
@settings(max_examples=300)
def test_no_two_neighbouring_leaf_runs_could_have_been_one(table: tuple[int, int, list[EntryView]]) -> None:
    level, base, entries = table
    size = 1 << level_shift(level)
    for a, b in itertools.pairwise(merge_entries(level, base, entries)):
        if "table" in (a.state, b.state):
            continue
        continues = (a.addr is None and b.addr is None) or (
            a.addr is not None and b.addr is not None and b.addr == a.addr + a.count * size
        )
        assert (a.state, a.ripas) != (b.state, b.ripas) or not continues


@given(st.lists(st.integers(min_value=0, max_value=63), max_size=24, unique=True), st.integers(0, 63))
@settings(max_examples=25, deadline=None)
def test_granule_runs_of_the_model_agree_with_each_granule(delegated: list[int], start: int) -> None:
    """After delegations, every granule of the merged view has the RMM's state and the GPT's PAS."""
    target = ModelTarget(profile=load_profile("model"))
    base = target.info().granule_pool[0][0]
    client = RmiClient(target)
    for index in delegated:
        assert client.granule_delegate(base + index * GRANULE_SIZE).ok
    rmm = target.machine.rmm
    lo, hi = base + start * GRANULE_SIZE, base + 64 * GRANULE_SIZE
    view = model_granules(rmm, read_pas_map(target), lo, hi)
    per_granule = [(run.state, run.pas) for run in view.runs for _ in range(run.granules)]
    expected = []
    for pa in range(lo, hi, GRANULE_SIZE):
        state = rmm.granules.get(pa // GRANULE_SIZE, GranuleState.UNDELEGATED).name.lower()
        expected.append((state, str(target.gpt_pas(pa))))
    assert per_granule == expected
    assert all((a.state, a.pas) != (b.state, b.pas) for a, b in itertools.pairwise(view.runs))
    assert {pas for _, pas in expected} <= {str(Pas.REALM), str(Pas.NONSECURE)}
