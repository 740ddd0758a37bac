"""RTT objects of the model: unfold/fold round trips, liveness and RttSkipNonLiveEntries (RMM 1.0 A5.5)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cca_hil.arch.rmi import Ripas
from cca_hil.model.rtt import (
    UNASSIGNED_NS,
    Hipas,
    Rtt,
    Rtte,
    entries_per_table,
    entry_size,
    unassigned,
    walk,
)

ripas = st.sampled_from([Ripas.EMPTY, Ripas.RAM, Ripas.DESTROYED])
attrs = st.integers(min_value=0, max_value=0b111111).map(lambda v: v << 2)


@st.composite
def parent_entry(draw: st.DrawFn, level: int) -> Rtte:
    """Any entry a table at ``level`` can hold that a child table can be unfolded from."""
    kind = draw(st.sampled_from(["unassigned", "unassigned_ns", "assigned", "assigned_ns"]))
    if kind == "unassigned":
        return unassigned(draw(ripas))
    if kind == "unassigned_ns":
        return UNASSIGNED_NS
    addr = draw(st.integers(min_value=0, max_value=(1 << 48) // entry_size(level) - 1)) * entry_size(level)
    if kind == "assigned":
        return Rtte(Hipas.ASSIGNED, draw(ripas), addr)
    return Rtte(Hipas.ASSIGNED_NS, Ripas.EMPTY, addr, draw(attrs))


@given(data=st.data(), level=st.sampled_from([1, 2]))
def test_unfold_then_fold_gives_back_the_parent_entry(data: st.DataObject, level: int) -> None:
    parent = data.draw(parent_entry(level))
    table = Rtt.filled(addr=0x8000_0000, level=level, base=0, entry=UNASSIGNED_NS)
    child = table.unfold_into(addr=0x8000_1000, parent=parent, base=0)
    assert child.level == level + 1
    assert child.fold() == parent


@given(parent=parent_entry(0))
def test_a_level_1_table_of_blocks_does_not_fold_into_a_level_0_block(parent: Rtte) -> None:
    table = Rtt.filled(addr=0x8000_0000, level=0, base=0, entry=UNASSIGNED_NS)
    child = table.unfold_into(addr=0x8000_1000, parent=parent, base=0)
    if parent.state in (Hipas.ASSIGNED, Hipas.ASSIGNED_NS):
        assert child.fold() is None
        assert child.maps_block()
    else:
        assert child.fold() == parent


def test_one_different_entry_makes_a_table_non_homogeneous() -> None:
    table = Rtt.filled(addr=0, level=3, base=0, entry=unassigned(Ripas.RAM))
    table.entries[300] = unassigned(Ripas.EMPTY)
    assert table.fold() is None


def test_non_contiguous_pages_do_not_fold() -> None:
    table = Rtt(
        addr=0, level=3, base=0, entries=[Rtte(Hipas.ASSIGNED, Ripas.RAM, i << 12) for i in range(512)]
    )
    assert table.fold() == Rtte(Hipas.ASSIGNED, Ripas.RAM, 0)
    table.entries[5] = Rtte(Hipas.ASSIGNED, Ripas.RAM, 0x10_0000)
    assert table.fold() is None


@given(
    live=st.sets(st.integers(min_value=0, max_value=511), max_size=6),
    index=st.integers(min_value=0, max_value=511),
    offset=st.integers(min_value=0, max_value=0xFFF),
)
def test_skip_non_live_finds_the_next_live_entry_or_the_end(live: set[int], index: int, offset: int) -> None:
    base = 1 << 30
    table = Rtt.filled(addr=0, level=3, base=base, entry=unassigned(Ripas.EMPTY))
    for i in live:
        table.entries[i] = Rtte(Hipas.ASSIGNED_NS, Ripas.EMPTY, i << 12)
    ipa = base + (index << 12) + offset
    later = sorted(i for i in live if i > index)
    if index in live:
        expected = ipa
    elif later:
        expected = base + (later[0] << 12)
    else:
        expected = base + (512 << 12)
    assert table.skip_non_live(ipa) == expected


def test_assigned_ns_alone_does_not_make_a_table_live() -> None:
    table = Rtt.filled(addr=0, level=3, base=0, entry=UNASSIGNED_NS)
    table.entries[0] = Rtte(Hipas.ASSIGNED_NS, Ripas.EMPTY, 0x8800_0000)
    assert not table.is_live()
    table.entries[1] = Rtte(Hipas.ASSIGNED, Ripas.EMPTY, 0x8800_1000)
    assert table.is_live()


def test_walk_over_concatenated_starting_tables_picks_the_right_table() -> None:
    starts = [
        Rtt.filled(
            addr=0x1000 * i, level=1, base=i * entries_per_table(1) * entry_size(1), entry=UNASSIGNED_NS
        )
        for i in range(2)
    ]
    found = walk(starts, 1, (512 + 3) << 30, 3)
    assert (found.level, found.rtt, found.index) == (1, starts[1], 3)


def test_walk_stops_at_the_first_non_table_entry() -> None:
    root = Rtt.filled(addr=0, level=0, base=0, entry=unassigned(Ripas.EMPTY))
    child = root.unfold_into(addr=0x1000, parent=root.entries[0], base=0)
    root.entries[0] = Rtte(Hipas.TABLE, Ripas.EMPTY, 0x1000, 0, child)
    found = walk([root], 0, 0x4000_0000 * 3, 3)
    assert (found.level, found.rtt, found.index) == (1, child, 3)
    assert walk([root], 0, 0x4000_0000 * 3, 0).level == 0
