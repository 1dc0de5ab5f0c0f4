"""Content-type rules for routes that take a body, and reading an uploaded image part."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request, Response, UploadFile
from fastapi.routing import APIRoute

from emolens.serve.errors import UnsupportedMediaTypeError

IMAGE_HINT = "JPEG, PNG, WebP, BMP, TIFF or GIF"


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    return bool(request.headers.get("transfer-encoding")) or (length is not None and length.strip() not in ("", "0"))


class MultipartRoute(APIRoute):
    """A route that takes file uploads: anything but multipart/form-data is a 415, answered before
    the body is parsed (FastAPI would otherwise report a missing field)."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            if _media_type(request) != "multipart/form-data":
                got = _media_type(request) or "no Content-Type"
                raise UnsupportedMediaTypeError(
                    f"expected multipart/form-data with the image in a part named 'image', not {got} "
                    "(curl: -F image=@photo.jpg)"
                )
            return await handler(request)

        return checked


class JsonRoute(APIRoute):
    """A route that takes a JSON body: a body of another declared type is a 415."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            kind = _media_type(request)
            if _has_body(request) and not (kind == "application/json" or kind.endswith("+json")):
                raise UnsupportedMediaTypeError(f"expected application/json, not {kind or 'no Content-Type'}")
            return await handler(request)

        return checked


def check_image_part(upload: UploadFile) -> None:
    """A part declared as something other than an image (text/plain, application/pdf…) is a 415.
    Undeclared parts and application/octet-stream are decoded and judged by their bytes."""
    kind = (upload.content_type or "").split(";")[0].strip().lower()
    if kind and not (kind.startswith("image/") or kind == "application/octet-stream"):
        raise UnsupportedMediaTypeError(f"the uploaded part is declared as {kind}; send an image ({IMAGE_HINT})")


def safe_name(upload: UploadFile) -> str:
    """The upload's file name, without any folder, for the result's ``source``."""
    name = (upload.filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(ch for ch in name if ch.isprintable())[:200]
