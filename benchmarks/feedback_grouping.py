"""How the feedback's held-out split groups records: copies of one photo together, people apart.

Method
- Faces: LFW deep-funneled (``../shared/datasets/identity/lfw/people``), the first ``--people``
  people with 8 photos or more, 8 photos each; each photo's central 110 x 110 px (the face, roughly
  frontal) as a grey 96 px crop, as feedback stores it. And FER2013 PublicTest (frontal grey
  48 px crops, ``fer2013/val.npz``): the first 1,500.
- Distances of the perceptual hash (``imagehash.phash``) in two sizes: 64 bits (the earlier rule,
  at most 10 bits apart joined) and 256 bits (today's, at most ``SAME_PHOTO_BITS``), between
  different people, between two photos of one person, and between a crop and copies of it:
  re-encoded (JPEG 60), resized to 48 px and back, brightened (x1.15 + 5), noisy (sigma 4),
  and, for scale, moved by 2 px or turned by 3 degrees (which no hash ties without tying people).
- Grouping of the LFW records, each with its person, and a JPEG copy of every fifth person's
  first photo stored with no person: by the earlier rule (person keys, then 64-bit hash ties
  joined transitively) and by today's (``emolens.feedback.split.group_records``).

Run: ``python benchmarks/feedback_grouping.py > benchmarks/results/feedback_grouping.md``
(needs ``../shared/datasets``; about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def copies(crop: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    jpeg = cv2.imdecode(cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 60])[1], cv2.IMREAD_GRAYSCALE)
    small = cv2.resize(cv2.resize(crop, (48, 48), interpolation=cv2.INTER_AREA), (96, 96))
    return {
        "JPEG 60": jpeg,
        "resized to 48 px": small,
        "brightened": np.clip(crop * 1.15 + 5, 0, 255).astype(np.uint8),
        "noise sigma 4": np.clip(crop + rng.normal(0, 4, crop.shape), 0, 255).astype(np.uint8),
        "moved 2 px": cv2.warpAffine(crop, np.float32([[1, 0, 2], [0, 1, 1]]), (96, 96), borderMode=cv2.BORDER_REFLECT),
        "turned 3 degrees": cv2.warpAffine(
            crop, cv2.getRotationMatrix2D((48, 48), 3, 1.03), (96, 96), borderMode=cv2.BORDER_REFLECT
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--people", type=int, default=60)
    args = ap.parse_args()
    lfw = DATA / "identity" / "lfw" / "people"
    if not lfw.is_dir():
        sys.exit(f"needs {lfw}")
    from emolens.data.eda import near_duplicate_pairs, phash
    from emolens.feedback.crops import crop_phash
    from emolens.feedback.split import SAME_PHOTO_BITS, group_records
    from emolens.store.feedback import Feedback

    people = sorted(p for p in lfw.iterdir() if len(list(p.glob("*.jpg"))) >= 8)[: args.people]
    crops, who = [], []
    for k, person in enumerate(people):
        for f in sorted(person.glob("*.jpg"))[:8]:
            grey = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
            crops.append(cv2.resize(grey[70:180, 70:180], (96, 96), interpolation=cv2.INTER_AREA))
            who.append(k)
    who = np.array(who)
    hashes = {"64": [phash(c) for c in crops], "256": [int(crop_phash(c), 16) for c in crops]}
    rng = np.random.default_rng(0)
    variants = [copies(c, rng) for c in crops[::8]]
    print(f"# Feedback grouping: copies of one photo together, people apart ({datetime.now(UTC):%Y-%m-%d})\n")
    print(f"{len(people)} LFW people x 8 photos ({len(crops)} crops); copies made of each person's first photo.\n")
    print("| hash | different people: min / 0.1% / 1% / median | one person, two photos: min / median | "
          + " | ".join(f"{name}: max" for name in variants[0]) + " |")  # fmt: skip
    print("|---|---|---|" + "---|" * len(variants[0]))
    for bits, h in hashes.items():
        d = np.array([[(a ^ b).bit_count() for b in h] for a in h])
        other = d[who[:, None] != who[None, :]]
        same = d[(who[:, None] == who[None, :]) & ~np.eye(len(h), dtype=bool)]
        of = (lambda c: phash(c)) if bits == "64" else (lambda c: int(crop_phash(c), 16))
        worst = {
            name: max((of(v[name]) ^ h[8 * i]).bit_count() for i, v in enumerate(variants)) for name in variants[0]
        }
        print(
            f"| {bits} bits | {other.min()} / {np.percentile(other, 0.1):.0f} / {np.percentile(other, 1):.0f} / "
            f"{np.median(other):.0f} | {same.min()} / {np.median(same):.0f} | "
            + " | ".join(str(v) for v in worst.values()) + " |"
        )  # fmt: skip

    # Grouping: each record with its person, plus a copy of every fifth person's first photo with none.
    extra = [(k, variants[k]["JPEG 60"]) for k in range(0, len(people), 5)]
    now = datetime.now(UTC)
    records = [
        Feedback(uid=str(i), created_at=now, label="sad", predicted=None, confidence=None, is_correction=True,
                 holdout=False, source="bench", user_id=None, model_version=None, box=None, probs=None,
                 crop_key=str(i), image_key=None, person=people[k].name, phash=crop_phash(c))
        for i, (k, c) in enumerate(zip(who, crops, strict=True))
    ] + [
        Feedback(uid=f"copy{k}", created_at=now, label="sad", predicted=None, confidence=None, is_correction=True,
                 holdout=False, source="bench", user_id=None, model_version=None, box=None, probs=None,
                 crop_key=f"copy{k}", image_key=None, phash=crop_phash(c))
        for k, c in extra
    ]  # fmt: skip
    person_of = [people[k].name for k in who] + [None] * len(extra)

    # The earlier rule: person keys, then 64-bit hashes within 10 bits joined transitively.
    parent = list(range(len(records)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, p in enumerate(person_of):
        if p:
            parent[root(i)] = root(first.setdefault(p, i))
    old_hashes = hashes["64"] + [phash(c) for _, c in extra]
    for i, j, _ in near_duplicate_pairs(old_hashes, 10):
        parent[root(i)] = root(j)
    rules = {"earlier (64 bits within 10, chained)": [root(i) for i in range(len(records))],
             f"today's (256 bits within {SAME_PHOTO_BITS}, never two people)": group_records(records)}  # fmt: skip
    print(
        f"\nGrouping {len(crops)} records of {len(people)} people, and {len(extra)} copies stored without a person:\n"
    )
    print("| rule | groups | most people in one group | copies in their person's group |")
    print("|---|---|---|---|")
    for name, groups in rules.items():
        members: dict[int, set[str]] = {}
        for g, p in zip(groups, person_of, strict=True):
            if p:
                members.setdefault(g, set()).add(p)
        found = sum(members.get(groups[len(crops) + n], set()) == {people[k].name} for n, (k, _) in enumerate(extra))
        print(f"| {name} | {len(set(groups))} | {max(len(m) for m in members.values())} | {found} of {len(extra)} |")

    fer = np.load(DATA / "fer2013" / "val.npz")["images"][:1500]
    h = [int(crop_phash(c), 16) for c in fer]
    d = np.array([[(a ^ b).bit_count() for b in h] for a in h])[np.triu_indices(len(h), 1)]
    print(
        f"\nFER2013 PublicTest, first {len(h)} crops (frontal grey, 48 px; the set holds a few exact "
        f"duplicates): {int((d == 0).sum())} pairs at 0 bits, {int(((d > 0) & (d <= SAME_PHOTO_BITS)).sum())} "
        f"within 1-{SAME_PHOTO_BITS} bits, {int((d <= 40).sum())} within 40, of {len(d)} pairs."
    )


if __name__ == "__main__":
    main()
