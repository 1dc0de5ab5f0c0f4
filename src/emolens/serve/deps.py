"""What the routes depend on: the server's state (settings, analyzer, stores), inference off the
event loop, recent analyses, background jobs, and API-key checks."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from emolens.errors import EmoLensError, NotFoundError, RefusedError
from emolens.serve.errors import BusyError, ForbiddenError, UnauthorizedError
from emolens.settings import Settings
from emolens.store.keys import SCOPES, ApiKey, KeyStore


class InferenceGate:
    """Runs analyses in a pool of ``threads`` worker threads, with at most ``queue`` waiting.

    The pool size is the concurrency limit. A request that times out cancels its analysis if it
    has not started; a started one finishes in its thread (C code cannot be interrupted) and still
    holds its place until then, so timeouts cannot pile up unbounded work."""

    def __init__(self, threads: int, queue: int):
        self.threads = max(1, threads)
        self.capacity = self.threads + max(0, queue)
        self.executor = ThreadPoolExecutor(self.threads, thread_name_prefix="emolens-analyze")
        self._pending = 0
        self._lock = threading.Lock()

    @property
    def pending(self) -> int:
        return self._pending

    def _done(self, _: Future) -> None:
        with self._lock:
            self._pending -= 1

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        with self._lock:
            if self._pending >= self.capacity:
                raise BusyError(
                    f"the server is busy ({self._pending} analyses running or waiting); try again in a moment"
                )
            self._pending += 1
        try:
            future = self.executor.submit(fn, *args)
        except BaseException:
            self._done(None)
            raise
        future.add_done_callback(self._done)
        return await asyncio.wrap_future(future)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


class AnalysisCache:
    """The last ``size`` analyses, so feedback can name a face by analysis id and index.

    Each is kept as its results without pixels plus the uploaded file as it came (a JPEG is a
    tenth of its decoded pixels); the image is decoded again, the same way, when feedback needs to
    crop a face. At most ``max_bytes`` of uploads are kept in all; the oldest go first."""

    def __init__(self, size: int, max_pixels: int, max_bytes: int = 256 * 2**20):
        self.size = max(1, size)
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, tuple[Any, bytes]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, results, data: bytes) -> str:
        key = uuid.uuid4().hex
        item = (dataclasses.replace(results, image=None), data)
        with self._lock:
            self._items[key] = item
            self._bytes += len(data)
            while len(self._items) > self.size or (self._bytes > self.max_bytes and len(self._items) > 1):
                _, (_, old) = self._items.popitem(last=False)
                self._bytes -= len(old)
        return key

    def get(self, key: str):
        """The analysis ``key`` with its image (decoded now: call it off the event loop)."""
        from emolens.io import load_image

        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
        if item is None:
            raise NotFoundError(
                f"no analysis {key!r}: the server keeps only its last {self.size} analyses, in memory "
                "(a restart forgets them); analyse the image again"
            )
        results, data = item
        return dataclasses.replace(results, image=load_image(data, max_pixels=self.max_pixels))

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class Job:
    id: str
    kind: str
    status: str = "queued"  # queued, running, succeeded, failed
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    started_at: str | None = None
    finished_at: str | None = None
    result: dict | None = None
    error: dict | None = None


class JobRunner:
    """Long work (fine-tuning) in one background thread; one job at a time; the last 50 kept."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="emolens-job")
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, kind: str, fn: Callable[[], Any]) -> Job:
        with self._lock:
            busy = [j for j in self.jobs.values() if j.status in ("queued", "running")]
            if busy:
                raise RefusedError(f"job {busy[0].id} ({busy[0].kind}) is still {busy[0].status}; wait for it to end")
            job = Job(id=uuid.uuid4().hex[:12], kind=kind)
            self.jobs[job.id] = job
            while len(self.jobs) > 50:
                self.jobs.popitem(last=False)
        self.executor.submit(self._run, job, fn)
        return job

    @staticmethod
    def _run(job: Job, fn: Callable[[], Any]) -> None:
        from emolens.serve.errors import error_type

        job.status, job.started_at = "running", datetime.now(UTC).isoformat(timespec="seconds")
        try:
            out = fn()
            job.result = out.to_dict() if hasattr(out, "to_dict") else out
            job.status = "succeeded"
        except EmoLensError as exc:
            job.error, job.status = {"type": error_type(exc), "message": str(exc)}, "failed"
        except Exception as exc:  # a bug in the job: report it, keep the server alive
            job.error, job.status = {"type": "internal", "message": f"{type(exc).__name__}: {exc}"}, "failed"
        finally:
            job.finished_at = datetime.now(UTC).isoformat(timespec="seconds")

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFoundError(f"no job {job_id!r} (the server keeps its last 50 jobs, in memory)")
        return job

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


class ServerState:
    """Everything one app instance holds; created by ``create_app``, found on ``app.state.emolens``."""

    def __init__(self, settings: Settings):
        from emolens.serve.metrics import Metrics

        self.settings = settings
        self.db_url = settings.database_url or f"sqlite:///{settings.home / 'emolens.db'}"
        self.keys = KeyStore(self.db_url)
        self.metrics = Metrics()
        self.analyses = AnalysisCache(settings.analysis_cache, settings.max_pixels)
        self.jobs = JobRunner()
        self.gate = InferenceGate(settings.serve_threads, settings.serve_queue)  # renewed at each startup
        self._analyzer = None
        self._live_analyzer = None
        self._shadow = None
        self.shadow_error: str | None = None
        self._analyzer_lock = threading.Lock()
        self.warm_error: str | None = None
        self.warm = threading.Event()
        self.started = time.time()

    @property
    def analyzer(self):
        if self._analyzer is None:
            with self._analyzer_lock:
                if self._analyzer is None:
                    from emolens.analyzer import Analyzer

                    s = self.settings
                    # Analyses run side by side: by default they share the cores instead of each
                    # taking all of them (ONNX Runtime's default), which only adds contention.
                    threads = s.threads or max(1, (os.cpu_count() or 1) // max(1, s.serve_threads))
                    self._analyzer = Analyzer(
                        model=s.model,
                        detector=s.detector,
                        min_face_size=s.min_face_size,
                        detection_threshold=s.detection_threshold,
                        max_faces=s.max_faces,
                        threads=threads,
                        tta=s.tta,
                    )
        return self._analyzer

    @property
    def live_analyzer(self):
        """For camera frames: the same model, but the detector's input capped at the video size
        (``video_max_side``, 640 px) as in ``emolens video``; the image cap (1600 px) makes
        RetinaFace enlarge a 640x480 frame and costs about 1.7x per frame."""
        base = self.analyzer
        if self._live_analyzer is None:
            with self._analyzer_lock:
                if self._live_analyzer is None:
                    from dataclasses import replace

                    from emolens.analyzer import Analyzer
                    from emolens.detect import create_detector

                    options = replace(base.detector.options, max_side=self.settings.video_max_side)
                    detector = create_detector(base.detector.name, options)
                    self._live_analyzer = Analyzer(
                        model=base.model_name, detector=detector, threads=base.threads, tta=base.tta
                    )
        return self._live_analyzer

    @property
    def shadow(self):
        """The shadow model's runner (``shadow_model`` setting), or None when there is none or it
        cannot load (``shadow_error`` says why: a broken shadow never stops the active model)."""
        if self._shadow is None and self.settings.shadow_model and self.shadow_error is None:
            active = self.analyzer  # outside the lock, which the analyzer takes too
            with self._analyzer_lock:
                if self._shadow is None and self.shadow_error is None:
                    from emolens.serve.shadow import ShadowRunner

                    s = self.settings
                    try:
                        runner = ShadowRunner(
                            s.shadow_model, s.shadow_share, s.shadow_queue, self.shadow_store(), active
                        )
                        runner.warmup()
                        self._shadow = runner
                    except EmoLensError as exc:
                        self.shadow_error = f"shadow model {s.shadow_model!r} not used: {exc}"
        return self._shadow

    def shadow_store(self):
        from emolens.store.shadow import ShadowStore

        return ShadowStore(self.db_url, blobs=self.settings.home / "shadow")

    def warmup(self) -> None:
        """Load the model and the detector (in a thread at startup; /readyz reports the outcome)."""
        try:
            self.analyzer.warmup()
            _ = self.shadow  # load the shadow model now too (its failure is reported, not fatal)
            self.warm_error = None
        except EmoLensError as exc:
            self.warm_error = str(exc)
        except Exception as exc:  # e.g. onnxruntime failing on a broken file
            self.warm_error = f"{type(exc).__name__}: {exc}"
        finally:
            self.warm.set()

    def feedback_store(self):
        from emolens.store.feedback import FeedbackStore

        return FeedbackStore(self.db_url, blobs=self.settings.home / "blobs")

    def registry(self):
        from emolens.registry import Registry

        return Registry(self.settings.home / "registry")


def get_state(request: Request) -> ServerState:
    return request.app.state.emolens


def get_settings(state: ServerState = Depends(get_state)) -> Settings:
    return state.settings


# Declared as a security scheme so the OpenAPI schema and /docs know about the header.
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An key from `emolens keys create`")


def _check(state: ServerState, token: str | None, scope: str) -> ApiKey:
    if not token:
        raise UnauthorizedError(
            f"this endpoint needs an API key with the {scope!r} scope in the X-API-Key header "
            "(create one with: emolens keys create NAME --scope " + scope + ")"
        )
    key = state.keys.verify(token)
    if key is None:
        raise ForbiddenError("the API key is not valid (unknown, or mistyped)")
    if not key.active:
        raise ForbiddenError(f"the API key {key.key_id} ({key.name}) was revoked")
    if not key.allows(scope):
        raise ForbiddenError(f"the API key {key.key_id} has the {key.scope!r} scope; this needs {scope!r}")
    return key


def require(scope: str) -> Callable[..., ApiKey]:
    """A dependency: the request must carry a valid, unrevoked key with at least ``scope``."""
    if scope not in SCOPES:
        raise ValueError(scope)

    def dependency(state: ServerState = Depends(get_state), token: str | None = Depends(api_key_header)) -> ApiKey:
        return _check(state, token, scope)

    dependency.__name__ = f"require_{scope}"
    return dependency


def read_access(state: ServerState = Depends(get_state), token: str | None = Depends(api_key_header)) -> ApiKey | None:
    """Reads are open unless ``api_read_key_required``; a key that is sent is checked anyway."""
    if state.settings.api_read_key_required or token:
        return _check(state, token, "read")
    return None
