"""Face alignment: a similarity transform from 5 landmarks to a canonical template, then a crop.

The template is where the 5 points sit, on average, in the FER2013 training crops (measured
by running RetinaFace on 600 upscaled training images and taking the median, then made
left-right symmetric), expressed as fractions of the crop side. Aligning real photos to the
same framing is what lets a model trained on FER2013 see faces the way it was trained.
"""

from __future__ import annotations

import cv2
import numpy as np

# (x, y) / side: image-left eye, image-right eye, nose tip, mouth left, mouth right
FER_TEMPLATE = np.array([[15.4, 18.5], [32.6, 18.5], [24.0, 28.5], [17.0, 36.5], [31.0, 36.5]], dtype=np.float32) / 48.0

# Without landmarks, a square this many times the box's larger side, centred on the box,
# matches the FER2013 framing for RetinaFace-like boxes (box ≈ 79% of the crop's width).
BOX_CROP_SCALE = 1.25

# How a face smaller than the crop is enlarged. Bicubic keeps more of a 16-24 px face's edges than
# bilinear (benchmarks/results/upscaling.md); the camera degradations of `emolens.image.degrade` enlarge
# the same way, so models train and are measured on what the analyzer hands them.
ENLARGE = cv2.INTER_CUBIC


def similarity_matrix(landmarks: np.ndarray, size: int, template: np.ndarray = FER_TEMPLATE) -> np.ndarray:
    """2x3 matrix mapping image points onto the template scaled to ``size``."""
    src = np.asarray(landmarks, dtype=np.float32).reshape(5, 2)
    if not np.isfinite(src).all():
        raise ValueError("landmarks are not finite")
    dst = template * size
    matrix, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
    if matrix is None or not np.isfinite(matrix).all():  # degenerate (all in one spot): the caller falls back
        raise ValueError("landmarks are degenerate")
    return matrix


def box_matrix(box: np.ndarray, size: int, scale: float = BOX_CROP_SCALE) -> np.ndarray:
    """2x3 matrix cropping a square around ``box`` (x1, y1, x2, y2) to ``size`` x ``size``."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1, 1.0) * scale
    s = size / side
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return np.array([[s, 0, size / 2 - s * cx], [0, s, size / 2 - s * cy]], dtype=np.float32)


def alignment_matrix(box: np.ndarray, landmarks: np.ndarray | None, size: int) -> np.ndarray:
    """The 2x3 image → crop matrix ``align_face`` uses: landmarks when sane, else the padded box.

    ``cv2.invertAffineTransform`` of it maps crop pixels (a heat map, say) back onto the image.
    """
    if landmarks is not None:
        try:
            return similarity_matrix(landmarks, size)
        except ValueError:
            pass
    return box_matrix(box, size)


def _check_box(box: np.ndarray, width: int, height: int) -> None:
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if b.shape != (4,) or not np.isfinite(b).all():
        raise ValueError(f"face box {b.tolist()} is not 4 finite numbers")
    x1, y1, x2, y2 = b
    if x2 - x1 < 1 or y2 - y1 < 1:
        raise ValueError(f"face box {np.round(b, 1).tolist()} is empty")
    if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
        raise ValueError(f"face box {np.round(b, 1).tolist()} lies outside the {width}x{height} image")


def align_face(
    image: np.ndarray, box: np.ndarray, landmarks: np.ndarray | None, size: int, channels: int = 1
) -> np.ndarray:
    """Crop one face from an RGB uint8 image: (size, size) for channels=1, (size, size, 3) for 3.

    Uses the landmarks when there are any and they are sane, otherwise a padded box crop.
    Raises ValueError when the box is not finite, empty, or outside the image: a crop of the
    border's replicated pixels would be classified as if it were a face.
    """
    _check_box(box, image.shape[1], image.shape[0])
    matrix = alignment_matrix(box, landmarks, size)
    # Shrinking a big face straight to 48 px aliases: area-average it to about twice the target
    # size first. Only the face's region is resized, so a 100-face 7000 px photo stays cheap.
    scale = float(np.hypot(matrix[0, 0], matrix[0, 1]))
    src = image
    if scale < 0.5:
        src, matrix = _face_region(image, matrix, size)
        factor = 2 * scale
        src = cv2.resize(src, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        matrix[:, :2] /= factor
    flags = ENLARGE if scale > 1 else cv2.INTER_LINEAR
    crop = cv2.warpAffine(src, matrix, (size, size), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    if channels == 1:
        return cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    return crop


def _face_region(image: np.ndarray, matrix: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The part of ``image`` that the output square maps from, and the matrix for that part."""
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], dtype=np.float64) @ inverse.T
    h, w = image.shape[:2]
    x0, y0 = (max(int(np.floor(v)) - 2, 0) for v in corners.min(0))
    x1, y1 = (int(np.ceil(v)) + 2 for v in corners.max(0))
    x1, y1 = min(max(x1, x0 + 1), w), min(max(y1, y0 + 1), h)
    shifted = matrix.astype(np.float64).copy()
    shifted[:, 2] += shifted[:, :2] @ np.array([x0, y0], dtype=np.float64)
    return image[y0:y1, x0:x1], shifted
