"""Safe image decoding: every input becomes an RGB uint8 array (H, W, 3), or a BadImageError.

Accepts a path, raw bytes, a PIL image or a numpy array (numpy arrays are taken as RGB, or
grayscale when 2-D). The pixel count is checked from the header before any pixel is decoded,
so a decompression bomb costs nothing.
"""

from __future__ import annotations

import io
import threading
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from emolens.errors import BadImageError, ImageTooLargeError

ImageInput = Union[str, Path, bytes, bytearray, Image.Image, np.ndarray]

_PIL_LIMIT_LOCK = threading.Lock()

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jfif"}


def is_url(item: object) -> bool:
    """``https://...`` and the like: Path() would quietly mangle them into ``https:/...``."""
    return isinstance(item, str) and "://" in item and item.split("://", 1)[0].isalpha()


def offline_url_error(url: str) -> BadImageError:
    return BadImageError(f"{url}: EmoLens is offline and never fetches URLs: download the file and pass its path")


def load_image(source: ImageInput, max_pixels: int | None = None) -> np.ndarray:
    """Decode ``source`` to an RGB uint8 array, applying EXIF orientation."""
    if max_pixels is None:
        from emolens.settings import get_settings

        max_pixels = get_settings().max_pixels
    if isinstance(source, np.ndarray):
        return _from_array(source, max_pixels)
    if isinstance(source, Image.Image):
        _check_pixels(source.size, max_pixels, "image")
        try:  # a lazily opened PIL image decodes here, so a truncated file fails here
            return _from_pil(source)
        except (OSError, SyntaxError, ValueError) as exc:
            raise BadImageError(f"image: corrupt, truncated or of an unsupported mode ({exc})") from None
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise BadImageError("empty input: 0 bytes is not an image")
        return _open(io.BytesIO(source), "image bytes", max_pixels)
    if is_url(source):
        raise offline_url_error(source)
    path = Path(source)
    if not path.exists():
        raise BadImageError(f"{path}: no such file")
    if path.is_dir():
        raise BadImageError(f"{path}: is a folder, not an image")
    if path.stat().st_size == 0:
        raise BadImageError(f"{path}: empty file (0 bytes)")
    return _open(path, str(path), max_pixels)


def _open(fp, name: str, max_pixels: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            # PIL warns (then raises) on bombs by its own limit; ours is checked below instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with _PIL_LIMIT_LOCK:  # the limit is PIL-global; only the header read happens under it
                saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
                try:
                    img = Image.open(fp)
                finally:
                    Image.MAX_IMAGE_PIXELS = saved
            _check_pixels(img.size, max_pixels, name)
            img.load()
            return _from_pil(img)  # inside the try: EXIF and mode conversion can fail too
    except UnidentifiedImageError:
        raise BadImageError(f"{name}: not an image, or a format EmoLens cannot read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadImageError(f"{name}: corrupt or truncated image ({exc})") from None


def _check_pixels(size: tuple[int, int], max_pixels: int, name: str) -> None:
    w, h = size
    if w * h > max_pixels:
        raise ImageTooLargeError(
            f"{name}: {w}x{h} is {w * h:,} pixels, above the limit of {max_pixels:,}; "
            "downscale it or raise EMOLENS_MAX_PIXELS"
        )
    if w == 0 or h == 0:
        raise BadImageError(f"{name}: image has no pixels ({w}x{h})")


def _from_pil(img: Image.Image) -> np.ndarray:
    img = ImageOps.exif_transpose(img) or img
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _from_array(np.asarray(img), None)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        # Composite on white: a transparent background reads as empty, not black.
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(canvas, rgba)
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def _from_array(arr: np.ndarray, max_pixels: int | None) -> np.ndarray:
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise BadImageError(f"array of shape {arr.shape} is not an image (expected HxW, HxWx3 or HxWx4)")
    if max_pixels is not None:
        _check_pixels((arr.shape[1], arr.shape[0]), max_pixels, "array")
    if arr.dtype != np.uint8:
        arr = _to_uint8(arr)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        alpha = arr[:, :, 3:4].astype(np.float32) / 255
        arr = (arr[:, :, :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(arr)


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    a = arr.astype(np.float64)
    if not np.isfinite(a).all():
        raise BadImageError("image array holds NaN or infinite values")
    if np.issubdtype(arr.dtype, np.floating):
        peak = 1.0 if a.max(initial=0) <= 1.0 else 255.0
    elif arr.dtype.itemsize >= 2:
        # 16-bit scans often use only 12 bits: stretch by the real peak, not the type's range.
        peak = max(float(a.max(initial=0)), 255.0)
    else:
        peak = 255.0
    return np.clip(a / peak * 255 + 0.5, 0, 255).astype(np.uint8)


def iter_image_paths(inputs: list[str | Path]) -> list[Path]:
    """Expand files, folders (recursively) and glob patterns into a sorted, de-duplicated list.

    A URL raises BadImageError at once: nothing is fetched, and nothing has been done yet."""
    import glob

    found: list[Path] = []
    for item in inputs:
        if is_url(item):
            raise offline_url_error(str(item))
        p = Path(item)
        if p.is_dir():
            found += sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():  # before the glob test: "photo[1].jpg" is a file name, not a pattern
            found.append(p)
        elif any(ch in str(item) for ch in "*?["):
            found += sorted(Path(g) for g in glob.glob(str(item), recursive=True) if Path(g).is_file())
        else:
            found.append(p)  # kept even if missing: the caller reports it as a bad input
    seen: set[Path] = set()
    return [p for p in found if not (p in seen or seen.add(p))]
