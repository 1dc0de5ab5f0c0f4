"""Which part of the feedback a record is in: the training part, or the held-out part.

Each record is put, once and for good, in the training or the held-out part: the held-out part
is what the promotion gate measures a fine-tuned model on, so a model never trains on the
feedback it is judged by. The split is by group, not by crop: records of one person (when
known), else of one source photo or video, else of one upload session, and near-duplicates
(perceptual hashes within ``NEAR_DUPLICATE_BITS``) form one group, and a group never sits on
both sides. A burst of near-identical photos or the frames of one video would otherwise put a
twin of almost every held-out face in the training part and flatter the gate. Hashes tie most
bursts but not all (a frame can stray further), so a caller that knows the person or the source
should say so.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from emolens.store.feedback import Feedback, FeedbackStore

HOLDOUT_FRACTION = 0.25
# 64-bit DCT hashes of two frames of one face differ by up to ~10 bits on degraded webcam crops
# (benchmarks/feedback_loop.py); crops of different faces differ by 16 or more.
NEAR_DUPLICATE_BITS = 10


def is_holdout(key: str, fraction: float = HOLDOUT_FRACTION) -> bool:
    """The part of a new group, from a hash of what ties it: held out for about ``fraction`` of keys."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0x1_0000_0000 < fraction


def side_of_new(store: FeedbackStore, phash: str, group: str | None, crop_key: str) -> bool:
    """The part a new record goes to: that of the earliest record of its group (by what ties it,
    else by a near-identical hash), or for a new group a hash of what ties it (its crop when
    nothing does)."""
    if group is not None and (side := store.first_side(group)) is not None:
        return side
    h = int(phash, 16)
    for other, side in store.hash_sides():
        if other and (int(other, 16) ^ h).bit_count() <= NEAR_DUPLICATE_BITS:
            return side
    return is_holdout(group or crop_key)


@dataclass
class FeedbackSplit:
    """The feedback in its two parts, with the group of every record."""

    train: list[Feedback]
    holdout: list[Feedback]
    group: dict[str, int]  # record uid -> group number
    moved: int  # records whose stored side their group overrode (a new record joined two groups)

    def groups(self, part: str) -> int:
        return len({self.group[r.uid] for r in getattr(self, part)})

    def to_dict(self) -> dict[str, int]:
        return {
            "train": len(self.train),
            "holdout": len(self.holdout),
            "train_groups": self.groups("train"),
            "holdout_groups": self.groups("holdout"),
            "moved": self.moved,
        }


def group_records(records: Sequence[Feedback], max_bits: int = NEAR_DUPLICATE_BITS) -> list[int]:
    """A group number per record: records sharing a person, source or session (see
    ``Feedback.group_key``) or with perceptual hashes within ``max_bits`` are joined, transitively."""
    from emolens.data.eda import near_duplicate_pairs

    parent = list(range(len(records)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(i: int, j: int) -> None:
        parent[root(i)] = root(j)

    first: dict[str, int] = {}
    for i, r in enumerate(records):
        if (key := r.group_key) is not None:
            join(i, first.setdefault(key, i))
    hashes = [int(r.phash, 16) if r.phash else None for r in records]
    for i, j, _ in near_duplicate_pairs(hashes, max_bits):
        join(i, j)
    roots = [root(i) for i in range(len(records))]
    number = {r: n for n, r in enumerate(dict.fromkeys(roots))}
    return [number[r] for r in roots]


def split_records(records: Sequence[Feedback]) -> FeedbackSplit:
    """``records`` (oldest first, each with its hash) in their parts, by group: each group goes
    where its earliest record went."""
    groups = group_records(records)
    side: dict[int, bool] = {}
    for r, g in zip(records, groups, strict=True):
        side.setdefault(g, r.holdout)
    moved = sum(side[g] != r.holdout for r, g in zip(records, groups, strict=True))
    return FeedbackSplit(
        train=[r for r, g in zip(records, groups, strict=True) if not side[g]],
        holdout=[r for r, g in zip(records, groups, strict=True) if side[g]],
        group={r.uid: g for r, g in zip(records, groups, strict=True)},
        moved=moved,
    )
