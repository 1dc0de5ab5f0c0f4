"""Which part of the feedback a record is in: the training part, or the held-out part.

Each record is put, once and for good, in the training or the held-out part: the held-out part
is what the promotion gate measures a fine-tuned model on, so a model never trains on the
feedback it is judged by. The split is by group, not by crop, and a group never sits on both
sides:

- Records of one person (when known) form one group; records without a person are tied by their
  source photo or video, else by their upload session.
- The perceptual hash only catches the same photo stored again (re-encoded, resized, brightened):
  crops within ``SAME_PHOTO_BITS`` of 256 bits join one group. Two different people's frontal
  crops lie 66 bits apart or more (see ``benchmarks/feedback_grouping.py``), so the hash never
  ties two people; and a hash tie never joins two groups of different people, so groups cannot
  chain across people either.
- Frames of one video or a burst of shots differ by more than a re-encoded copy does: the
  caller that knows the source or the person says so (``origin``, ``person``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from emolens.store.feedback import Feedback, FeedbackStore

HOLDOUT_FRACTION = 0.25
HASH_SIZE = 16  # 16 x 16 DCT coefficients: a 256-bit hash, 64 hex digits
HASH_HEX = HASH_SIZE * HASH_SIZE // 4
# The same crop re-encoded as JPEG, resized or brightened stays within 14 of 256 bits; crops of
# two different people on a frontal set differ by 66 or more (benchmarks/feedback_grouping.py).
SAME_PHOTO_BITS = 20


def is_holdout(key: str, fraction: float = HOLDOUT_FRACTION) -> bool:
    """The part of a new group, from a hash of what ties it: held out for about ``fraction`` of keys."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0x1_0000_0000 < fraction


def is_current_hash(phash: str | None) -> bool:
    """Whether ``phash`` is of today's kind (records stored earlier kept a 64-bit hash)."""
    return phash is not None and len(phash) == HASH_HEX


def side_of_new(store: FeedbackStore, phash: str, person: str | None, group: str | None, crop_key: str) -> bool:
    """The part a new record goes to: that of the earliest record of its group (by what ties it),
    else that of the nearest stored copy of the same photo (never one of another person), else for
    a new group a hash of what ties it (its crop when nothing does)."""
    if group is not None and (side := store.first_side(group)) is not None:
        return side
    h, nearest = int(phash, 16), None
    for other, other_person, side in store.hash_sides():
        if is_current_hash(other) and (person is None or other_person in (None, person)):
            d = (int(other, 16) ^ h).bit_count()
            if d <= SAME_PHOTO_BITS and (nearest is None or d < nearest[0]):
                nearest = (d, side)
    return nearest[1] if nearest else is_holdout(group or crop_key)


@dataclass
class FeedbackSplit:
    """The feedback in its two parts, with the group of every record."""

    train: list[Feedback]
    holdout: list[Feedback]
    group: dict[str, int]  # record uid -> group number
    moved: int  # records whose stored side their group overrode (a new record joined two groups)

    def groups(self, part: str) -> int:
        return len({self.group[r.uid] for r in getattr(self, part)})

    def only(self, labels: Sequence[str]) -> FeedbackSplit:
        """The records whose labels are among ``labels`` (a model's), in the same groups and parts."""
        keep = set(labels)
        return FeedbackSplit(
            train=[r for r in self.train if r.label in keep],
            holdout=[r for r in self.holdout if r.label in keep],
            group=self.group,
            moved=self.moved,
        )

    def to_dict(self) -> dict[str, int]:
        return {
            "train": len(self.train),
            "holdout": len(self.holdout),
            "train_groups": self.groups("train"),
            "holdout_groups": self.groups("holdout"),
            "moved": self.moved,
        }


def same_photo_pairs(hashes: Sequence[str | None], max_bits: int = SAME_PHOTO_BITS) -> list[tuple[int, int, int]]:
    """(i, j, distance) for the current-kind hashes within ``max_bits``, nearest first. Bits as
    0/1 rows: the distances of a block of rows to all others are one matrix product."""
    valid = [i for i, h in enumerate(hashes) if is_current_hash(h)]
    if len(valid) < 2:
        return []
    raw = np.frombuffer(bytes.fromhex("".join(hashes[i] for i in valid)), np.uint8).reshape(len(valid), -1)
    bits = np.unpackbits(raw, axis=1).astype(np.float32)
    ones = bits.sum(1)
    pairs = []
    for start in range(0, len(valid), 1024):
        block = bits[start : start + 1024]
        dist = ones[start : start + 1024, None] + ones[None] - 2 * (block @ bits.T)
        for a, b in zip(*np.nonzero(dist <= max_bits + 0.5), strict=True):
            if start + a < b:
                pairs.append((valid[start + a], valid[b], int(round(dist[a, b]))))
    return sorted(pairs, key=lambda p: (p[2], p[0], p[1]))


def group_records(records: Sequence[Feedback], max_bits: int = SAME_PHOTO_BITS) -> list[int]:
    """A group number per record: records sharing a person, else a source, else a session (see
    ``Feedback.group_key``) are joined, and so are copies of the same photo (hashes within
    ``max_bits``, nearest first) unless that would put two people in one group."""
    parent = list(range(len(records)))
    people: list[set[str]] = [{r.person} if r.person else set() for r in records]

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(i: int, j: int) -> None:
        a, b = root(i), root(j)
        if a != b:
            parent[a] = b
            people[b] |= people[a]

    first: dict[str, int] = {}
    for i, r in enumerate(records):
        if (key := r.group_key) is not None:
            join(i, first.setdefault(key, i))
    for i, j, _ in same_photo_pairs([r.phash for r in records], max_bits):
        if len(people[root(i)] | people[root(j)]) <= 1:  # never two people in one group
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
