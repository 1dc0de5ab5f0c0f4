"""The shadow model in serving: a candidate classifies a sampled share of the analysed faces
beside the active model, off the response path.

The answer to the client never waits for it: after the active model's analysis, a sampled
request hands its decoded image and detected faces to one background thread, which aligns and
classifies them with the shadow model (no second detection) and stores the comparison
(``emolens.store.shadow``). At most ``shadow_queue`` comparisons wait; beyond that a sample is
skipped and counted, so a slow shadow can never pile up memory or delay answers.
"""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor

from emolens.core.errors import EmoLensError


class ShadowRunner:
    def __init__(self, spec: str, share: float, queue: int, store, active_analyzer, seed: int | None = None):
        from emolens.models import ModelSpec
        from emolens.pipeline.analyzer import Analyzer

        self.spec = str(ModelSpec.parse(spec))
        self.share = min(1.0, max(0.0, share))
        self.capacity = max(1, queue)
        self.store = store
        # The active analyzer's detector object is shared, never run: the shadow only classifies.
        # One ONNX thread: the shadow must take as little CPU from the active model as it can.
        self.analyzer = Analyzer(
            spec, active_analyzer.detector, threads=1, tta=False, workspace=active_analyzer.workspace
        )
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="emolens-shadow")
        self.counts = {"sampled": 0, "stored": 0, "skipped": 0, "failed": 0}
        self.last_error: str | None = None
        self._pending = 0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._rng = random.Random(seed)

    @property
    def pending(self) -> int:
        return self._pending

    def warmup(self) -> None:
        _ = self.analyzer.model.meta

    def offer(self, analysis_id: str, results) -> bool:
        """Maybe hand this analysis to the shadow model (the sampled share); returns at once."""
        if results.image is None or not results.faces:
            return False
        with self._lock:
            if self._rng.random() >= self.share:
                return False
            self.counts["sampled"] += 1
            if self._pending >= self.capacity:
                self.counts["skipped"] += 1
                return False
            self._pending += 1
        try:
            self.executor.submit(self._run, analysis_id, results.image, list(results.faces), results.model)
        except RuntimeError:  # shutting down
            self._finish("skipped")
            return False
        return True

    def _finish(self, outcome: str, n: int = 1) -> None:
        with self._lock:
            self.counts[outcome] += n
            self._pending -= 1
            self._idle.notify_all()

    def _run(self, analysis_id: str, image, faces, active_model: str) -> None:
        try:
            from emolens.feedback.crops import analysis_crop

            shadow = self.analyzer.classify_faces(image, faces)
            # A disagreement keeps its face cropped as feedback crops it, so a later correction finds it.
            crops = {i: analysis_crop(image, a) for i, (a, s) in enumerate(zip(faces, shadow, strict=True))
                     if a.probs and s.probs and a.label != s.label}  # fmt: skip
            n = self.store.record(analysis_id, faces, shadow, active_model, self.analyzer.model_version, crops)
        except EmoLensError as exc:
            self.last_error = str(exc)
            self._finish("failed")
            return
        except Exception as exc:  # a bug or a database failure must never reach the served requests
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._finish("failed")
            return
        self._finish("stored", n)

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until no comparison is pending (tests, shutdown); False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def status(self) -> dict:
        with self._lock:
            return {
                "model": self.spec,
                "version": self.analyzer.model_version,
                "share": self.share,
                "pending": self._pending,
                **self.counts,
                "last_error": self.last_error,
            }

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
