"""The held-out split: stable, by group, about the requested share."""

from __future__ import annotations

from flywheel.cycle.split import is_heldout, split_by_group


def test_a_group_is_on_the_same_side_in_every_process_and_release() -> None:
    """The bucket is a hash of the group key alone (not Python's per-process hash): these sides are fixed, so
    a held-out query never becomes training data in a later cycle. A change here reshuffles every split."""
    held = [g for g in (f"query {i}" for i in range(20)) if is_heldout(g, 20)]
    assert held == ["query 0", "query 2", "query 3", "query 7", "query 13"]


def test_split_by_group_keeps_each_group_whole_and_the_order_of_rows() -> None:
    rows = [(f"g{i % 40}", i) for i in range(120)]  # 40 groups of 3 rows, interleaved
    train, held = split_by_group(rows, lambda r: r[0], 50)
    assert train and held and sorted(train + held) == sorted(rows)
    assert not {g for g, _ in held} & {g for g, _ in train}
    assert [n for _, n in train] == sorted(n for _, n in train) and [n for _, n in held] == sorted(n for _, n in held)
    # Whatever else arrived: a group's side does not depend on the other rows.
    alone_train, alone_held = split_by_group([r for r in rows if r[0] == "g7"], lambda r: r[0], 50)
    assert bool(alone_held) == any(g == "g7" for g, _ in held) and bool(alone_train) != bool(alone_held)


def test_share_is_close_to_percent_and_monotone() -> None:
    groups = [f"query {i}" for i in range(5000)]
    held20 = {g for g in groups if is_heldout(g, 20)}
    held30 = {g for g in groups if is_heldout(g, 30)}
    assert 0.17 < len(held20) / len(groups) < 0.23
    assert held20 <= held30  # raising the share only moves groups into held-out
