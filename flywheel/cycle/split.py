"""The held-out split: by query group, by a stable hash, so a query never moves between train and evaluation."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TypeVar

from flywheel.types import LabelledPair

T = TypeVar("T")
_SALT = "flywheel-heldout-v1:"


def is_heldout(group: str, percent: int) -> bool:
    """Whether a query group belongs to the held-out side.

    The bucket depends only on the group key (sha1 of salt + key, mod 100), so the same query stays on the
    same side in every cycle, whatever else arrived.

    Args:
        group: the normalised query key (see `flywheel.pairs.normalise_query`).
        percent: the share of groups held out, 0-100.
    """
    bucket = int(hashlib.sha1((_SALT + group).encode("utf-8")).hexdigest(), 16) % 100
    return bucket < percent


def split_by_group(rows: Iterable[T], group_of: callable, percent: int) -> tuple[list[T], list[T]]:
    """Split rows into (train, heldout) by their group's bucket.

    Args:
        rows: anything with a group (pairs, queries).
        group_of: row -> group key.
        percent: the share of groups held out.

    Returns:
        (train rows, held-out rows), order preserved.
    """
    train: list[T] = []
    heldout: list[T] = []
    for row in rows:
        (heldout if is_heldout(group_of(row), percent) else train).append(row)
    return train, heldout


def labelled(rows: Iterable[object]) -> list[LabelledPair]:
    """Mined pairs as (query, document text, label) for the evaluator and the trainer."""
    return [LabelledPair(r.query, r.doc_text, int(r.label)) for r in rows]
