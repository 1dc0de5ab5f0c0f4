"""Health (process up), readiness (model, detector, database), Prometheus metrics, server info."""

from __future__ import annotations

import asyncio
import logging
import os
import time

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from emolens.serve.deps import AnyKey, ReadKey, ServerState, State
from emolens.serve.schemas import COMMON, HealthOut, InfoOut, KeyOut, Limits, ReadyOut, errors

log = logging.getLogger("emolens.serve")
router = APIRouter(tags=["health"])
api = APIRouter(prefix="/api/v1", tags=["server"], responses=COMMON)


@router.get("/healthz", response_model=HealthOut, summary="The process is up")
async def healthz(state: State) -> HealthOut:
    """On the event loop itself, touching no database and no thread: it answers while the loop does."""
    return HealthOut(status="ok", uptime_s=round(time.time() - state.started, 1), pid=os.getpid())


MIN_FREE_MB = 64  # below this on the home's disk, writes are about to fail: not ready
READY_DB_TIMEOUT_S = 5.0


def _database_ok(state: ServerState) -> str:
    from sqlalchemy import text

    from emolens.serve.errors import storage_error
    from emolens.store.db import get_engine

    try:
        with get_engine(state.db_url).connect() as conn:
            conn.execute(text("SELECT 1"))
        return "ok"
    except Exception as exc:  # any driver error means "not ready"; the log has the details, not the open answer
        log.warning("readiness: the database check failed: %s: %s", type(exc).__name__, exc)
        mapped = storage_error(exc)
        return f"error: {mapped or 'the database cannot be opened'}"


def _storage_ok(state: ServerState) -> str:
    """Room to write: the last write that failed for lack of space (until one succeeds), and the
    free space of the home folder's disk."""
    import shutil

    if state.storage_error is not None:
        when, message = state.storage_error
        return f"error: {message} (a write failed {time.time() - when:.0f} s ago)"
    try:
        free = shutil.disk_usage(state.settings.home).free / 1e6
    except OSError:
        return "ok"  # no home folder yet: nothing to measure
    if free < MIN_FREE_MB:
        return f"error: the server's disk is nearly full ({free:.0f} MB free; {MIN_FREE_MB} MB needed)"
    return "ok"


def _model_ok(state: ServerState) -> str:
    """The registry's active version loads: it may have changed since the startup check. Cheap
    after the first time: the pointer is one small read, the model is loaded once (the analyzer's)."""
    if state.settings.model != "active":
        return "ok"  # a fixed model: checked at startup
    try:
        version = state.registry().active_name()
        if version is not None:
            _ = state.models.load(version, state.analysis_threads).meta
        return "ok"
    except Exception as exc:  # a version that cannot load is "not ready", whatever the error
        return f"error: {exc}"[:300]


@router.get(
    "/readyz",
    response_model=ReadyOut,
    summary="Ready to analyze: model and detector loaded, database reachable",
    responses={503: {"model": ReadyOut, "description": "Not ready; the failing checks say why"}},
)
async def readyz(state: State):
    model = "ok"
    if not state.warm.is_set():
        model = "loading"
    elif state.warm_error:
        model = f"error: {state.warm_error}"
    else:
        model = await run_in_threadpool(_model_ok, state)
    try:  # a database check in the database threads, with its own deadline: readiness never hangs
        database = await asyncio.wait_for(
            asyncio.wrap_future(state.db_pool.submit(_database_ok, state)), READY_DB_TIMEOUT_S
        )
    except TimeoutError:
        database = f"error: the database did not answer within {READY_DB_TIMEOUT_S:g} s"
    checks = {"model_and_detector": model, "database": database, "storage": _storage_ok(state)}
    ready = all(v == "ok" for v in checks.values())
    body = ReadyOut(status="ready" if ready else "not_ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(state: State) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    state.metrics.inference_pending.set(state.gate.pending)
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@api.get("/info", response_model=InfoOut, summary="Server settings a client needs: labels, limits, access")
def info(state: State, _key: ReadKey) -> InfoOut:
    from emolens import __version__

    s = state.settings
    return InfoOut(
        version=__version__,
        model=s.model,
        detector=s.detector,
        labels=list(state.feedback_store().labels),
        limits=Limits(max_upload_mb=s.max_upload_mb, max_pixels=s.max_pixels, request_timeout_s=s.request_timeout_s),
        read_key_required=s.api_read_key_required,
        finetune_from_web=s.allow_finetune_from_web,
        min_feedback=s.min_feedback,
    )


@api.get("/auth/key", response_model=KeyOut, summary="The key sent in X-API-Key", responses=errors(401, 403))
def whoami(key: AnyKey) -> KeyOut:
    return KeyOut(**key.to_dict())
