"""OpenCV's Viola-Jones Haar cascade: the fastest backend and the weakest; no landmarks.

A baseline and a fallback: frontal faces only, misses profiles and faces under ~24 px, and
has more false positives on textured backgrounds than the other backends.
"""

from __future__ import annotations

import math

import numpy as np

from emolens.core.errors import ModelError
from emolens.detect.base import Detector, DetectorOptions, Face, register_detector

CASCADE = "haarcascade_frontalface_default.xml"
DEFAULT_MIN_NEIGHBORS = 5
DEFAULT_SCALE_FACTOR = 1.1
# score = 1 - exp(-neighbours / NEIGHBOURS_SCALE): 10 merged windows give 0.6, the shared default
# threshold. On the project's photos, true faces mostly merge 15-130 windows and false positives
# 4-13, while the cascade's stage margins (levelWeights) separate them worse.
NEIGHBOURS_SCALE = 10.9


@register_detector("haar")
class HaarDetector(Detector):
    """Options in ``extra``: ``min_neighbors`` (5): windows a face needs before it is reported at
    all; ``scale_factor`` (1.1): the pyramid step."""

    has_landmarks = False

    def __init__(self, options: DetectorOptions | None = None, **overrides):
        super().__init__(options, **overrides)
        self._cascade = None

    def _load(self):
        if self._cascade is None:
            import cv2

            path = cv2.data.haarcascades + CASCADE
            cascade = cv2.CascadeClassifier(path)
            if cascade.empty():
                raise ModelError(
                    f"OpenCV's Haar cascade {path} is missing or unreadable; "
                    "reinstall opencv-python<5 (OpenCV 5 no longer ships the cascades)"
                )
            self._cascade = cascade
        return self._cascade

    def _detect(self, image: np.ndarray) -> list[Face]:
        import cv2

        if min(image.shape[:2]) < 24:  # the cascade's window
            return []
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        gray = cv2.equalizeHist(gray)
        extra = self.options.extra
        min_side = int(self._min_face_hint(image))
        rects, neighbours = self._load().detectMultiScale2(
            gray,
            scaleFactor=float(extra.get("scale_factor", DEFAULT_SCALE_FACTOR)),
            minNeighbors=int(extra.get("min_neighbors", DEFAULT_MIN_NEIGHBORS)),
            minSize=(min_side, min_side),
        )
        faces = []
        for (x, y, w, h), n in zip(np.asarray(rects).reshape(-1, 4), np.asarray(neighbours).reshape(-1), strict=True):
            box = np.array([x, y, x + w, y + h], dtype=np.float32)
            faces.append(Face(box=box, score=1.0 - math.exp(-float(n) / NEIGHBOURS_SCALE), landmarks=None))
        return faces
