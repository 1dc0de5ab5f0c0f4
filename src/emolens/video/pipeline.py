"""Emotions over time: detect every N frames, follow faces in between, smooth each face's emotions.

>>> from emolens.video import analyze_video
>>> for res in analyze_video("clip.mp4", detect_every=3):
...     print(res.frame_index, [(f.track_id, f.label) for f in res])

Each frame gives a ``Results``, the same object an image gives, with ``frame_index``,
``timestamp`` and, on every face, ``track_id`` and ``raw_probs`` (this frame's reading; ``probs``
is smoothed over time).

Per frame: (1) the faces of the previous frame are followed into this one by optical flow
(``motion.py``); (2) on every N-th frame, or as soon as a face is lost, the detector runs and its
faces are matched to the tracks (``track.py``); (3) every visible face is aligned from its
detected or carried-along landmarks and classified, all faces in one batch; (4) each track's
probabilities are smoothed (``smooth.py``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from emolens.pipeline.analyzer import Analyzer
from emolens.pipeline.results import FaceResult, Results
from emolens.video.smooth import Smoother, make_smoother
from emolens.video.source import VideoSource
from emolens.video.track import Tracker, lost_rounds

if TYPE_CHECKING:
    from emolens.core.settings import Settings
    from emolens.workspace import Workspace


class VideoAnalyzer:
    """Frame-by-frame analysis with tracking; one instance follows one video (or one live feed).

    ``process(frame)`` takes the next RGB frame and returns its ``Results``; ``run(source)``
    opens a file, camera or URL and yields them. Options (defaults from the settings):
    ``detect_every`` N (1 = detect on every frame), ``classify_every`` k (re-read each face's
    emotion every k frames; detection frames always classify), ``smoothing`` (EMA alpha) or
    ``window`` (mean of the last k readings), ``max_side`` (the detector's input size; video
    faces are large, and a smaller input is most of the speed), and the tracker's ``min_hits``,
    ``max_misses`` (detection rounds a hidden face keeps its track; default: about ``LOST_FRAMES``
    frames' worth), ``iou_threshold``. Pass an ``Analyzer`` to share its loaded models.
    """

    def __init__(
        self,
        analyzer: Analyzer | None = None,
        *,
        model: str | Path | None = None,
        detector: str | None = None,
        detect_every: int | None = None,
        classify_every: int = 1,
        smoothing: float | None = None,
        window: int | None = None,
        smoother: Smoother | None = None,
        max_side: int | None = None,
        min_hits: int = 2,
        max_misses: int | None = None,
        iou_threshold: float = 0.3,
        flow: bool = True,
        threads: int | None = None,
        min_face_size: int | None = None,
        detection_threshold: float | None = None,
        max_faces: int | None = None,
        settings: Settings | None = None,
        workspace: Workspace | None = None,
    ):
        if analyzer is None:  # without an analyzer, one of ``workspace`` (default: of ``settings``, else the process's)
            if workspace is None:
                from emolens.workspace import Workspace

                workspace = Workspace(settings) if settings is not None else Workspace.default()
            analyzer = Analyzer(
                model,
                detector,
                workspace=workspace,
                min_face_size=min_face_size,
                detection_threshold=detection_threshold,
                max_faces=max_faces,
                max_side=max_side or workspace.settings.video_max_side,
                threads=threads,
            )
        s = analyzer.settings
        self.analyzer = analyzer
        self.detect_every = max(1, int(detect_every or s.video_detect_every))
        self.classify_every = max(1, int(classify_every))
        self.smoother = smoother or make_smoother(smoothing, window, default_alpha=s.video_smoothing)
        if max_misses is None:
            max_misses = lost_rounds(self.detect_every)
        self.tracker = Tracker(iou_threshold=iou_threshold, min_hits=min_hits, max_misses=max_misses)
        self.flow = flow
        self.source_name = ""
        self._model = None
        self._version = ""  # what self._model is: `active` resolved to the registry's version
        self.reset()

    @property
    def model(self):
        """The analyzer's emotion model in a session of its own with one thread.

        Why: two ONNX Runtime sessions that each own a thread pool take turns frame after frame
        here, and a pool's threads spin for a while after each run, so the detector kept finding
        a core busy with the classifier's idle spinning: detection took 36 ms a frame instead of
        19 (640x480, 2 cores). A few 48x48 crops gain nothing from more threads anyway.

        ``active`` is resolved as the analyzer resolves it (the registry's active version, ``fast``
        while it is empty), once: a promotion does not switch models in the middle of a video."""
        if self._model is None:
            a = self.analyzer
            spec = a.resolver.versions(a.spec)  # once per video: a promotion mid-video does not switch models
            self._model, self._version = a.resolver.load(spec, 1, a.tta), str(spec)
        return self._model

    @property
    def labels(self) -> list[str]:
        return self.model.labels

    def describe(self) -> str:
        """The method in one line, for summaries and benchmark tables."""
        d = self.analyzer.detector
        return (
            f"{d.name} at max side {d.options.max_side} every {self.detect_every} frame(s), "
            f"{'optical flow' if self.flow else 'constant velocity'} in between, "
            f"classify every {self.classify_every}, smoothing {self.smoother.describe()}"
        )

    def reset(self) -> None:
        """Forget every track: the next frame starts a new video (ids from 1 again)."""
        self.tracker.reset()
        self.smoother.reset()
        self._prev: tuple[np.ndarray, float] | None = None
        self._count = 0  # frames processed
        self._next_index = 0

    def warmup(self) -> VideoAnalyzer:
        """Load the detector and the model now, so a missing one fails before the first frame."""
        self.analyzer.detector(np.zeros((64, 64, 3), dtype=np.uint8))
        spec = self.model.meta.input
        shape = (1, spec.size, spec.size) + ((spec.channels,) if spec.channels == 3 else ())
        self.model.predict(np.zeros(shape, np.uint8))
        return self

    # -- one frame -------------------------------------------------------------------------
    def process(self, image: np.ndarray, index: int | None = None, timestamp: float | None = None) -> Results:
        """Analyse the next frame (RGB uint8) of this video; ``index`` defaults to a running count."""
        from emolens.image.io import load_image

        image = load_image(image, self.analyzer.max_pixels)
        index = self._next_index if index is None else int(index)
        self._next_index = index + 1
        h, w = image.shape[:2]
        timings: dict[str, float] = {}

        t0 = time.perf_counter()
        lost = self._follow(image, index, w, h)
        t1 = time.perf_counter()
        timings["track"] = (t1 - t0) * 1e3
        detect = self._count % self.detect_every == 0 or lost
        if detect:
            self.tracker.update(self.analyzer.detector(image), index)
            timings["detect"] = (time.perf_counter() - t1) * 1e3
        for t in self.tracker.ended:  # their smoothing state goes with them
            self.smoother.forget(t.uid)
        self.tracker.ended.clear()
        t2 = time.perf_counter()
        faces = self._classify(image, index, detect)
        timings["classify"] = (time.perf_counter() - t2) * 1e3
        self._count += 1
        return Results(
            faces=faces,
            image=image,
            source=self.source_name,
            model=self._version or self.analyzer.model_name,
            members=getattr(self.model, "describe", lambda: None)(),  # an ensemble: every member's version
            detector=self.analyzer.detector.name,
            timings_ms=timings,
            frame_index=index,
            timestamp=timestamp,
        )

    def _follow(self, image: np.ndarray, index: int, w: int, h: int) -> bool:
        """Carry every track into this frame; True when a shown face could not be followed."""
        from emolens.video.motion import apply_to_box, apply_to_points, flow_gray, follow

        if not self.flow:
            return False
        gray, scale = flow_gray(image)
        prev, self._prev = self._prev, (gray, scale)
        tracks = self.tracker.tracks
        if not tracks:
            return False
        if prev is None or prev[0].shape != gray.shape:
            return True  # the frame size changed (a stream re-negotiated): detect afresh
        lost = False
        for t, m in zip(tracks, follow(prev[0], gray, [t.box for t in tracks], scale), strict=True):
            if m is None:
                lost |= t.visible
                t.predict(index)
            else:
                t.move(apply_to_box(m, t.box), apply_to_points(m, t.landmarks), index)
        self.tracker.drop_outside(w, h)
        return lost

    def _classify(self, image: np.ndarray, index: int, detected: bool) -> list[FaceResult]:
        """Classify the faces due for a reading in one batch; smooth; report the visible ones."""
        from emolens.image.align import align_face

        model = self.model
        spec, labels = model.meta.input, model.labels
        seen = [t for t in self.tracker.tracks if t.misses == 0]  # tentative ones too: smoothing warms up
        due = [t for t in seen if detected or t.probs is None or index - t.last_classified >= self.classify_every]
        crops, ok, errors = [], [], {}
        for t in due:
            try:
                crops.append(align_face(image, t.box, t.landmarks, spec.size, spec.channels))
                ok.append(t)
            except ValueError as exc:  # a box pushed off the image: this face, this frame only
                errors[id(t)] = f"alignment failed: {exc}"
        if crops:
            for t, p in zip(ok, model.predict(np.stack(crops)), strict=True):
                t.raw = p
                t.probs = self.smoother.update(t.uid, p)
                t.last_classified = index
        out = []
        for t in sorted(self.tracker.visible(), key=lambda t: t.id):
            f = FaceResult(box=t.box.copy(), score=t.score, landmarks=t.landmarks, track_id=t.id)
            f.thresholds, f.rules = model.meta.thresholds, model.meta.rules  # the model's answers, as in images
            if id(t) in errors and t.probs is None:
                f.error = errors[id(t)]
            elif t.probs is not None:
                f.probs = {k: float(v) for k, v in zip(labels, t.probs, strict=True)}
                f.raw_probs = {k: float(v) for k, v in zip(labels, t.raw, strict=True)}
            out.append(f)
        return out

    # -- a whole source --------------------------------------------------------------------
    def run(self, source: str | int | Path | VideoSource, max_frames: int | None = None, **source_options) -> VideoRun:
        """Open ``source`` (file, camera index, URL, or a ``VideoSource``) and analyse it frame by
        frame: iterate the returned ``VideoRun``. Raises ``VideoSourceError`` when it cannot be opened."""
        src = source if isinstance(source, VideoSource) else VideoSource(source, **source_options)
        self.reset()
        self.source_name = src.name
        return VideoRun(self, src, max_frames)

    __call__ = run


class VideoRun:
    """The frames of one source as ``Results``, one by one; ``source`` has fps, size and ``stats``
    (frames read, undecodable, dropped). Close it (or use ``with``) when stopping early."""

    def __init__(self, analyzer: VideoAnalyzer, source: VideoSource, max_frames: int | None = None):
        self.analyzer = analyzer
        self.source = source
        self.max_frames = max_frames
        self.processed = 0

    @property
    def stats(self):
        return self.source.stats

    @property
    def fps(self) -> float | None:
        return self.source.fps

    def __iter__(self) -> Iterator[Results]:
        try:
            t = time.perf_counter()
            for frame in self.source:
                decode = (time.perf_counter() - t) * 1e3
                res = self.analyzer.process(frame.image, frame.index, frame.timestamp)
                res.timings_ms = {"decode": decode, **res.timings_ms}
                self.processed += 1
                yield res
                if self.max_frames and self.processed >= self.max_frames:
                    return
                t = time.perf_counter()
        finally:
            self.source.close()

    def close(self) -> None:
        self.source.close()

    def __enter__(self) -> VideoRun:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def analyze_video(source: str | int | Path | VideoSource, max_frames: int | None = None, **options) -> VideoRun:
    """One-shot convenience: ``for res in analyze_video("clip.mp4"): ...``; options as ``VideoAnalyzer``."""
    return VideoAnalyzer(**options).run(source, max_frames)
