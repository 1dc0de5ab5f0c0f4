"""Model versions: list with their metrics, promote, roll back, and fine-tune from feedback (a job)."""

from __future__ import annotations

from fastapi import APIRouter, Body

from emolens.core.errors import MissingExtraError, RefusedError
from emolens.serve.deps import AdminKey, ReadKey, ServerState, State
from emolens.serve.errors import ForbiddenError
from emolens.serve.schemas import BODY, COMMON, FinetuneIn, JobOut, ModelsOut, ModelVersionOut, errors
from emolens.serve.uploads import JsonRoute

router = APIRouter(prefix="/api/v1", tags=["models"], responses=COMMON)
json_router = APIRouter(prefix="/api/v1", tags=["models"], route_class=JsonRoute, responses=BODY)


@router.get("/models", response_model=ModelsOut, summary="Model versions and their metrics")
def list_models(state: State, _key: ReadKey) -> ModelsOut:
    from emolens.models.registry import BASE_MODEL

    reg = state.registry()
    return ModelsOut(
        active=reg.active_name(),
        serving=state.analyzer.model_version,
        base=BASE_MODEL,
        versions=[ModelVersionOut.of(v) for v in reg.versions()],
        available=sorted(state.models.available()),
    )


@router.post(
    "/models/{name}/promote",
    response_model=ModelVersionOut,
    summary="Make a version the active model",
    responses=errors(401, 403, 404, 409),
)
def promote(state: State, _key: AdminKey, name: str):
    """``name`` is a registered version (``v3``) or a model by name (``accurate``), never a path.
    The model must load and run before it becomes active (409 otherwise); the analyzer switches
    to it at its next analysis, without a restart. Needs ``admin``."""
    return ModelVersionOut.of(state.registry().promote(name))


@router.post(
    "/models/rollback",
    response_model=ModelVersionOut,
    summary="Make the previously active version active again",
    responses=errors(401, 403, 409),
)
def rollback(state: State, _key: AdminKey):
    return ModelVersionOut.of(state.registry().rollback())


def check_train_extra() -> None:
    """Fail fast (501) without the ``train`` extra, without importing torch into the server."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise MissingExtraError("train", "torch")


def _finetune_job(state: ServerState, epochs: int | None):
    from emolens.feedback.learn import FinetuneOptions, finetune_from_feedback

    options = FinetuneOptions(epochs=epochs) if epochs else FinetuneOptions()
    from emolens.feedback import FeedbackService

    s = state.settings
    return finetune_from_feedback(
        feedback=FeedbackService(state.feedback_store()),
        registry=state.registry(),
        replay=s.replay_data,
        base_val=s.base_val_data,
        min_feedback=s.min_feedback,
        options=options,
        promote=True,
        progress=False,
    )


@json_router.post(
    "/models/finetune",
    status_code=202,
    response_model=JobOut,
    summary="Fine-tune the active model on the feedback (a background job)",
    responses=errors(401, 403, 409, 415, 422, 501),
)
def finetune(state: State, _key: AdminKey, body: FinetuneIn | None = Body(None)) -> JobOut:
    """Starts fine-tuning in the background and answers at once with the job to poll
    (``GET /api/v1/jobs/{id}``). The new version is registered, and promoted only when it passes
    the promotion gates; the analyzer then switches to it. 409 with too few corrections, without
    the replay and validation data, or while another job runs; 501 without the ``train`` extra.
    Needs ``admin``, and ``allow_finetune_from_web``."""
    if not state.settings.allow_finetune_from_web:
        raise ForbiddenError("fine-tuning through the API is switched off (EMOLENS_ALLOW_FINETUNE_FROM_WEB)")
    check_train_extra()
    s = state.settings
    have = state.feedback_store().count(corrections_only=True)
    if have < s.min_feedback:
        raise RefusedError(f"fine-tuning needs at least {s.min_feedback} corrections; there are {have}")
    if not (s.replay_data and s.base_val_data):
        raise RefusedError(
            "fine-tuning needs a replay sample of the base training data and a fixed validation set: "
            "the server must be started with EMOLENS_REPLAY_DATA and EMOLENS_BASE_VAL_DATA set"
        )
    job = state.jobs.start("finetune", lambda: _finetune_job(state, body.epochs if body else None))
    return JobOut(**vars(job))


@router.get("/jobs", response_model=list[JobOut], summary="Recent background jobs")
def list_jobs(state: State, _key: ReadKey) -> list[JobOut]:
    return [JobOut(**vars(j)) for j in state.jobs.list()]


@router.get("/jobs/{job_id}", response_model=JobOut, summary="A background job's status", responses=errors(404))
def get_job(state: State, _key: ReadKey, job_id: str) -> JobOut:
    return JobOut(**vars(state.jobs.get(job_id)))
