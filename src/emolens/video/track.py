"""Multi-face tracking: stable ids across frames.

At a detection frame, tracks are matched to detections by box overlap (IoU) with an optimal
one-to-one assignment (the Hungarian method); a detection nobody claims starts a tentative track,
which gets an id only after ``min_hits`` detections, so a one-frame false detection never becomes
a person; a track that misses more than ``max_misses`` detection rounds ends. Until then a lost
track is not shown but kept, so a face hidden for a moment (behind another, a missed detection)
gets its id back, as ByteTrack's lost-track buffer does; its velocity fades (``lost_decay`` a
round), since one estimated from jittery detections would carry it away from where the face
reappears. Between detections each box follows the image (``motion.py``), or its velocity when the
image gives no answer, so it is where the face is when the next detection comes.

``benchmarks/results/tracker.md`` compares this tracker with ByteTrack and norfair on the same
detection streams (identity switches, speed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(eq=False)
class Track:
    box: np.ndarray  # x1, y1, x2, y2 (float32)
    landmarks: np.ndarray | None  # (5, 2) or None
    score: float  # the last detection score
    first_frame: int
    last_frame: int  # the last frame this track was placed in (detected or followed)
    id: int | None = None  # None while tentative
    hits: int = 1  # detections matched to it
    misses: int = 0  # consecutive detection rounds without a match
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))  # box change per frame
    last_detected: int = -1
    detected_box: np.ndarray | None = None  # the box at the last detection
    last_classified: int = -1
    uid: int = 0  # unique within the tracker from birth (tentative tracks too); keys smoothing state
    probs: np.ndarray | None = None  # smoothed probabilities (kept by the pipeline)
    raw: np.ndarray | None = None  # the last unsmoothed reading

    @property
    def confirmed(self) -> bool:
        return self.id is not None

    @property
    def visible(self) -> bool:
        """Confirmed and found at the last detection round: what a frame's results report."""
        return self.id is not None and self.misses == 0

    def move(self, box: np.ndarray, landmarks: np.ndarray | None, frame: int) -> None:
        """Place the track at ``frame`` (followed, not detected); the velocity follows the motion."""
        steps = max(frame - self.last_frame, 1)
        self.velocity = (0.5 * self.velocity + 0.5 * (box - self.box) / steps).astype(np.float32)
        self.box, self.landmarks, self.last_frame = box.astype(np.float32), landmarks, frame

    def predict(self, frame: int) -> None:
        """Coast on the constant-velocity model when the image cannot say where the face went."""
        steps = frame - self.last_frame
        if steps > 0:
            shift = self.velocity * steps
            if self.landmarks is not None:
                centre_shift = np.array([(shift[0] + shift[2]) / 2, (shift[1] + shift[3]) / 2], np.float32)
                self.landmarks = self.landmarks + centre_shift
            self.box = (self.box + shift).astype(np.float32)
            self.last_frame = frame


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def assign(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost one-to-one assignment (rows, cols) of a rectangular cost matrix.

    SciPy's solver when installed (it comes with the ``identity`` and ``train`` extras), else the
    same Hungarian method in NumPy: a handful of faces makes that instant, and video then needs no
    extra."""
    cost = np.asarray(cost, np.float64)
    if cost.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:
        return hungarian(cost)
    rows, cols = linear_sum_assignment(cost)
    return rows.astype(np.int64), cols.astype(np.int64)


def hungarian(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Hungarian method (shortest augmenting paths with potentials), O(n^2 m)."""
    cost = np.asarray(cost, np.float64)
    transposed = cost.shape[0] > cost.shape[1]
    c = cost.T if transposed else cost  # n rows <= m columns
    n, m = c.shape
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    owner = np.zeros(m + 1, np.int64)  # owner[j]: the row (1-based) holding column j; column 0 is virtual
    way = np.zeros(m + 1, np.int64)
    for i in range(1, n + 1):
        owner[0], j0 = i, 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, bool)
        while True:
            used[j0] = True
            i0 = owner[j0]
            free = ~used[1:]
            cur = c[i0 - 1] - u[i0] - v[1:]
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            candidates = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(candidates)) + 1
            delta = candidates[j1 - 1]
            u[owner[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if owner[j0] == 0:
                break
        while j0:  # flip the augmenting path
            j1 = way[j0]
            owner[j0] = owner[j1]
            j0 = j1
    cols = np.flatnonzero(owner[1:]) + 0
    rows = owner[1:][cols] - 1
    order = np.argsort(rows)
    rows, cols = rows[order], cols[order]
    return (cols, rows) if transposed else (rows, cols)


# Frames a lost track is kept, as ByteTrack keeps them (1.2 s at 25 FPS). Tracks used to end after 2
# missed detection rounds: faces hidden for a moment came back under new ids (the crowd streams of
# benchmarks/tracker.py: see benchmarks/results/tracker.md).
LOST_FRAMES = 30
MAX_MISSES = 10  # LOST_FRAMES in detection rounds when every 3rd frame is detected (the video default)


def lost_rounds(detect_every: int, frames: int = LOST_FRAMES) -> int:
    """Detection rounds that span ``frames`` frames when every ``detect_every``-th frame is detected."""
    return max(2, -(-frames // max(1, detect_every)))


class Tracker:
    """IoU + Hungarian matching of detections to tracks; ids are 1, 2, 3... in order of confirmation."""

    def __init__(
        self, iou_threshold: float = 0.3, min_hits: int = 2, max_misses: int = MAX_MISSES, lost_decay: float = 0.5
    ):
        self.iou_threshold = iou_threshold
        self.min_hits = max(1, min_hits)
        self.max_misses = max(0, max_misses)
        self.lost_decay = float(lost_decay)
        self.reset()

    def reset(self) -> None:
        self.tracks: list[Track] = []
        self.ended: list[Track] = []  # tracks removed since the owner last emptied this list
        self.rounds = 0  # detection rounds so far
        self._next_id = 1
        self._next_uid = 1

    def update(self, faces: list, frame: int) -> list[Track]:
        """One detection round: ``faces`` (``Face`` objects) seen at ``frame``; returns the visible tracks."""
        self.rounds += 1
        for t in self.tracks:
            if t.misses:
                t.velocity = (t.velocity * self.lost_decay).astype(np.float32)
            t.predict(frame)  # tracks not followed up to this frame coast to it
        boxes = np.array([f.box for f in faces], np.float32).reshape(-1, 4)
        matched_tracks, matched_faces = self._match(boxes)
        for ti, fi in zip(matched_tracks, matched_faces, strict=True):
            self._hit(self.tracks[ti], faces[fi], frame)
        for ti in set(range(len(self.tracks))) - set(matched_tracks):
            self.tracks[ti].misses += 1
        for fi in set(range(len(faces))) - set(matched_faces):
            f = faces[fi]
            box = f.box.astype(np.float32)
            t = Track(box, f.landmarks, float(f.score), frame, frame, last_detected=frame, uid=self._next_uid)
            t.detected_box, self._next_uid = box, self._next_uid + 1
            self.tracks.append(t)
        self._keep(self._alive)
        for t in self.tracks:
            # Faces present when tracking starts are shown at once, as SORT does; later ones prove themselves.
            if t.id is None and (t.hits >= self.min_hits or self.rounds == 1):
                t.id, self._next_id = self._next_id, self._next_id + 1
        return self.visible()

    def _match(self, boxes: np.ndarray) -> tuple[list[int], list[int]]:
        if not self.tracks or not len(boxes):
            return [], []
        iou = iou_matrix(np.array([t.box for t in self.tracks]), boxes)
        rows, cols = assign(1.0 - iou)
        keep = iou[rows, cols] >= self.iou_threshold
        return rows[keep].tolist(), cols[keep].tolist()

    def _hit(self, track: Track, face, frame: int) -> None:
        box = face.box.astype(np.float32)
        if 0 <= track.last_detected < frame:
            # Detection to detection: steadier than the frame-to-frame motion in between.
            track.velocity = ((box - track.detected_box) / (frame - track.last_detected)).astype(np.float32)
        track.box, track.landmarks, track.score = box, face.landmarks, float(face.score)
        track.detected_box = box
        track.hits += 1
        track.misses = 0
        track.last_frame = track.last_detected = frame

    def _alive(self, t: Track) -> bool:
        if t.id is None:
            return t.misses == 0  # a tentative track gets no second chance
        return t.misses <= self.max_misses

    def visible(self) -> list[Track]:
        return [t for t in self.tracks if t.visible]

    def drop_outside(self, width: int, height: int) -> None:
        """End tracks whose box centre left the image: the face walked out."""

        def inside(t: Track) -> bool:
            cx, cy = (t.box[0] + t.box[2]) / 2, (t.box[1] + t.box[3]) / 2
            return 0 <= cx < width and 0 <= cy < height

        self._keep(inside)

    def _keep(self, alive) -> None:
        kept = [t for t in self.tracks if alive(t)]
        self.ended += [t for t in self.tracks if not alive(t)]
        self.tracks = kept
