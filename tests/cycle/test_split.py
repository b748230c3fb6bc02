"""The held-out split: stable, by group, about the requested share."""

from __future__ import annotations

from flywheel.cycle.split import is_heldout, split_by_group


def test_same_group_same_side_always() -> None:
    assert all(is_heldout("reset password", 20) == is_heldout("reset password", 20) for _ in range(5))
    rows = [("g1", 1), ("g2", 2), ("g1", 3)]
    train, held = split_by_group(rows, lambda r: r[0], 50)
    sides = {g for g, _ in held}
    assert not sides & {g for g, _ in train}


def test_share_is_close_to_percent_and_monotone() -> None:
    groups = [f"query {i}" for i in range(5000)]
    held20 = {g for g in groups if is_heldout(g, 20)}
    held30 = {g for g in groups if is_heldout(g, 30)}
    assert 0.17 < len(held20) / len(groups) < 0.23
    assert held20 <= held30  # raising the share only moves groups into held-out
