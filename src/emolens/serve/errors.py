"""HTTP-only errors, and the one translation of every error into ``{"error": {"type", "message"}}``.

EmoLens' own errors carry their HTTP status (``EmoLensError.http_status``); the ones here exist
only at the HTTP boundary. The ``type`` is the class name in snake case without "Error":
``BadImageError`` → ``bad_image``.
"""

from __future__ import annotations

import logging
import re
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from emolens.core.errors import EmoLensError
from emolens.serve.logs import redact

log = logging.getLogger("emolens.serve")


class UnauthorizedError(EmoLensError):
    """No API key was sent where one is needed."""

    http_status = 401


class ForbiddenError(EmoLensError):
    """The API key is unknown, revoked, or lacks the scope the request needs."""

    http_status = 403


class UnsupportedMediaTypeError(EmoLensError):
    http_status = 415


class BusyError(EmoLensError):
    """Every analysis slot and queue place is taken."""

    http_status = 503


class DatabaseUnavailableError(EmoLensError):
    """The database cannot be reached, is locked, or did not answer in time."""

    http_status = 503


def storage_error(exc: BaseException) -> EmoLensError | None:
    """A database driver's or the file system's failure as what it means to a client: 507 when the
    disk (or the database) is full, 503 when the database cannot be reached, is locked or read-only.
    None for anything else. The message says why without naming hosts, ports or paths."""
    import errno

    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    from emolens.core.errors import StorageError

    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return StorageError("no space left on the server's disk: nothing was stored; free some space")
        if exc.errno == errno.EROFS:
            return DatabaseUnavailableError("the server's storage is read-only: nothing was stored")
        return None
    if not isinstance(exc, SQLAlchemyError):
        return None
    orig = getattr(exc, "orig", None) if isinstance(exc, DBAPIError) else None
    text = str(orig or exc).lower()
    sqlstate = str(getattr(orig, "sqlstate", "") or "")
    if "disk is full" in text or "no space left" in text or sqlstate.startswith("53"):
        return StorageError("the database's disk is full: nothing was stored; free some space")
    if "locked" in text or "busy" in text:
        return DatabaseUnavailableError("the database is busy (locked by another writer); try again shortly")
    if "readonly" in text or "read-only" in text:
        return DatabaseUnavailableError("the database is read-only: nothing was stored")
    name = type(orig or exc).__name__
    return DatabaseUnavailableError(f"the database is unavailable ({name}); try again shortly")


def error_type(exc: BaseException) -> str:
    name = type(exc).__name__
    if name == "EmoLensError":
        return "error"
    name = name.removesuffix("Error")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def error_body(type_: str, message: str, **extra) -> dict:
    return {"error": {"type": type_, "message": message, **extra}}


def error_response(status: int, type_: str, message: str, headers: dict | None = None, **extra) -> JSONResponse:
    return JSONResponse(error_body(type_, message, **extra), status_code=status, headers=headers)


_HTTP_TYPES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type"}


def _note_full(request: Request, exc: BaseException) -> None:
    """/readyz reports a full disk until a later write succeeds."""
    import time

    state = getattr(request.app.state, "emolens", None)
    if state is not None:
        state.storage_error = (time.time(), str(exc))


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(EmoLensError)
    async def _emolens(request: Request, exc: EmoLensError) -> JSONResponse:
        status = int(getattr(exc, "http_status", 500))
        if status == 507:
            _note_full(request, exc)
        if status >= 500 and status not in (501, 503, 504, 507):
            log.error("%s %s failed: %s", request.method, redact(request.url.path), exc)
        headers = {"WWW-Authenticate": 'ApiKey header="X-API-Key"'} if status == 401 else None
        return error_response(status, error_type(exc), str(exc), headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code
        if status == 404 and exc.detail == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path} (see /docs)"
        elif status == 413:
            message = str(exc.detail) if exc.detail != "Content Too Large" else "request body too large"
        else:
            message = str(exc.detail) if exc.detail else HTTPStatus(status).phrase
        return error_response(status, _HTTP_TYPES.get(status, f"http_{status}"), message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        message = "; ".join(f"{'.'.join(d['loc'])}: {d['msg']}" for d in details) or "invalid request"
        return error_response(422, "validation", message, details=details)

    async def _storage(request: Request, exc: Exception) -> JSONResponse:
        mapped = storage_error(exc)
        if mapped is None:
            return await _unexpected(request, exc)
        log.error("%s %s failed: %s: %s", request.method, redact(request.url.path), type(exc).__name__, exc)
        if mapped.http_status == 507:
            _note_full(request, mapped)
        return error_response(mapped.http_status, error_type(mapped), str(mapped), {"Retry-After": "5"})

    from sqlalchemy.exc import SQLAlchemyError

    app.add_exception_handler(SQLAlchemyError, _storage)
    app.add_exception_handler(OSError, _storage)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:  # pragma: no cover - a bug
        log.exception("%s %s failed", request.method, redact(request.url.path))
        return error_response(500, "internal", f"internal error ({type(exc).__name__}); the server log has details")
