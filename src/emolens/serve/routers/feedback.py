"""Feedback: on a face of an earlier analysis, or on an uploaded crop; list, count, export, delete."""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

from fastapi import APIRouter, File, Form, Query, Response, UploadFile
from fastapi.responses import StreamingResponse

from emolens.core.errors import EmoLensError
from emolens.serve.deps import AdminKey, AnyKey, PersonalReadKey, ReadKey, ServerState, State, WriteKey
from emolens.serve.schemas import BODY, COMMON, FeedbackIn, FeedbackList, FeedbackOut, FeedbackStats, errors
from emolens.serve.uploads import JsonRoute, MultipartRoute, check_image_part
from emolens.store.keys import ApiKey

router = APIRouter(prefix="/api/v1", tags=["feedback"], responses=COMMON)
json_router = APIRouter(prefix="/api/v1", tags=["feedback"], route_class=JsonRoute, responses=BODY)
upload_router = APIRouter(prefix="/api/v1", tags=["feedback"], route_class=MultipartRoute, responses=BODY)

MAX_OFFSET = 10**12  # far beyond any store, and inside a database's 64-bit integers


def _feedback(state: ServerState):
    """The feedback service over the server's store."""
    from emolens.feedback import FeedbackService

    return FeedbackService(state.feedback_store())


def _user(key: ApiKey) -> str:
    return f"key:{key.key_id}"


def _count(state: ServerState, record) -> None:
    state.metrics.feedback.labels("correction" if record.is_correction else "confirmation").inc()


@json_router.post(
    "/feedback",
    status_code=201,
    response_model=FeedbackOut,
    summary="Feedback on a face of an earlier analysis",
    responses=errors(401, 403, 404, 415, 422, 503, 504, 507),
)
async def feedback_on_analysis(state: State, key: WriteKey, body: FeedbackIn) -> FeedbackOut:
    """Say what face ``face`` of analysis ``analysis_id`` really shows (``label``), or that the
    model was right (``correct: true``). 404 for an analysis the server no longer remembers or a
    face index it did not find; 422 for an unknown label. Needs a key with the ``write`` scope."""
    # The image is decoded again: in the analysis gate, so decoding memory stays bounded.
    record = await state.gate.run(_store_on_analysis, state, body, key)
    _count(state, record)
    return FeedbackOut.of(record)


def _store_on_analysis(state: ServerState, body: FeedbackIn, key: ApiKey):
    store = _feedback(state)
    if body.label is not None:
        store.check_label(body.label)  # before the image is decoded again
    results = state.analyses.get(body.analysis_id)
    return store.add_from_results(
        results,
        body.face,
        body.label,
        correct=body.correct,
        keep_image=body.keep_image,
        source=body.source,
        user_id=_user(key),
    )


def _store_crop(state: ServerState, data: bytes, label: str, predicted: str | None, key: ApiKey):
    return _feedback(state).add_encoded(
        data,
        label,
        max_pixels=state.settings.max_pixels,
        predicted=predicted or None,
        source="api:crop",
        user_id=_user(key),
    )


@upload_router.post(
    "/feedback/crop",
    status_code=201,
    response_model=FeedbackOut,
    summary="Feedback on an uploaded face crop",
    responses=errors(401, 403, 413, 415, 422, 503, 504, 507),
)
async def feedback_on_crop(
    state: State,
    key: WriteKey,
    image: UploadFile = File(..., description="A face crop (aligned or not)"),
    label: str = Form(..., description="The true emotion"),
    predicted: str | None = Form(None, description="What a model said, when known"),
) -> FeedbackOut:
    """Store a labelled face crop (fitted to 96 x 96 px when larger, as fine-tuning reads it). Needs ``write``."""
    check_image_part(image)
    data = await image.read()
    record = await state.gate.run(_store_crop, state, data, label, predicted, key)  # decoding is bounded there
    _count(state, record)
    return FeedbackOut.of(record)


@router.get(
    "/feedback", response_model=FeedbackList, summary="List feedback, newest first", responses=errors(401, 403, 422)
)
def list_feedback(
    state: State,
    _key: PersonalReadKey,
    limit: int = Query(50, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
    label: str | None = Query(None, max_length=32, description="Only records with this true label"),
    corrections_only: bool = Query(False),
) -> FeedbackList:
    """Needs a key with the ``read`` scope (records are personal data) unless the server sets
    ``EMOLENS_API_PERSONAL_READS_OPEN=true``."""
    store = _feedback(state)
    items = store.list(limit=limit, offset=offset, label=label, corrections_only=corrections_only)
    total = store.count(label=label, corrections_only=corrections_only)
    return FeedbackList(items=[FeedbackOut.of(r) for r in items], total=total, limit=limit, offset=offset)


@router.get("/feedback/stats", response_model=FeedbackStats, summary="Feedback counts")
def feedback_stats(state: State, _key: ReadKey) -> FeedbackStats:
    stats = _feedback(state).stats()
    state.metrics.feedback_stored.set(stats["total"])
    return FeedbackStats(**stats, min_feedback=state.settings.min_feedback)


def _zip_export(state: ServerState):
    """The export as a zip in an anonymous temporary file (gone once closed, even if the request
    is abandoned), and its size."""
    work = Path(tempfile.mkdtemp(prefix="emolens-export-"))
    out = tempfile.TemporaryFile()  # noqa: SIM115 - handed on open; _chunks closes it
    try:
        _feedback(state).export(work / "feedback")
        with zipfile.ZipFile(out, "w") as z:
            for path in sorted((work / "feedback").rglob("*")):
                if path.is_file():  # PNGs are compressed already
                    kind = zipfile.ZIP_STORED if path.suffix == ".png" else zipfile.ZIP_DEFLATED
                    z.write(path, path.relative_to(work).as_posix(), compress_type=kind)
    except BaseException:
        out.close()
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    size = out.tell()
    out.seek(0)
    return out, size


def _chunks(f, size: int = 2**20) -> Iterator[bytes]:
    try:
        while block := f.read(size):
            yield block
    finally:
        f.close()


@router.get(
    "/feedback/export",
    summary="Download all feedback as a zip (crops by label + feedback.csv)",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/zip": {}}}, **errors(401, 403)},
)
def export_feedback(state: State, _key: AnyKey):
    """Every stored face crop, as an image-folder dataset (``feedback/images/<label>/<uid>.png``),
    and ``feedback/feedback.csv`` with every field. Faces are personal data: this always needs a
    key (any scope), even where reads are open."""
    f, size = _zip_export(state)
    headers = {"Content-Disposition": 'attachment; filename="emolens-feedback.zip"', "Content-Length": str(size)}
    return StreamingResponse(_chunks(f), media_type="application/zip", headers=headers)


@router.get(
    "/feedback/{uid}", response_model=FeedbackOut, summary="One feedback record", responses=errors(401, 403, 404)
)
def get_feedback(state: State, _key: PersonalReadKey, uid: str) -> FeedbackOut:
    return FeedbackOut.of(_feedback(state).get(uid))


@router.get(
    "/feedback/{uid}/crop",
    summary="The stored face crop (PNG)",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **errors(401, 403, 404)},
)
def get_feedback_crop(state: State, _key: PersonalReadKey, uid: str) -> Response:
    store = _feedback(state)
    record = store.get(uid)
    try:
        data = store.blobs.get(record.crop_key)
    except OSError as exc:
        raise EmoLensError(
            f"the crop file of feedback {uid} cannot be read ({exc}); see `emolens feedback check`"
        ) from None
    return Response(data, media_type="image/png")


@router.delete("/feedback/{uid}", status_code=204, summary="Delete a feedback record", responses=errors(401, 403, 404))
def delete_feedback(state: State, _key: AdminKey, uid: str) -> Response:
    _feedback(state).delete(uid)
    return Response(status_code=204)
