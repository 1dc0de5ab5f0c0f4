"""Identity and attendance: enroll people, train and restore recognizer versions, identify faces,
and run attendance sessions.

One ``People`` per app, made on first use and kept on ``app.state`` (``deps.get_people``; dlib and the detector load
on the first enrollment or identification, in a worker thread, never at server start). Names and
embeddings are personal data: nothing here logs them.
"""

from __future__ import annotations

import threading
from typing import Any, Literal

from fastapi import APIRouter, File, Form, Path, Query, Response, UploadFile
from pydantic import BaseModel, Field

from emolens.core.errors import RefusedError
from emolens.identify.recognize import KINDS
from emolens.serve.deps import AdminKey, PeopleDep, PersonalReadKey, ServerState, State, WriteKey
from emolens.serve.schemas import BODY, COMMON, errors
from emolens.serve.uploads import JsonRoute, MultipartRoute, check_image_part, safe_name

TAGS = ["people"]
router = APIRouter(prefix="/api/v1", tags=TAGS, responses=COMMON)
json_router = APIRouter(prefix="/api/v1", tags=TAGS, route_class=JsonRoute, responses=BODY)
upload_router = APIRouter(prefix="/api/v1", tags=TAGS, route_class=MultipartRoute, responses=BODY)
ROUTERS = (upload_router, json_router, router)

_models_lock = threading.Lock()
_train_lock = threading.Lock()

ALREADY_ENROLLED = "already enrolled for this person"


def _models(people) -> None:
    """Build the embedder and detector once, under a lock (two first requests must not make two)."""
    with _models_lock:
        people.embedder  # noqa: B018 - the lazy properties build on access
        people.detector  # noqa: B018


def _decode(state: ServerState, data: bytes):
    from emolens.image.io import load_image

    return load_image(data, max_pixels=state.settings.max_pixels)


def _version(info) -> dict[str, Any]:
    d = info.to_dict()
    d.pop("report_dir", None)  # a server path: of no use to a client
    return d


# -- people ------------------------------------------------------------------------------------


@router.get("/people", summary="Enrolled people", responses=errors(401, 403))
def list_people(people: PeopleDep, _key: PersonalReadKey) -> dict[str, Any]:
    """Every enrolled person: ``key`` (id), ``name`` and ``faces`` (enrolled photos), and the
    active recognizer version (null before the first training)."""
    active = people.active_version()
    items = [p.to_dict() for p in people.list()]
    return {"people": items, "total": len(items), "active_version": active.version if active else None}


@router.get("/people/versions", summary="Recognizer versions", responses=errors(401, 403))
def list_versions(people: PeopleDep, _key: PersonalReadKey) -> dict[str, Any]:
    versions = [_version(v) for v in people.versions()]
    active = next((v["version"] for v in versions if v["active"]), None)
    return {"versions": versions, "active": active}


def _enroll(state: ServerState, people, data: bytes, key: str, name: str | None, source: str):
    from emolens.identify.enrol import NoUsableFaceError

    image = _decode(state, data)
    _models(people)
    report = people.enroll_image(image, key, name=name or None, source=source)
    if not report.enrolled:
        reasons = [r for _, r in report.skipped]
        if ALREADY_ENROLLED not in reasons:
            raise NoUsableFaceError(f"nothing enrolled: {'; '.join(reasons) or 'no usable face'}")
    return report, people.get(key)


@upload_router.post(
    "/people/{key}/images",
    status_code=201,
    summary="Enroll one photo of a person",
    responses=errors(401, 403, 413, 415, 422, 501, 503, 504),
)
async def enroll_image(
    state: State,
    people: PeopleDep,
    _key: WriteKey,
    key: str,
    response: Response,
    image: UploadFile = File(..., description="A photo of the person: the largest face is enrolled"),
    name: str | None = Form(None, description="Display name (creates or renames the person)"),
) -> dict[str, Any]:
    """Enroll the largest face of the photo as person ``key`` (created if new). 422 when the photo
    has no usable face (none, or too small): then nothing is stored. A photo already enrolled for
    this person is answered 200 and not stored twice. Needs ``write``."""
    check_image_part(image)
    data = await image.read()
    report, person = await state.gate.run(_enroll, state, people, data, key, name, safe_name(image) or "upload")
    if not report.enrolled:
        response.status_code = 200
    return {"person": person.to_dict(), **report.to_dict()}


@router.delete("/people/{key}", summary="Erase a person", responses=errors(401, 403, 404))
def delete_person(people: PeopleDep, _key: AdminKey, key: str) -> dict[str, Any]:
    """Erase a person: embeddings, face crops, attendance records, and their name in training
    reports. Returns what was deleted. Needs ``admin``."""
    return {"key": key, "deleted": people.remove(key)}


class TrainIn(BaseModel):
    classifier: Literal[("auto", *KINDS)] = Field(  # an unknown kind is a 422, not a failed training
        "auto", description="'auto' (chosen by cross-validation) or a classifier kind"
    )


def _train(people, classifier: str):
    if not _train_lock.acquire(blocking=False):
        raise RefusedError("a recognizer is already being trained; wait for it to finish")
    try:
        _models(people)
        if not any(p.faces for p in people.list()):
            raise RefusedError("nobody is enrolled yet: enroll photos (POST /api/v1/people/{key}/images), then train")
        return people.train(classifier=classifier)
    finally:
        _train_lock.release()


@json_router.post(
    "/people/train", summary="Train a new recognizer version", responses=errors(401, 403, 409, 415, 422, 501, 503, 504)
)
async def train(
    state: State,
    people: PeopleDep,
    _key: AdminKey,
    body: TrainIn | None = None,
) -> dict[str, Any]:
    """Train on every enrolled face, measure the threshold, and make the new version active.
    Seconds for a small group. Needs ``admin``."""
    result = await state.gate.run(_train, people, (body or TrainIn()).classifier)
    return {"version": _version(result.version), "summary": result.report.get("summary", {})}


@router.post(
    "/people/versions/{version}/restore",
    summary="Make an earlier version active",
    responses=errors(401, 403, 404, 422),
)
def restore_version(
    people: PeopleDep,
    _key: AdminKey,
    version: int = Path(ge=1, le=2**31 - 1),
) -> dict[str, Any]:
    return {"version": _version(people.restore(version))}


# -- identify ----------------------------------------------------------------------------------


def _identify(state: ServerState, people, data: bytes, threshold: float | None):
    image = _decode(state, data)
    _models(people)
    return image.shape, people.identify(image, threshold=threshold)


@upload_router.post(
    "/identify",
    summary="Who is in a photo",
    responses=errors(401, 403, 409, 413, 415, 422, 501, 503, 504),
)
async def identify(
    state: State,
    people: PeopleDep,
    _key: PersonalReadKey,
    image: UploadFile = File(..., description="The photo: JPEG, PNG, WebP, BMP, TIFF or GIF"),
    threshold: float | None = Query(None, ge=0, le=1, description="Confidence threshold (default: the version's)"),
) -> dict[str, Any]:
    """Every face with its box, and who it is: ``key``/``name`` of an enrolled person, or
    ``label: "unknown"``, with the classifier ``confidence`` and cosine ``similarity``. 409 before
    any recognizer was trained."""
    check_image_part(image)
    data = await image.read()
    shape, matches = await state.gate.run(_identify, state, people, data, threshold)
    return {"width": shape[1], "height": shape[0], "faces": [m.to_dict() for m in matches]}


# -- attendance --------------------------------------------------------------------------------


class SessionIn(BaseModel):
    name: str | None = Field(None, max_length=256, description="Default: 'session <date time>'")
    emotions: bool = Field(True, description="Also read each recognised face's emotion")


def _start(people, name: str | None, emotions: bool):
    from emolens.identify.attendance import AttendanceSession

    _models(people)
    return AttendanceSession.start(name, people=people, emotions=emotions).report()


@json_router.post(
    "/attendance/sessions", status_code=201, summary="Start an attendance session", responses=errors(401, 403, 409)
)
async def start_session(
    state: State,
    people: PeopleDep,
    _key: WriteKey,
    body: SessionIn | None = None,
) -> dict[str, Any]:
    """Start a session with the active recognizer version (409 when none is trained). Needs ``write``."""
    body = body or SessionIn()
    report = await state.gate.run(_start, people, body.name, body.emotions)
    d = report.to_dict()
    return {k: d[k] for k in ("uid", "name", "started_at", "stopped_at", "version", "threshold")}


def _session(people, uid: str):
    from emolens.identify.attendance import AttendanceSession

    return AttendanceSession.open(uid, people=people)


def _add_image(state: ServerState, people, uid: str, data: bytes, source: str):
    session = _session(people, uid)
    if not session.is_open:  # before decoding: a stopped session costs nothing
        raise RefusedError(f"attendance session {session.uid} is stopped; start a new one")
    image = _decode(state, data)
    _models(people)
    return session.add_image(image, source=source)


@upload_router.post(
    "/attendance/sessions/{uid}/images",
    summary="Add a photo to a session",
    responses=errors(401, 403, 404, 409, 413, 415, 422, 501, 503, 504),
)
async def add_session_image(
    state: State,
    people: PeopleDep,
    _key: WriteKey,
    uid: str,
    image: UploadFile = File(..., description="A photo of the room or the door"),
) -> dict[str, Any]:
    """Recognise every face and mark people present; ``newly_present`` lists the keys marked by
    this photo. 404 for an unknown session, 409 for a stopped one. Needs ``write``."""
    check_image_part(image)
    data = await image.read()
    frame = await state.gate.run(_add_image, state, people, uid, data, safe_name(image) or "upload")
    return frame.to_dict()


@router.post("/attendance/sessions/{uid}/stop", summary="Stop a session", responses=errors(401, 403, 404))
def stop_session(people: PeopleDep, _key: WriteKey, uid: str) -> dict[str, Any]:
    """Close the session (stopping twice is harmless) and return its report. Needs ``write``."""
    return _session(people, uid).stop().to_dict()


@router.get("/attendance/sessions", summary="Attendance sessions, newest first", responses=errors(401, 403))
def list_attendance_sessions(people: PeopleDep, _key: PersonalReadKey) -> dict[str, Any]:
    from emolens.identify.attendance import list_sessions

    return {"sessions": list_sessions(people)}


@router.get(
    "/attendance/sessions/{uid}/report",
    summary="A session's report (JSON or CSV)",
    responses={200: {"content": {"application/json": {}, "text/csv": {}}}, **errors(401, 403, 404)},
)
def session_report(
    people: PeopleDep,
    _key: PersonalReadKey,
    uid: str,
    format: Literal["json", "csv"] = Query("json"),  # noqa: A002 - the query parameter's name
):
    """One row per enrolled person: present or not, first seen (when, in which photo, confidence),
    sightings and emotion. ``?format=csv`` for a spreadsheet."""
    report = _session(people, uid).report()
    if format == "csv":
        headers = {"Content-Disposition": f'attachment; filename="attendance-{report.uid}.csv"'}
        return Response(report.to_csv(), media_type="text/csv", headers=headers)
    return report.to_dict()
