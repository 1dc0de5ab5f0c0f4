"""What the routes depend on: the server's state (settings, analyzer, stores), inference and
database work off the event loop, recent analyses, background jobs, and API-key checks.

Routes declare what they need with the typed aliases at the end (``State``, ``ReadKey``,
``PersonalReadKey``, ``WriteKey``, ``AdminKey``, ``AnalyzerDep``, ``FeedbackDep``...), so the key a
route needs is part of its signature."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from emolens.core.errors import EmoLensError, NotFoundError
from emolens.serve.errors import BusyError, DatabaseUnavailableError, ForbiddenError, UnauthorizedError
from emolens.store.keys import SCOPES, ApiKey
from emolens.workspace import Workspace


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
    """Recent analyses, so feedback can name a face by analysis id and index, whichever server
    worker answered the analysis: kept in the database (``store.analyses``) with an expiry."""

    def __init__(self, url: str, size: int, max_pixels: int, ttl_s: float, max_bytes: int | None = None):
        from emolens.store.analyses import AnalysisStore

        self.store = AnalysisStore(url, size, ttl_s, max_bytes=max_bytes)
        self.max_pixels = max_pixels

    def put(self, results, data: bytes) -> str:
        key = uuid.uuid4().hex
        self.store.put(key, results.to_state(), data)
        return key

    def get(self, key: str):
        """The analysis ``key`` with its image (decoded now: call it off the event loop)."""
        from emolens.image.io import load_image
        from emolens.pipeline.results import Results

        item = self.store.get(key)
        if item is None:
            minutes = self.store.ttl.total_seconds() / 60
            raise NotFoundError(
                f"no analysis {key!r}: the server keeps its last {self.store.size} analyses for "
                f"{minutes:g} minutes; analyse the image again"
            )
        state, data = item
        results = Results.from_state(state)
        return dataclasses.replace(results, image=load_image(data, max_pixels=self.max_pixels))


class JobRunner:
    """Long work (fine-tuning) in a background thread of this worker, recorded in the database
    (``store.jobs``) so that every worker lists it and only one job runs across all of them."""

    HEARTBEAT_S = 30.0

    def __init__(self, url: str) -> None:
        from emolens.store.jobs import JobStore

        self.store = JobStore(url)
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="emolens-job")

    def start(self, kind: str, fn: Callable[[], Any]):
        job = self.store.claim(kind)
        self.executor.submit(self._run, job.id, fn)
        return job

    def _run(self, job_id: str, fn: Callable[[], Any]) -> None:
        from emolens.serve.errors import error_type

        self.store.update(job_id, status="running")
        done = threading.Event()

        def beat() -> None:  # tells other workers this job's worker is alive
            while not done.wait(self.HEARTBEAT_S):
                with contextlib.suppress(Exception):
                    self.store.update(job_id)

        threading.Thread(target=beat, name="emolens-job-heartbeat", daemon=True).start()
        try:
            out = fn()
            result = out.to_dict() if hasattr(out, "to_dict") else out
            self.store.update(job_id, status="succeeded", result=result)
        except EmoLensError as exc:
            self.store.update(job_id, status="failed", error={"type": error_type(exc), "message": str(exc)})
        except Exception as exc:  # a bug in the job: report it, keep the server alive
            error = {"type": "internal", "message": f"{type(exc).__name__}: {exc}"}
            self.store.update(job_id, status="failed", error=error)
        finally:
            done.set()

    def get(self, job_id: str):
        return self.store.get(job_id)

    def list(self):
        return self.store.list()

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


class ServerState:
    """Everything one app instance holds; created by ``create_app``, found on ``app.state.emolens``."""

    def __init__(self, workspace: Workspace):
        from emolens.serve.metrics import Metrics

        self.workspace = workspace
        self.settings = settings = workspace.settings
        self.models = workspace.models  # names, versions and the registry of the home
        self.db_url = workspace.db_url
        self.keys = workspace.keys
        self.metrics = Metrics()
        self.analyses = AnalysisCache(
            self.db_url,
            settings.analysis_cache,
            settings.max_pixels,
            settings.analysis_ttl_s,
            max_bytes=int(settings.analysis_cache_mb * 1_000_000),
        )
        # Database work of async routes runs here, never on the event loop; a hung database
        # holds at most these threads, and callers stop waiting after database_timeout_s.
        self.db_pool = ThreadPoolExecutor(8, thread_name_prefix="emolens-db")
        self.storage_error: tuple[float, str] | None = None  # the last write that failed for lack of space
        self.jobs = JobRunner(self.db_url)
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
    def analysis_threads(self) -> int:
        """ONNX Runtime threads per analysis. Analyses run side by side: by default they share the
        cores instead of each taking all of them (ONNX Runtime's default), which only adds contention."""
        s = self.settings
        return s.threads or max(1, (os.cpu_count() or 1) // max(1, s.serve_threads))

    @property
    def analyzer(self):
        if self._analyzer is None:
            with self._analyzer_lock:
                if self._analyzer is None:
                    from emolens.pipeline.analyzer import Analyzer

                    self._analyzer = Analyzer(threads=self.analysis_threads, workspace=self.workspace)
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
                    from emolens.pipeline.analyzer import Analyzer

                    self._live_analyzer = Analyzer(
                        base.spec,
                        threads=base.threads,
                        max_side=self.settings.video_max_side,
                        workspace=self.workspace,
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
                    from emolens.shadow.runner import ShadowRunner

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
        return self.workspace.shadow_store

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

    def sweep_analyses(self, stop: threading.Event) -> None:
        """Forget expired uploads on a timer (in a thread from startup to shutdown), so none stays
        past its expiry while no new photo comes."""
        import logging

        every = min(60.0, max(0.5, self.settings.analysis_ttl_s / 4))
        while not stop.wait(every):
            try:
                self.analyses.store.sweep()
            except Exception as exc:  # a database that is down now may be back at the next turn
                logging.getLogger("emolens.serve").warning("sweeping expired analyses failed: %s", exc)

    async def db(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in a database thread; DatabaseUnavailableError (503) when it has not
        answered within ``database_timeout_s`` (it finishes in its thread; its answer is dropped)."""
        timeout = self.settings.database_timeout_s
        future = self.db_pool.submit(fn, *args)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except TimeoutError:
            raise DatabaseUnavailableError(
                f"the database did not answer within {timeout:g} s (EMOLENS_DATABASE_TIMEOUT_S); try again shortly"
            ) from None

    def feedback_store(self):
        return self.workspace.feedback_store

    def registry(self):
        return self.models.registry


def get_state(request: Request) -> ServerState:
    return request.app.state.emolens


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


def personal_read_access(
    state: ServerState = Depends(get_state), token: str | None = Depends(api_key_header)
) -> ApiKey | None:
    """Reads of personal data (faces, names, attendance) need a key unless the server opens them
    explicitly (``api_personal_reads_open``); a key that is sent is checked anyway."""
    s = state.settings
    if s.api_read_key_required or not s.api_personal_reads_open or token:
        return _check(state, token, "read")
    return None


def get_analyzer(state: ServerState = Depends(get_state)):
    return state.analyzer


def get_feedback_store(state: ServerState = Depends(get_state)):
    return state.feedback_store()


def get_shadow_store(state: ServerState = Depends(get_state)):
    return state.shadow_store()


def get_people(request: Request):
    """The app's ``People`` (made on first use; cheap: its models load when first needed)."""
    app_state = request.app.state
    people = getattr(app_state, "people", None)
    if people is None:
        with _people_lock:
            people = getattr(app_state, "people", None)
            if people is None:
                from emolens.identify.gallery import People

                state: ServerState = app_state.emolens
                people = People(workspace=state.workspace)
                app_state.people = people
    return people


_people_lock = threading.Lock()

# -- what a route declares ---------------------------------------------------------------------
State = Annotated[ServerState, Depends(get_state)]
AnalyzerDep = Annotated[Any, Depends(get_analyzer)]  # emolens.pipeline.analyzer.Analyzer
FeedbackDep = Annotated[Any, Depends(get_feedback_store)]  # emolens.store.feedback.FeedbackStore
ShadowStoreDep = Annotated[Any, Depends(get_shadow_store)]  # emolens.store.shadow.ShadowStore
PeopleDep = Annotated[Any, Depends(get_people)]  # emolens.identify.gallery.People
ReadKey = Annotated[ApiKey | None, Depends(read_access)]  # open reads unless the server requires keys
PersonalReadKey = Annotated[ApiKey | None, Depends(personal_read_access)]  # faces, names, attendance
AnyKey = Annotated[ApiKey, Depends(require("read"))]  # a valid key of any scope
WriteKey = Annotated[ApiKey, Depends(require("write"))]
AdminKey = Annotated[ApiKey, Depends(require("admin"))]
