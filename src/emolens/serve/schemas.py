"""The API's request and response shapes: apart from storage, so either can change without the other."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from emolens.pipeline.results import FaceRecord


class ErrorDetail(BaseModel):
    type: str = Field(description="What kind of error: bad_image, bad_label, not_found, unauthorized…")
    message: str = Field(description="What went wrong and what to do about it")
    details: list[dict[str, Any]] | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for the error statuses a route can answer."""
    text = {
        400: "Bad request: the body cannot be parsed (malformed JSON or multipart)",
        401: "No API key",
        403: "API key unknown, revoked or without the needed scope",
        404: "Not found",
        409: "Refused by a rule",
        413: "Upload or image too large",
        415: "Wrong content type",
        422: "Invalid input (not an image, corrupt file, unknown label, bad field)",
        501: "An optional extra is not installed",
        503: "Busy or not ready",
        504: "Timed out",
        507: "Could not store",
    }
    return {s: {"model": ErrorResponse, "description": text.get(s, "Error")} for s in statuses}


# On every /api/v1 route: reads may need a key (api_read_key_required), and any field can fail validation.
COMMON = errors(401, 403, 422)
BODY = errors(400, 401, 403, 422)  # routes that take a body: one that cannot be parsed (bad JSON, multipart) is a 400


class AnnotatedImage(BaseModel):
    media_type: str
    base64: str


class AnalysisOut(BaseModel):
    analysis_id: str = Field(description="Kept in memory for a while: send feedback on its faces with it")
    width: int | None
    height: int | None
    model: str
    detector: str
    labels: list[str] = Field(description="Every emotion the model knows, in output order")
    faces: list[FaceRecord] = Field(description="Every face, as the one face record of EmoLens")
    timings_ms: dict[str, float]
    annotated: AnnotatedImage | None = None
    members: list[dict[str, Any]] | None = Field(
        None, description="An ensemble (or TTA): every member's name, file hash (sha256) and weight"
    )


class FeedbackIn(BaseModel):
    """Feedback on face ``face`` of analysis ``analysis_id``: the true ``label``, or ``correct: true``."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"analysis_id": "3f2a…", "face": 0, "label": "sad"}}
    )

    analysis_id: str = Field(min_length=1, max_length=64)
    face: int = Field(description="The face's index in that analysis")
    label: str | None = Field(None, max_length=32, description="The true emotion (a correction)")
    correct: bool = Field(False, description="The prediction was right (a confirmation)")
    keep_image: bool = Field(False, description="Store the whole photo too, not only the face crop")
    source: str = Field("api", pattern=r"^[a-z0-9_:.-]{1,32}$", description="Where the feedback came from")


class FeedbackOut(BaseModel):
    uid: str
    created_at: str
    label: str
    predicted: str | None
    confidence: float | None
    is_correction: bool
    holdout: bool
    source: str
    user_id: str | None
    model_version: str | None
    box: list[float] | None
    probs: dict[str, float] | None
    uncertain: bool = Field(False, description='The model answered "uncertain"; predicted is its top class')

    @classmethod
    def of(cls, record) -> FeedbackOut:
        d = record.to_dict()
        return cls(**{k: d.get(k) for k in cls.model_fields})


class FeedbackList(BaseModel):
    items: list[FeedbackOut]
    total: int = Field(description="Records matching the filter, over all pages")
    limit: int
    offset: int


class FeedbackStats(BaseModel):
    total: int
    corrections: int
    confirmations: int
    holdout: int = Field(description="Records held out for judging fine-tuned models: the split fine-tuning uses")
    holdout_groups: int = Field(description="Independent groups (people, photos) of the held-out records")
    train: int = Field(description="Records fine-tuning trains on")
    by_label: dict[str, int]
    confusions: dict[str, int]
    by_source: dict[str, int]
    by_model: dict[str, int] = Field(description="Corrections per model that answered")
    min_feedback: int = Field(description="Corrections needed before fine-tuning is allowed")


class ModelVersionOut(BaseModel):
    name: str
    parent: str | None
    source: str
    created_at: str
    metrics: dict[str, Any]
    promoted: bool
    active: bool
    fine_tunable: bool = Field(description="Has PyTorch weights, so it can be fine-tuned")

    @classmethod
    def of(cls, v) -> ModelVersionOut:
        d = v.to_dict()
        return cls(**{k: d.get(k) for k in cls.model_fields if k != "fine_tunable"}, fine_tunable=bool(v.checkpoint))


class ModelsOut(BaseModel):
    active: str | None = Field(description="The registry's active version; null while the registry is empty")
    serving: str = Field(description="The model the analyzer uses now (it follows the registry's active version)")
    base: str = Field(description="The shipped model used while the registry is empty")
    versions: list[ModelVersionOut]
    available: list[str] = Field(description="Every model name that can be given to --model")


class JobOut(BaseModel):
    id: str
    kind: str
    status: Literal["queued", "running", "succeeded", "failed"]
    created_at: str
    started_at: str | None
    finished_at: str | None
    result: dict[str, Any] | None
    error: dict[str, Any] | None


class FinetuneIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: int | None = Field(None, ge=1, le=100, description="Override the recipe's number of epochs")


class KeyOut(BaseModel):
    key_id: str
    name: str
    scope: str
    created_at: str
    revoked_at: str | None
    active: bool


class Limits(BaseModel):
    max_upload_mb: float
    max_pixels: int
    request_timeout_s: float


class InfoOut(BaseModel):
    name: str = "emolens"
    version: str
    api: str = "v1"
    model: str
    detector: str
    labels: list[str] = Field(description="The emotions feedback may name")
    limits: Limits
    read_key_required: bool
    finetune_from_web: bool
    min_feedback: int


class HealthOut(BaseModel):
    status: str
    uptime_s: float
    pid: int = Field(description="The answering server process (with --workers N, one of N)")


class ReadyOut(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, str]


class LiveConfigIn(BaseModel):
    """A live socket's ``{"type": "config", ...}`` message: change how frames are read from now on."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["config"]
    detect_every: int | None = Field(
        None, ge=1, le=30, strict=True, description="Run the face detector every N frames (1 = every frame)"
    )
    smoothing: float | None = Field(
        None, gt=0.0, le=1.0, description="EMA weight of each new reading of a face's emotions (1 = no smoothing)"
    )
