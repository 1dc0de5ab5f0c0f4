"""The FastAPI application: ``create_app(settings)`` builds one; ``emolens serve`` runs it under uvicorn.

Layout: a router per resource (``routers/``), dependencies for settings, the analyzer and API
keys (``deps.py``), request and response shapes apart from storage (``schemas.py``), and one
translation of every error into JSON (``errors.py``). Middleware, outermost first: CORS (when
origins are configured), metrics, request timeout, body size limit.
"""

from __future__ import annotations

import contextlib
import threading
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from emolens.core.settings import Settings
from emolens.serve import logs
from emolens.serve.deps import InferenceGate, ServerState
from emolens.serve.errors import install_handlers
from emolens.serve.metrics import worker_stopped
from emolens.serve.middleware import BodyLimitMiddleware, HostMiddleware, MetricsMiddleware, TimeoutMiddleware
from emolens.workspace import Workspace

STATIC = Path(__file__).parent / "static"

# The page loads nothing from elsewhere: scripts, styles and images come from this server.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; "
        "style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

DESCRIPTION = """\
Find faces in an image and read their emotions; send feedback on what the model got wrong;
manage model versions.

**Access.** Endpoints that write (feedback) or change models (promote, roll back, fine-tune)
need an API key in the `X-API-Key` header, made with `emolens keys create NAME --scope write|admin`.
Reads of personal data (feedback records and face crops, people, identification, attendance) need
a key with the `read` scope unless the server sets `EMOLENS_API_PERSONAL_READS_OPEN=true`; other
reads are open unless it sets `EMOLENS_API_READ_KEY_REQUIRED=true`.

**Errors** are always JSON: `{"error": {"type": "...", "message": "..."}}`.
"""


LOOPBACK = ("localhost", "127.0.0.1", "::1")


def allowed_hosts(settings: Settings) -> list[str]:
    """The names a request's Host header may carry: ``allowed_hosts``, else the loopback names
    (``emolens serve --host`` adds the address it binds). ``*`` allows any."""
    return list(settings.allowed_hosts) or list(LOOPBACK)


def create_app(settings: Settings | Workspace | None = None) -> FastAPI:
    """A new app, an entry point: its composition root (``emolens.workspace``) is made from
    ``settings`` (default: the process's: defaults < config file < environment), or given whole;
    everything the app holds comes from it: the analyzer and the models it resolves, the model
    registry, the database and the stores; the settings also give the connections' header deadline."""
    from emolens import __version__
    from emolens.serve.connections import set_header_timeout

    workspace = settings if isinstance(settings, Workspace) else Workspace(settings)
    settings = workspace.settings
    state = ServerState(workspace)
    set_header_timeout(settings.header_timeout_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.gate = InferenceGate(settings.serve_threads, settings.serve_queue)

        def warm() -> None:
            from emolens.store.db import get_engine

            with contextlib.suppress(Exception):  # /readyz reports a database that fails
                get_engine(state.db_url)  # create or migrate the database now, not on the first request
            state.warmup()

        threading.Thread(target=warm, name="emolens-warmup", daemon=True).start()
        sweeping = threading.Event()
        threading.Thread(target=state.sweep_analyses, args=(sweeping,), name="emolens-sweep", daemon=True).start()
        try:
            yield
        finally:
            sweeping.set()
            state.db_pool.shutdown(wait=False, cancel_futures=True)
            state.gate.shutdown()
            state.jobs.shutdown()
            if state._shadow is not None:
                state._shadow.shutdown()
            worker_stopped()

    app = FastAPI(
        title="EmoLens",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc come from routers/docs.py: assets from this server, a CSP
        redoc_url=None,
        openapi_tags=[
            {"name": "analyze", "description": "Faces and emotions in an image"},
            {"name": "feedback", "description": "What people said about faces: stored for fine-tuning"},
            {"name": "models", "description": "Model versions, promotion, rollback, fine-tuning jobs"},
            {"name": "people", "description": "Identity and attendance: enroll, train, identify, sessions"},
            {"name": "server", "description": "Settings a client needs, and who a key is"},
            {"name": "health", "description": "Liveness, readiness, Prometheus metrics"},
        ],
    )
    app.state.emolens = state
    install_handlers(app)
    logs.install()

    from emolens.serve.routers import analyze, docs, feedback, health, live, models, people, shadow, webapp

    for r in (
        analyze.router,
        live.router,
        feedback.json_router,
        feedback.upload_router,
        feedback.router,
        models.router,
        models.json_router,
        shadow.router,
        *people.ROUTERS,
        health.api,
        health.router,
        webapp.router,  # /app/: the on-device web app (PWA)
        docs.router,
    ):
        app.include_router(r)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # add_middleware puts each one outside the ones before it.
    app.add_middleware(BodyLimitMiddleware, max_bytes=int(settings.max_upload_mb * 1_000_000))
    app.add_middleware(TimeoutMiddleware, seconds=settings.request_timeout_s)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    app.add_middleware(HostMiddleware, allowed=allowed_hosts(settings))
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["X-API-Key", "Content-Type"],
            max_age=600,
        )
    return app
