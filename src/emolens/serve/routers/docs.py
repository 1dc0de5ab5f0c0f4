"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), served from this machine: their scripts and styles
come from the ``fastapi-offline`` package, never from a CDN, so the pages work offline and load
nothing from third parties; a CSP that allows only this server enforces it. No inline script:
each page starts from a small file in ``serve/static``."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from emolens.core.errors import EmoLensError, NotFoundError

router = APIRouter(include_in_schema=False)

ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
# Swagger UI and ReDoc set style attributes and inject <style> elements: inline styles are allowed,
# inline scripts and every other origin are not.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

SWAGGER = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>EmoLens API</title>
<link rel="stylesheet" href="/docs-assets/swagger-ui.css"><link rel="icon" href="/docs-assets/favicon.png">
</head><body><div id="swagger-ui"></div>
<script src="/docs-assets/swagger-ui-bundle.js"></script><script src="/static/docs-swagger.js"></script>
</body></html>
"""

REDOC = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>EmoLens API</title>
<link rel="icon" href="/docs-assets/favicon.png">
</head><body><redoc spec-url="/openapi.json"></redoc>
<script src="/docs-assets/redoc.standalone.js"></script>
</body></html>
"""


class DocsMissingError(EmoLensError):
    http_status = 501


def _assets() -> Path:
    try:
        import fastapi_offline
    except ImportError as exc:  # a core dependency: only a broken install lacks it
        raise DocsMissingError(
            "the API docs need the 'fastapi-offline' package, a dependency of EmoLens: pip install fastapi-offline"
        ) from exc
    return Path(fastapi_offline.__file__).parent / "static"


@router.get("/docs")
def swagger() -> HTMLResponse:
    _assets()
    return HTMLResponse(SWAGGER, headers=HEADERS)


@router.get("/redoc")
def redoc() -> HTMLResponse:
    _assets()
    return HTMLResponse(REDOC, headers=HEADERS)


@router.get("/docs-assets/{filename}")
def asset(filename: str) -> FileResponse:
    if filename not in ASSETS:
        raise NotFoundError(f"no file /docs-assets/{filename}")
    headers = {**HEADERS, "Cache-Control": "public, max-age=86400"}
    return FileResponse(_assets() / filename, media_type=ASSETS[filename], headers=headers)
