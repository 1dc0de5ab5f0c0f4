"""Health (process up), readiness (model, detector, database), Prometheus metrics, server info."""

from __future__ import annotations

import os
import time

from fastapi import APIRouter, Depends, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from emolens.serve.deps import ServerState, get_state, read_access, require
from emolens.serve.schemas import COMMON, HealthOut, InfoOut, KeyOut, Limits, ReadyOut, errors
from emolens.store.keys import ApiKey

router = APIRouter(tags=["health"])
api = APIRouter(prefix="/api/v1", tags=["server"], responses=COMMON)


@router.get("/healthz", response_model=HealthOut, summary="The process is up")
def healthz(state: ServerState = Depends(get_state)) -> HealthOut:
    return HealthOut(status="ok", uptime_s=round(time.time() - state.started, 1), pid=os.getpid())


def _database_ok(state: ServerState) -> str:
    from sqlalchemy import text

    from emolens.store.db import get_engine

    try:
        with get_engine(state.db_url).connect() as conn:
            conn.execute(text("SELECT 1"))
        return "ok"
    except Exception as exc:  # any driver error means "not ready"
        return f"error: {type(exc).__name__}: {exc}"[:300]


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
async def readyz(state: ServerState = Depends(get_state)):
    model = "ok"
    if not state.warm.is_set():
        model = "loading"
    elif state.warm_error:
        model = f"error: {state.warm_error}"
    else:
        model = await run_in_threadpool(_model_ok, state)
    checks = {"model_and_detector": model, "database": await run_in_threadpool(_database_ok, state)}
    ready = all(v == "ok" for v in checks.values())
    body = ReadyOut(status="ready" if ready else "not_ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(state: ServerState = Depends(get_state)) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    state.metrics.inference_pending.set(state.gate.pending)
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@api.get("/info", response_model=InfoOut, summary="Server settings a client needs: labels, limits, access")
def info(state: ServerState = Depends(get_state), _key=Depends(read_access)) -> InfoOut:
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
def whoami(key: ApiKey = Depends(require("read"))) -> KeyOut:
    return KeyOut(**key.to_dict())
