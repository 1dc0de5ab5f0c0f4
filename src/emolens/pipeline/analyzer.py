"""The facade: ``Analyzer()(image)`` finds every face, aligns it and reads its emotion.

Models load on first use, once, and are reused across calls; nothing heavy happens at import.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from emolens.core.errors import EmoLensError
from emolens.detect import Detector
from emolens.image.align import align_face
from emolens.image.io import ImageInput, load_image
from emolens.image.quality import face_qualities
from emolens.pipeline.results import FaceResult, Results

if TYPE_CHECKING:
    from emolens.core.settings import Settings
    from emolens.models import ModelSpec
    from emolens.workspace import Workspace


class Analyzer:
    """Detect → align → classify.

    >>> from emolens import Analyzer
    >>> results = Analyzer()("photo.jpg")
    >>> results[0].label, results[0].confidence
    """

    def __init__(
        self,
        model: str | Path | list | dict | ModelSpec | None = None,
        detector: str | Detector | None = None,
        *,
        min_face_size: int | None = None,
        detection_threshold: float | None = None,
        max_faces: int | None = None,
        max_side: int | None = None,
        threads: int | None = None,
        tta: bool | None = None,
        settings: Settings | None = None,
        workspace: Workspace | None = None,
    ):
        """``model``: a name, registry version or path, or an ensemble (``"fast+accurate"``,
        ``"accurate*3+fast"``, a list, or ``{name: weight}``) whose probabilities are averaged;
        ``tta``: also average every model over the mirrored face (twice the classification cost).
        ``workspace`` (``emolens.workspace``) gives the resolver, the detector and every option not
        given here; without one, a workspace of ``settings`` (default: the process's) is made."""
        if workspace is None:  # the convenience entry point: ``Analyzer()`` builds its own root
            from emolens.workspace import Workspace

            workspace = Workspace(settings) if settings is not None else Workspace.default()
        self.workspace = ws = workspace
        self.settings = s = ws.settings
        self.resolver = ws.models
        self.max_pixels = s.max_pixels
        self.spec = ws.model_spec(model)  # parsed once; a ModelSpec passes through
        self.model_name = str(self.spec)
        self.tta = s.tta if tta is None else bool(tta)
        self.threads = s.threads if threads is None else threads
        if isinstance(detector, Detector):
            self.detector = detector
        else:
            self.detector = ws.detector(
                detector,
                min_face_size=min_face_size,
                score_threshold=detection_threshold,
                max_faces=max_faces,
                max_side=max_side,
                threads=self.threads,
            )
        self._model = None
        self._loaded: ModelSpec | None = None  # the spec (``active`` resolved) behind self._model

    @property
    def model_version(self) -> str:
        """What runs now: for ``active``, the registry's active version (``fast`` while it is
        empty), checked at every call (one ``stat`` while it is unchanged), so a promotion or
        rollback takes effect without a restart."""
        return str(self.resolver.versions(self.spec))

    @property
    def model(self):
        """The EmotionModel, or an EnsembleModel for an ensemble or with ``tta``."""
        spec = self.resolver.versions(self.spec)
        if self._model is None or spec != self._loaded:
            self._model, self._loaded = self.resolver.load(spec, self.threads, self.tta), spec
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
        t0 = time.perf_counter()
        image = load_image(source, self.max_pixels)
        return self._analyze_decoded(source, image, (time.perf_counter() - t0) * 1e3)

    def _analyze_decoded(self, source: ImageInput, image: np.ndarray, decode_ms: float) -> Results:
        name = str(source) if isinstance(source, (str, Path)) else ""
        t1 = time.perf_counter()
        faces = self.detector(image)
        t2 = time.perf_counter()
        model = self.model  # resolved once per image (the property reads the registry for ``active``)
        results = self._classify(image, faces, model)
        t3 = time.perf_counter()
        describe = getattr(model, "describe", None)  # an ensemble records every member's version
        return Results(
            faces=results,
            image=image,
            source=name,
            model=str(self._loaded or self.spec),
            members=describe() if describe else None,
            detector=self.detector.name,
            timings_ms={"decode": decode_ms, "detect": (t2 - t1) * 1e3, "classify": (t3 - t2) * 1e3},
        )

    def classify_faces(self, image: np.ndarray, faces) -> list[FaceResult]:
        """Align every face and classify all crops in one batch; a face that fails is marked, not fatal."""
        return self._classify(image, faces, self.model)

    def _classify(self, image: np.ndarray, faces, model) -> list[FaceResult]:
        out, crops, ok = self._align(image, faces, model)
        if crops:
            probs = model.predict(np.stack(crops)).tolist()  # Python floats in one go, not one float() a value
            labels = model.labels
            for i, p in zip(ok, probs, strict=True):
                out[i].probs = dict(zip(labels, p, strict=True))
        return out

    def align_faces(self, image: np.ndarray, faces) -> tuple[list[FaceResult], list[np.ndarray], list[int]]:
        """The faces as results without probabilities yet, their aligned crops, and the index of the
        face each crop belongs to; a face that cannot be aligned carries an ``error`` and no crop.
        Callers may classify the crops of many images in one batch (``emolens.batch`` does)."""
        return self._align(image, faces, self.model)

    def _align(self, image: np.ndarray, faces, model) -> tuple[list[FaceResult], list[np.ndarray], list[int]]:
        spec = model.meta.input
        th = model.meta.thresholds  # per-class thresholds in the model file: below them a face is "uncertain"
        rules = model.meta.rules  # post-processing rules in the model file
        out = [
            FaceResult(box=f.box, score=float(f.score), landmarks=f.landmarks, thresholds=th, rules=rules)
            for f in faces
        ]
        crops, ok = [], []
        for i, f in enumerate(faces):
            try:
                crops.append(align_face(image, f.box, f.landmarks, spec.size, spec.channels))
                ok.append(i)
            except Exception as exc:  # one bad face never aborts the image
                out[i].error = f"alignment failed: {exc}"
        sizes = [min(faces[i].box[2] - faces[i].box[0], faces[i].box[3] - faces[i].box[1]) for i in ok]
        for i, q in zip(ok, face_qualities(crops, sizes), strict=True):  # all faces at once: a crowd's are many
            out[i].quality = q
        return out, crops, ok

    def stream(self, sources: Iterable[ImageInput], *, prefetch: bool = True) -> Iterator[Results | EmoLensError]:
        """Analyze many images; yields a Results or the EmoLensError for each, so one bad file
        never stops the batch. With ``prefetch`` the next image is decoded in a background thread
        while this one is analysed (decoders and ONNX Runtime release the GIL)."""
        from concurrent.futures import ThreadPoolExecutor

        def decode(src: ImageInput) -> tuple[np.ndarray, float]:
            t = time.perf_counter()
            return load_image(src, self.max_pixels), (time.perf_counter() - t) * 1e3

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="emolens-decode") as pool:
            it = iter(sources)
            nxt = next(it, _END)
            pending = pool.submit(decode, nxt) if prefetch and nxt is not _END else None
            while nxt is not _END:
                src, job = nxt, pending
                nxt = next(it, _END)
                pending = pool.submit(decode, nxt) if prefetch and nxt is not _END else None
                try:
                    image, decode_ms = job.result() if job is not None else decode(src)
                    yield self._analyze_decoded(src, image, decode_ms)
                except EmoLensError as exc:
                    exc.source = str(src) if isinstance(src, (str, Path)) else ""
                    yield exc


_END = object()  # end of the sources in Analyzer.stream


def analyze(source: ImageInput, **kwargs) -> Results:
    """One-shot convenience: ``emolens.analyze("photo.jpg")``."""
    return Analyzer(**kwargs)(source)
