"""``POST /api/v1/analyze``: faces, boxes, landmarks and emotions of an uploaded image."""

from __future__ import annotations

import base64
import io
import time
from typing import Literal

from fastapi import APIRouter, File, Query, UploadFile

from emolens.pipeline.results import FaceRecord
from emolens.serve.deps import ReadKey, ServerState, State
from emolens.serve.schemas import BODY, AnalysisOut, AnnotatedImage, errors
from emolens.serve.uploads import MultipartRoute, check_image_part, safe_name

router = APIRouter(prefix="/api/v1", tags=["analyze"], route_class=MultipartRoute, responses=BODY)


def _encode(image, fmt: str) -> AnnotatedImage:
    from PIL import Image

    buf = io.BytesIO()
    if fmt == "png":
        Image.fromarray(image).save(buf, format="PNG")
    else:
        Image.fromarray(image).save(buf, format="JPEG", quality=90)
    return AnnotatedImage(media_type=f"image/{fmt}", base64=base64.b64encode(buf.getvalue()).decode("ascii"))


def run_analysis(state: ServerState, data: bytes, name: str, annotate: bool, fmt: str):
    """Decode (the analyzer's pixel limit), detect, classify and optionally draw: in a worker thread.
    The analyzer decodes the upload itself, once, and times every step."""
    results = state.analyzer(data)
    results.source = name
    annotated = _encode(results.plot(), fmt) if annotate else None
    return results, annotated, list(state.analyzer.labels)


@router.post(
    "/analyze",
    response_model=AnalysisOut,
    response_model_exclude_none=False,
    summary="Analyze an uploaded image",
    responses=errors(401, 403, 413, 415, 422, 503, 504),
)
async def analyze(
    state: State,
    _key: ReadKey,
    image: UploadFile = File(..., description="The photo: JPEG, PNG, WebP, BMP, TIFF or GIF"),
    annotate: bool = Query(False, description="Also return the image with boxes and labels drawn, base64-encoded"),
    annotate_format: Literal["jpeg", "png"] = Query("jpeg"),
) -> AnalysisOut:
    """Find every face and read its emotion. The answer's ``analysis_id`` lets feedback refer to
    a face by its ``index`` (``POST /api/v1/feedback``) while the server remembers the analysis.

    Errors: 413 when the upload is above ``max_upload_mb`` or the image above ``max_pixels``;
    415 when the request is not multipart or the part is declared as a non-image type; 422 when
    the bytes are not a readable image."""
    check_image_part(image)
    data = await image.read()
    t0 = time.perf_counter()
    name = safe_name(image)
    results, annotated, labels = await state.gate.run(run_analysis, state, data, name, annotate, annotate_format)
    m = state.metrics
    m.analysis_seconds.observe(time.perf_counter() - t0)
    m.analyses.inc()
    m.faces.inc(len(results))
    analysis_id = await state.db(state.analyses.put, results, data)  # never on the event loop
    state.storage_error = None  # a write went through: the disk has room again
    if state.settings.shadow_model and state.shadow is not None:  # off the response path: returns at once
        state.shadow.offer(analysis_id, results)
    d = results.to_dict()
    return AnalysisOut(
        analysis_id=analysis_id,
        width=d["width"],
        height=d["height"],
        model=d["model"],
        detector=d["detector"],
        labels=labels,
        faces=[FaceRecord(**f) for f in d["faces"]],
        timings_ms=d["timings_ms"],
        annotated=annotated,
        members=d.get("members"),
    )
