"""``none``: no detection, the whole image is the face (DeepFace's ``skip``), for faces already cropped.

The face is framed as the models' training crops are: the image's centred square (of its longer
side) becomes the model's input as it is, so a FER2013-style crop is read exactly as in training.
Its landmarks are the template's points on that square (where such a crop puts the eyes, nose and
mouth), not measured ones.
"""

from __future__ import annotations

import numpy as np

from emolens.detect.base import Detector, Face, register_detector
from emolens.image.align import FER_TEMPLATE


@register_detector("none")
class WholeImage(Detector):
    """One face per image: the whole image, score 1."""

    has_landmarks = False  # the points given are the template's, not found in the image

    def detect(self, image: np.ndarray) -> list[Face]:
        return self._detect(image)  # the user says this is a face: no size or score filter, no downscaling

    def _detect(self, image: np.ndarray) -> list[Face]:
        h, w = image.shape[:2]
        side = float(max(w, h))
        corner = np.array([(w - side) / 2, (h - side) / 2], dtype=np.float32)
        marks = FER_TEMPLATE * side + corner
        return [Face(box=np.array([0, 0, w, h], dtype=np.float32), score=1.0, landmarks=marks)]
