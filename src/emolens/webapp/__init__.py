"""The on-device web app (a PWA): the whole pipeline in the browser with ONNX Runtime Web.

``static/`` holds the app (HTML, JavaScript modules, the service worker template, the manifest);
``static/vendor/`` holds ONNX Runtime Web, copied from the pinned npm package by
``scripts/build_webapp.sh`` (``web/package.json`` + ``web/package-lock.json``, then
``node web/build.mjs``). Wheels built after that step carry the vendor files; a source checkout
without them serves the app's page, which says how to build them. ``emolens serve`` serves it all
under ``/app/`` (``emolens.serve.routers.webapp``).
"""

from __future__ import annotations

import json
from pathlib import Path

STATIC = Path(__file__).parent / "static"
VENDOR = STATIC / "vendor"
BUILD_INFO = VENDOR / "BUILD.json"
BUILD_COMMAND = "bash scripts/build_webapp.sh"  # needs Node.js 18+ and npm, from a source checkout

# The app shell: cached by the service worker at install, so the app opens offline.
SHELL = (
    "index.html",
    "app.js",
    "engine.js",
    "pipeline.js",
    "app.css",
    "manifest.webmanifest",
    "icon.svg",
    "icon-192.png",
)
# ONNX Runtime Web for the WASM backend (every browser); the WebGPU build is fetched only where used.
VENDOR_WASM = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
VENDOR_WEBGPU = ("ort.webgpu.min.mjs", "ort-wasm-simd-threaded.asyncify.mjs", "ort-wasm-simd-threaded.asyncify.wasm")


def build_id(info: dict) -> str:
    """A short name for one build of the vendor files: their URLs carry it, so browsers may cache
    them for good and a rebuilt runtime is a new URL."""
    import hashlib

    return hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()[:12]


def build_info() -> dict | None:
    """What ``web/build.mjs`` wrote: the onnxruntime-web version and each file's size and sha256;
    None when the vendor files were never built."""
    try:
        return json.loads(BUILD_INFO.read_text())
    except (OSError, ValueError):
        return None
