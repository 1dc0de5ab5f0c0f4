"""The detector interface and its registry.

A backend is a class with ``detect(image) -> list[Face]`` registered under a name; everything
else (the analyzer, the CLI ``--detector`` flag, the benchmark) finds it through
``create_detector(name)``. Backends import their heavy dependencies and load their models
lazily, on first use, never at import time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass(eq=False)  # numpy fields: compare by identity, not element-wise
class Face:
    """One detected face in image pixel coordinates.

    box: (x1, y1, x2, y2); landmarks: (5, 2) array of right eye, left eye (as seen in the
    image: first is the one on the image's left), nose tip, mouth left, mouth right — or None.
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray | None = None

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])


@dataclass
class DetectorOptions:
    min_face_size: int = 20  # pixels, on the shorter side of the box, in the original image
    score_threshold: float = 0.6
    max_faces: int = 100  # keep the highest-scoring faces beyond this
    max_side: int = 1600  # images are downscaled to at most this side before detection
    threads: int = 0  # intra-op threads for backends that run ONNX Runtime; 0 = its default
    extra: dict = field(default_factory=dict)


class Detector(ABC):
    """Finds faces in an RGB uint8 image."""

    name: str = ""
    has_landmarks: bool = True

    def __init__(self, options: DetectorOptions | None = None, **overrides):
        opts = options or DetectorOptions()
        for k, v in overrides.items():
            if hasattr(opts, k):
                setattr(opts, k, v)
            else:
                opts.extra[k] = v
        self.options = opts

    def __call__(self, image: np.ndarray) -> list[Face]:
        return self.detect(image)

    def detect(self, image: np.ndarray) -> list[Face]:
        """Detect on a downscaled copy when the image is large, then map back to full size."""
        h, w = image.shape[:2]
        scale = min(1.0, self.options.max_side / max(h, w))
        small = image if scale == 1.0 else _resize(image, scale)
        faces = self._detect(small)
        if scale != 1.0:
            for f in faces:
                f.box = f.box / scale
                if f.landmarks is not None:
                    f.landmarks = f.landmarks / scale
        return self._filter(faces, w, h)

    @abstractmethod
    def _detect(self, image: np.ndarray) -> list[Face]:
        """Backend-specific detection on an RGB uint8 image of at most max_side pixels."""

    def _min_face_hint(self, image: np.ndarray) -> float:
        """``min_face_size`` in the pixels of the image given to ``_detect``, for backends that can
        skip work on small faces; 0 when ``detect`` may have downscaled it (then faces of the wanted
        size can be smaller here, by an unknown factor, and ``_filter`` applies the limit instead)."""
        return float(self.options.min_face_size) if max(image.shape[:2]) < self.options.max_side - 1 else 0.0

    def _filter(self, faces: list[Face], w: int, h: int) -> list[Face]:
        o = self.options
        if not faces:
            return []
        # All boxes clipped at once: per-face np.clip calls cost more than the rest of this (crowds).
        boxes = np.array([[f.box[0], f.box[1], f.box[2], f.box[3]] for f in faces], dtype=np.float64)
        boxes = np.clip(boxes, 0, [w, h, w, h]).astype(np.float32)
        widths, heights = (boxes[:, 2] - boxes[:, 0]).tolist(), (boxes[:, 3] - boxes[:, 1]).tolist()
        kept = []
        for f, box, fw, fh in zip(faces, boxes, widths, heights, strict=True):
            f.box = box
            if f.landmarks is not None:
                f.landmarks = np.asarray(f.landmarks, dtype=np.float32).reshape(5, 2)
            if f.score >= o.score_threshold and min(fw, fh) >= o.min_face_size:
                kept.append(f)
        kept.sort(key=lambda f: -f.score)
        return kept[: o.max_faces]


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


_DETECTORS: dict[str, Callable[..., Detector]] = {}


def register_detector(name: str):
    def wrap(cls):
        cls.name = name
        _DETECTORS[name] = cls
        return cls

    return wrap


def list_detectors() -> list[str]:
    _load_builtin()
    return sorted(_DETECTORS)


def create_detector(name: str, options: DetectorOptions | None = None, **overrides) -> Detector:
    """Make a detector by registry name (``retinaface``, ``dlib-hog``, ``dlib-cnn``, ``haar``; ``none``:
    the whole image is the face)."""
    from emolens.core.errors import EmoLensError

    _load_builtin()
    if name not in _DETECTORS:
        raise EmoLensError(f"unknown detector {name!r}; choose one of: {', '.join(sorted(_DETECTORS))}")
    return _DETECTORS[name](options, **overrides)


def _load_builtin() -> None:
    # Importing the backend modules registers them; their heavy imports stay inside methods.
    from emolens.detect import dlib_backend, haar, retinaface, whole  # noqa: F401
