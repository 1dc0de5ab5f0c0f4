"""The facade: ``Analyzer()(image)`` finds every face, aligns it and reads its emotion.

Models load on first use, once, and are reused across calls; nothing heavy happens at import.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from emolens.align import align_face
from emolens.detect import Detector, DetectorOptions, create_detector
from emolens.errors import EmoLensError
from emolens.io import ImageInput, load_image
from emolens.quality import face_quality
from emolens.results import FaceResult, Results


class Analyzer:
    """Detect → align → classify.

    >>> from emolens import Analyzer
    >>> results = Analyzer()("photo.jpg")
    >>> results[0].label, results[0].confidence
    """

    def __init__(
        self,
        model: str | Path | None = None,
        detector: str | Detector | None = None,
        *,
        min_face_size: int | None = None,
        detection_threshold: float | None = None,
        max_faces: int | None = None,
        threads: int | None = None,
    ):
        from emolens.settings import get_settings

        s = get_settings()
        self.model_name = str(model or s.model)
        self.threads = s.threads if threads is None else threads
        if isinstance(detector, Detector):
            self.detector = detector
        else:
            options = DetectorOptions(
                min_face_size=s.min_face_size if min_face_size is None else min_face_size,
                score_threshold=s.detection_threshold if detection_threshold is None else detection_threshold,
                max_faces=s.max_faces if max_faces is None else max_faces,
                max_side=s.max_side,
                threads=self.threads,
            )
            self.detector = create_detector(detector or s.detector, options)
        self._model = None
        self._loaded = ""  # the name (registry version, shipped model or path) behind self._model

    @property
    def model_version(self) -> str:
        """What runs now: for ``active``, the registry's active version (``fast`` while it is
        empty), read at every call, so a promotion or rollback takes effect without a restart."""
        if self.model_name != "active":
            return self.model_name
        from emolens.registry import BASE_MODEL, Registry

        return Registry().active_name() or BASE_MODEL

    @property
    def model(self):
        name = self.model_version
        if self._model is None or name != self._loaded:
            from emolens.models import load_emotion_model

            self._model, self._loaded = load_emotion_model(name, self.threads), name
        return self._model

    @property
    def labels(self) -> list[str]:
        return self.model.labels

    def warmup(self) -> Analyzer:
        """Load the model and the detector now, so a missing model or extra fails before a batch starts."""
        _ = self.model.meta
        self.detector(np.zeros((64, 64, 3), dtype=np.uint8))
        return self

    def __call__(self, source: ImageInput) -> Results:
        return self.analyze(source)

    def analyze(self, source: ImageInput) -> Results:
        """Analyze one image. Raises BadImageError for an unreadable image; a face-free image is
        an empty result, and a face that cannot be classified carries an ``error`` of its own."""
        name = str(source) if isinstance(source, (str, Path)) else ""
        t0 = time.perf_counter()
        image = load_image(source)
        t1 = time.perf_counter()
        faces = self.detector(image)
        t2 = time.perf_counter()
        results = self.classify_faces(image, faces)
        t3 = time.perf_counter()
        return Results(
            faces=results,
            image=image,
            source=name,
            model=self._loaded or self.model_name,
            detector=self.detector.name,
            timings_ms={"decode": (t1 - t0) * 1e3, "detect": (t2 - t1) * 1e3, "classify": (t3 - t2) * 1e3},
        )

    def classify_faces(self, image: np.ndarray, faces) -> list[FaceResult]:
        """Align every face and classify all crops in one batch; a face that fails is marked, not fatal."""
        model = self.model
        spec = model.meta.input
        th = model.meta.thresholds  # per-class thresholds in the model file: below them a face is "uncertain"
        out = [FaceResult(box=f.box, score=float(f.score), landmarks=f.landmarks, thresholds=th) for f in faces]
        crops, ok = [], []
        for i, f in enumerate(faces):
            try:
                crops.append(align_face(image, f.box, f.landmarks, spec.size, spec.channels))
                ok.append(i)
                out[i].quality = face_quality(crops[-1], min(f.box[2] - f.box[0], f.box[3] - f.box[1]))
            except Exception as exc:  # one bad face never aborts the image
                out[i].error = f"alignment failed: {exc}"
        if crops:
            probs = model.predict(np.stack(crops))
            for i, p in zip(ok, probs, strict=True):
                out[i].probs = {label: float(v) for label, v in zip(model.labels, p, strict=True)}
        return out

    def stream(self, sources: Iterable[ImageInput]) -> Iterator[Results | EmoLensError]:
        """Analyze many images; yields a Results or the EmoLensError for each, so one bad file
        never stops the batch."""
        for src in sources:
            try:
                yield self.analyze(src)
            except EmoLensError as exc:
                exc.source = str(src) if isinstance(src, (str, Path)) else ""
                yield exc


def analyze(source: ImageInput, **kwargs) -> Results:
    """One-shot convenience: ``emolens.analyze("photo.jpg")``."""
    return Analyzer(**kwargs)(source)
