"""dlib's detectors: HOG + linear SVM (``dlib-hog``) and the MMOD CNN (``dlib-cnn``).

Both need the ``dlib`` extra (dlib and face_recognition_models). Landmarks come from dlib's
68-point shape predictor, reduced to RetinaFace's 5 points. Both detectors are trained on faces
of about 80 px and upsample the image (dlib's ``upsample_num_times``, 2x per step) to find
smaller ones, within a pixel budget because the cost grows with the upsampled area.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np

from emolens.core.errors import MissingExtraError, ModelError, require
from emolens.detect.base import Detector, DetectorOptions, Face, register_detector

_MODELS_PACKAGE = "face_recognition_models"
CNN_MODEL = "mmod_human_face_detector.dat"
LANDMARKS_MODEL = "shape_predictor_68_face_landmarks.dat"
TRAINED_FACE_SIZE = 80  # px; both detectors miss faces much smaller than this without upsampling
MAX_UPSAMPLE = 2
# dlib scores are SVM-style margins with 0 as dlib's own threshold. score = sigmoid(2 * margin)
# maps 0 to 0.5, and the shared default threshold 0.6 to a margin of 0.2: on the project's photos
# that drops HOG's few false positives (margins up to 0.12) while keeping all but 3 of ~115 faces.
MARGIN_SLOPE = 2.0


def _model_path(name: str) -> Path:
    # face_recognition_models' __init__ imports pkg_resources, which recent setuptools no longer
    # provides: locate the package's folder without importing it.
    spec = importlib.util.find_spec(_MODELS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError("dlib", _MODELS_PACKAGE)
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise ModelError(
            f"dlib model file {path} is missing; reinstall it with: pip install --force-reinstall {_MODELS_PACKAGE}"
        )
    return path


def margin_to_score(margin: float) -> float:
    return 1.0 / (1.0 + math.exp(-MARGIN_SLOPE * margin))


def score_to_margin(score: float) -> float:
    score = min(max(score, 1e-6), 1 - 1e-6)
    return math.log(score / (1.0 - score)) / MARGIN_SLOPE


class _DlibDetector(Detector):
    has_landmarks = True
    default_upsample_pixels: int  # auto-upsampling stops before the upsampled image exceeds this area

    def __init__(self, options: DetectorOptions | None = None, **overrides):
        super().__init__(options, **overrides)
        self._dlib = None
        self._detector = None
        self._predictor = None

    def _load(self) -> None:
        if self._detector is None:
            dlib = require("dlib", "dlib")
            try:
                predictor = dlib.shape_predictor(str(_model_path(LANDMARKS_MODEL)))
                detector = self._make_detector(dlib)
            except RuntimeError as exc:  # dlib's deserialisation errors
                raise ModelError(f"a dlib model file could not be read (corrupt download?): {exc}") from exc
            self._dlib, self._predictor, self._detector = dlib, predictor, detector

    def _make_detector(self, dlib):
        raise NotImplementedError

    def _run(self, image: np.ndarray, upsample: int) -> list[tuple[object, float]]:
        """(dlib.rectangle, margin) pairs in the coordinates of ``image``."""
        raise NotImplementedError

    def _upsample_times(self, image: np.ndarray) -> int:
        extra = self.options.extra
        if extra.get("upsample") is not None:
            return int(extra["upsample"])
        budget = int(extra.get("upsample_max_pixels", self.default_upsample_pixels))
        area = image.shape[0] * image.shape[1]
        wanted = self._min_face_hint(image)
        n = 0
        while n < MAX_UPSAMPLE and area * 4 ** (n + 1) <= budget and wanted * 2**n < TRAINED_FACE_SIZE:
            n += 1
        return n

    def _detect(self, image: np.ndarray) -> list[Face]:
        if min(image.shape[:2]) < 16:
            return []
        self._load()
        image = np.ascontiguousarray(image, dtype=np.uint8)
        faces = []
        for rect, margin in self._run(image, self._upsample_times(image)):
            # dlib rectangles are inclusive: right/bottom are the last pixel inside the box.
            box = np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1], dtype=np.float32)
            faces.append(Face(box=box, score=margin_to_score(margin), landmarks=self._landmarks(image, rect)))
        return faces

    def _landmarks(self, image: np.ndarray, rect) -> np.ndarray:
        """RetinaFace's 5 points from the 68-point (iBUG 300-W) layout: eye centres (36-41 is the
        eye on the image's left), nose tip (30), mouth corners (48 image-left, 54 image-right)."""
        shape = self._predictor(image, rect)
        pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
        return np.stack([pts[36:42].mean(0), pts[42:48].mean(0), pts[30], pts[48], pts[54]])


@register_detector("dlib-hog")
class DlibHogDetector(_DlibDetector):
    """HOG + linear SVM: fast on CPU, frontal faces only. Options in ``extra``: ``upsample``
    (auto): fixed upsampling count; ``upsample_max_pixels`` (2.5 MP): the auto budget."""

    default_upsample_pixels = 2_500_000

    def _make_detector(self, dlib):
        return dlib.get_frontal_face_detector()

    def _run(self, image, upsample):
        # Let dlib drop candidates below the requested score itself rather than at margin 0.
        adjust = score_to_margin(self.options.score_threshold)
        rects, margins, _ = self._detector.run(image, upsample, adjust)
        return list(zip(rects, margins, strict=True))


@register_detector("dlib-cnn")
class DlibCnnDetector(_DlibDetector):
    """MMOD CNN: more robust to pose than HOG, but slow on CPU (seconds per VGA image with dlib-bin,
    which has no BLAS). Its margins start at 0, so thresholds below 0.5 add nothing. Options in
    ``extra``: ``upsample`` (auto); ``upsample_max_pixels`` (1 MP)."""

    default_upsample_pixels = 1_000_000

    def _make_detector(self, dlib):
        return dlib.cnn_face_detection_model_v1(str(_model_path(CNN_MODEL)))

    def _run(self, image, upsample):
        return [(d.rect, d.confidence) for d in self._detector(image, upsample)]
