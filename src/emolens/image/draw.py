"""Boxes and their labels on a photo: what ``Results.plot`` and ``emolens explain`` draw.

Each label is placed whole inside the image (never cut at an edge) and away from the labels placed
before it: above its box if there is room, else below it, else just inside its top edge; where all
three collide with earlier labels it slides down (or up) until it is clear.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Rect = tuple[int, int, int, int]  # x1, y1, x2, y2


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(
    boxes: Sequence[Sequence[float]], sizes: Sequence[tuple[int, int]], width: int, height: int
) -> list[Rect]:
    """A rectangle per label (``sizes``: its width and height), each inside ``width`` x ``height``
    and, as far as the image allows, overlapping no earlier one."""
    placed: list[Rect] = []
    for (x1, y1, _, y2), (tw, th) in zip(boxes, sizes, strict=True):
        tw, th = min(tw, width), min(th, height)
        x = int(min(max(round(x1), 0), width - tw))

        def rect(y: float, x: int = x, tw: int = tw, th: int = th) -> Rect:
            y = int(min(max(round(y), 0), height - th))
            return (x, y, x + tw, y + th)

        candidates = [rect(y1 - th), rect(y2), rect(y1)] if y1 - th >= 0 else [rect(y2), rect(y1), rect(y1 - th)]
        choice = next((c for c in candidates if not any(_overlaps(c, p) for p in placed)), None)
        if choice is None:  # crowded: slide from the first place until clear, downwards then upwards
            start = candidates[0]
            for step in (th, -th):
                y = start[1]
                while 0 <= y <= height - th:
                    c = rect(y)
                    if not any(_overlaps(c, p) for p in placed):
                        choice = c
                        break
                    y += step
                if choice is not None:
                    break
        placed.append(choice or candidates[0])  # no free place at all: the first, overlapping
    return placed


def draw_faces(
    canvas: np.ndarray,
    boxes: Sequence[Sequence[float]],
    texts: Sequence[str],
    colors: Sequence[tuple[int, int, int]],
    landmarks: Sequence[np.ndarray | None] | None = None,
) -> np.ndarray:
    """Draw each box in its colour with its text on a filled label, in place; returns ``canvas``.
    Boxes with a non-finite coordinate (a failed face) are skipped."""
    import cv2

    h, w = canvas.shape[:2]
    thick = max(1, round(max(h, w) / 400))
    font = max(0.4, max(h, w) / 1400)
    keep = [i for i, b in enumerate(boxes) if np.isfinite(np.asarray(b, dtype=np.float64)).all()]
    sizes, bases = [], []
    for i in keep:
        (tw, th), base = cv2.getTextSize(texts[i], cv2.FONT_HERSHEY_SIMPLEX, font, thick)
        sizes.append((tw + 4, th + base + 4))
        bases.append(base)
    for i in keep:
        x1, y1, x2, y2 = (int(round(v)) for v in boxes[i])
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colors[i], thick)
        marks = landmarks[i] if landmarks is not None else None
        if marks is not None and np.isfinite(marks).all():
            for x, y in marks:
                cv2.circle(canvas, (int(x), int(y)), thick + 1, (0, 255, 0), -1)
    for i, (lx1, ly1, lx2, ly2), base in zip(
        keep, place_labels([boxes[i] for i in keep], sizes, w, h), bases, strict=True
    ):
        cv2.rectangle(canvas, (lx1, ly1), (lx2 - 1, ly2 - 1), colors[i], -1)
        cv2.putText(
            canvas, texts[i], (lx1 + 2, ly2 - base - 2), cv2.FONT_HERSHEY_SIMPLEX, font, (0, 0, 0), thick, cv2.LINE_AA
        )
    return canvas
