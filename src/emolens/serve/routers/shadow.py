"""The shadow model: its status and report (agreement, confusion, who was right), its stored
disagreements and their crops, and promotion through the gates (a background job)."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Body, Query, Response
from pydantic import BaseModel, Field

from emolens.core.errors import NotFoundError, RefusedError
from emolens.serve.deps import AdminKey, PersonalReadKey, ReadKey, State
from emolens.serve.schemas import COMMON, JobOut, errors

router = APIRouter(prefix="/api/v1", tags=["models"], responses=COMMON)

CROP_KEY = re.compile(r"^[0-9a-f]{64}\.png$")


class ShadowOut(BaseModel):
    model: str | None = Field(description="The configured shadow model (EMOLENS_SHADOW_MODEL); null: none")
    error: str | None = Field(None, description="Why the configured shadow model is not running")
    status: dict[str, Any] | None = Field(
        None, description="This process's runner: share, sampled, stored (faces), skipped (queue full), failed"
    )
    report: dict[str, Any] = Field(
        description="Agreement, confusion (rows: active answer, columns: shadow answer) and, among corrected "
        "disagreements, how often each model was right"
    )


class ShadowPromoteIn(BaseModel):
    confidence: float = Field(0.95, ge=0.5, lt=1.0, description="Confidence the shadow must be better with")


@router.get("/shadow", response_model=ShadowOut, summary="The shadow model and how it compares with the active one")
def shadow_report(
    state: State,
    _key: ReadKey,
    active: str | None = Query(None, description="Active model version of the pair (default: the latest pair)"),
    shadow: str | None = Query(None, description="Shadow model of the pair"),
) -> ShadowOut:
    runner = state.shadow if state.settings.shadow_model else None
    if shadow is None and runner is not None:
        shadow = runner.analyzer.model_version
    return ShadowOut(
        model=state.settings.shadow_model,
        error=state.shadow_error,
        status=runner.status() if runner else None,
        report=state.shadow_store().report(active=active, shadow=shadow),
    )


@router.get("/shadow/disagreements", summary="Faces the two models answered differently, newest first")
def shadow_disagreements(
    state: State,
    _key: PersonalReadKey,
    active: str = Query(..., description="Active model version"),
    shadow: str = Query(..., description="Shadow model"),
    limit: int = Query(50, ge=1, le=1000),
) -> list[dict[str, Any]]:
    """Each with both answers, the crop's key (``GET /api/v1/shadow/crops/{key}``) and any later
    correction. Faces are personal data: needs a key with the ``read`` scope unless the server
    sets ``EMOLENS_API_PERSONAL_READS_OPEN=true``."""
    return [vars(d) for d in state.shadow_store().disagreements(active, shadow, limit)]


@router.get(
    "/shadow/crops/{key}",
    summary="The stored crop of a disagreement (PNG)",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **errors(404)},
)
def shadow_crop(key: str, state: State, _key: PersonalReadKey) -> Response:
    """A face: needs a key with the ``read`` scope, as the disagreements do."""
    blobs = state.shadow_store().blobs
    if not CROP_KEY.match(key) or not blobs.path(key).is_file():
        raise NotFoundError(f"no stored shadow crop {key!r}")
    return Response(blobs.get(key), media_type="image/png")


@router.post(
    "/shadow/promote",
    status_code=202,
    response_model=JobOut,
    summary="Promote the shadow model through the gates (a background job)",
    responses=errors(401, 403, 409),
)
def promote_shadow(
    state: State,
    _key: AdminKey,
    body: ShadowPromoteIn | None = Body(None),
) -> JobOut:
    """Judges the shadow against the active model (the fine-tuning gates, and a gain with confidence
    on the base validation set) and makes it active only when every gate passes. Needs ``admin``,
    a configured shadow model and ``EMOLENS_BASE_VAL_DATA``."""
    s = state.settings
    if not s.shadow_model:
        raise RefusedError("no shadow model is configured (EMOLENS_SHADOW_MODEL)")
    if not s.base_val_data:
        raise RefusedError("promoting the shadow needs the gates' validation set: start with EMOLENS_BASE_VAL_DATA")
    confidence = body.confidence if body else 0.95

    def job():
        from emolens.shadow.promote import promote_shadow as run

        return run(state.workspace, s.shadow_model, base_val=s.base_val_data, confidence=confidence, promote=True)

    return JobOut(**vars(state.jobs.start("shadow-promote", job)))
