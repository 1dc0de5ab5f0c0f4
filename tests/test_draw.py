"""Face labels on annotated images: whole inside the image, and not on top of each other."""

from __future__ import annotations

import numpy as np

from emolens.image.draw import place_labels
from emolens.pipeline.results import COLORS, FaceResult, Results


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_labels_of_a_crowd_stay_inside_and_apart():
    """A crowd: 6 x 5 faces of 40 px, 44 px apart, labels wider than the faces."""
    boxes = [(10 + 44 * c, 30 + 60 * r, 50 + 44 * c, 70 + 60 * r) for r in range(5) for c in range(6)]
    rects = place_labels(boxes, [(70, 16)] * len(boxes), 290, 340)
    for x1, y1, x2, y2 in rects:
        assert 0 <= x1 < x2 <= 290 and 0 <= y1 < y2 <= 340
    clashes = sum(_overlap(a, b) for i, a in enumerate(rects) for b in rects[i + 1 :])
    assert clashes == 0


def test_label_at_the_edges_is_moved_inside():
    (right,), (top,) = (
        place_labels([(180, 50, 200, 70)], [(60, 15)], 200, 150),
        place_labels([(10, 0, 50, 40)], [(60, 15)], 200, 150),
    )
    assert right == (140, 35, 200, 50)  # shifted left to end at the edge, above the face
    assert top == (10, 40, 70, 55)  # no room above: below the face


def test_annotated_image_keeps_a_label_at_the_right_edge_whole():
    image = np.full((200, 300, 3), 90, np.uint8)
    face = FaceResult(box=np.array([270, 80, 300, 110], np.float32), score=0.9, landmarks=None, probs={"happy": 1.0})
    out = Results(faces=[face], image=image).plot()
    label_colour = (out == COLORS["happy"]).all(-1)
    assert label_colour[:, :260].any()  # the label starts left of the box, so its text is not cut
    assert not label_colour[:, :150].any()
