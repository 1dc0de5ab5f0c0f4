"""Following faces between detections with sparse optical flow.

A detection costs ~20-35 ms per VGA frame; following a face costs ~1 ms: corners inside its box
are tracked from the previous frame with pyramidal Lucas-Kanade, checked forwards and backwards
(a point that does not come back where it started was lost), and a similarity transform (shift,
scale, roll) fitted to the survivors moves the box and the landmarks, so the next crop is aligned
as if the face had been detected again.
"""

from __future__ import annotations

import cv2
import numpy as np

FLOW_SIDE = 640  # frames are followed at most this large: enough for faces, cheap for 1080p
# A 15 px window over 4 pyramid levels catches motion up to ~50 px a frame; 10 iterations and 25
# points per face are plenty for a rigid shift-and-scale (measured: 0.9 ms a face, vs 1.8 ms at 21/20/40).
_LK = {
    "winSize": (15, 15),
    "maxLevel": 3,
    "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 10, 0.03),
}
MIN_POINTS = 6
MAX_FB_ERROR = 1.0  # pixels (flow scale): forward-backward disagreement beyond this drops a point
MAX_SCALE_STEP = 1.25  # a face does not grow or shrink more than this between two frames
ROI_PAD = 0.5  # flow looks this many box sides around a face: room for fast motion


def flow_gray(image: np.ndarray, side: int = FLOW_SIDE) -> tuple[np.ndarray, float]:
    """The grayscale frame flow runs on, and its scale relative to ``image``."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    h, w = gray.shape[:2]
    scale = min(1.0, side / max(h, w))
    if scale < 1.0:
        gray = cv2.resize(gray, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    return gray, scale


def box_points(gray: np.ndarray, box: np.ndarray, max_points: int = 25) -> np.ndarray:
    """Corners worth following inside the middle of ``box`` (flow coordinates), (N, 2) float32."""
    h, w = gray.shape[:2]
    x1, y1, x2, y2 = box
    # The inner 80%: the box edge is often background, which does not move with the face.
    mx, my = 0.1 * (x2 - x1), 0.1 * (y2 - y1)
    x1, y1 = int(max(x1 + mx, 0)), int(max(y1 + my, 0))
    x2, y2 = int(min(x2 - mx, w)), int(min(y2 - my, h))
    if x2 - x1 < 4 or y2 - y1 < 4:
        return np.zeros((0, 2), np.float32)
    roi = gray[y1:y2, x1:x2]
    min_dist = max(2.0, min(x2 - x1, y2 - y1) / 10)
    pts = cv2.goodFeaturesToTrack(roi, max_points, 0.01, min_dist, blockSize=5)
    if pts is None or len(pts) < MIN_POINTS:  # a flat face (blur, low light): a grid still carries texture
        gx, gy = np.meshgrid(np.linspace(0, x2 - x1 - 1, 6), np.linspace(0, y2 - y1 - 1, 6))
        pts = np.column_stack([gx.ravel(), gy.ravel()])
    pts = np.asarray(pts, np.float32).reshape(-1, 2)
    return pts + np.array([x1, y1], np.float32)


def follow(prev: np.ndarray, cur: np.ndarray, boxes: list[np.ndarray], scale: float = 1.0) -> list[np.ndarray | None]:
    """For each box (image coordinates) in frame ``prev``, the 2x3 similarity that carries it into
    ``cur`` (image coordinates), or None where too few points survived. ``prev`` and ``cur`` are
    ``flow_gray`` frames at ``scale``."""
    return [_follow_one(prev, cur, np.asarray(b, np.float32) * scale, scale) for b in boxes]


def _follow_one(prev: np.ndarray, cur: np.ndarray, box: np.ndarray, scale: float) -> np.ndarray | None:
    # Flow runs on a window around the face, not the frame: the image pyramids LK builds are
    # most of its cost, and a face moves far less than its own size between two frames.
    h, w = prev.shape[:2]
    side = float(max(box[2] - box[0], box[3] - box[1]))
    pad = ROI_PAD * side + _LK["winSize"][0]
    x1, y1 = int(max(box[0] - pad, 0)), int(max(box[1] - pad, 0))
    x2, y2 = int(min(box[2] + pad, w)), int(min(box[3] + pad, h))
    if x2 - x1 < 8 or y2 - y1 < 8:
        return None
    offset = np.array([x1, y1], np.float32)
    a, b = prev[y1:y2, x1:x2], cur[y1:y2, x1:x2]
    p0 = (box_points(prev, box) - offset).reshape(-1, 1, 2)
    if len(p0) < MIN_POINTS:
        return None
    p1, st1, _ = cv2.calcOpticalFlowPyrLK(a, b, p0, None, **_LK)
    back, st2, _ = cv2.calcOpticalFlowPyrLK(b, a, p1, None, **_LK)
    fb = np.linalg.norm((back - p0).reshape(-1, 2), axis=1)
    good = (st1.ravel() == 1) & (st2.ravel() == 1) & (fb < MAX_FB_ERROR)
    src, dst = p0.reshape(-1, 2)[good] + offset, p1.reshape(-1, 2)[good] + offset
    return _similarity(src, dst, scale)


def _similarity(src: np.ndarray, dst: np.ndarray, scale: float) -> np.ndarray | None:
    if len(src) < MIN_POINTS:
        return None
    m, inliers = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=1.5)
    if m is None or inliers is None or int(inliers.sum()) < MIN_POINTS or not np.isfinite(m).all():
        return None
    s = float(np.hypot(m[0, 0], m[1, 0]))
    if not 1 / MAX_SCALE_STEP <= s <= MAX_SCALE_STEP:
        return None
    m = m.astype(np.float64)
    m[:, 2] /= scale  # same rotation and scale in image coordinates; the shift scales back up
    return m


def apply_to_box(m: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The axis-aligned box of the same size ratio: centre moved by ``m``, sides scaled by its scale."""
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    ncx, ncy = m @ np.array([cx, cy, 1.0])
    s = float(np.hypot(m[0, 0], m[1, 0]))
    hw, hh = (x2 - x1) * s / 2, (y2 - y1) * s / 2
    return np.array([ncx - hw, ncy - hh, ncx + hw, ncy + hh], np.float32)


def apply_to_points(m: np.ndarray, points: np.ndarray | None) -> np.ndarray | None:
    if points is None:
        return None
    p = np.asarray(points, np.float64).reshape(-1, 2)
    return (p @ m[:, :2].T + m[:, 2]).astype(np.float32)
