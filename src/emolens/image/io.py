"""Safe image decoding: every input becomes an RGB uint8 array (H, W, 3), or a BadImageError.

Accepts a path, raw bytes, a PIL image or a numpy array (numpy arrays are taken as RGB, or
grayscale when 2-D). The pixel count is checked from the header before any pixel is decoded,
so a decompression bomb costs nothing.

Memory: decoding costs about 4 bytes per pixel or less (the RGB result is 3) plus the file and a
few MB. Large 8-bit PNG, JPEG and WebP files are decoded by OpenCV straight into the result (PIL
keeps RGB in 4 bytes per pixel, so PIL plus the result would be 7); other images go from PIL to
the result in strips of rows, never as a whole-image float copy. Some files cost more whatever
the decoder (a progressive JPEG keeps every DCT coefficient, 2 bytes a sample; CMYK and 16-bit
RGBA pass through PIL's 4 bytes): ``decode_cost`` tells from the header, before any pixel is
decoded, and a file whose cost would pass the budget (4 bytes per pixel of the pixel limit, plus
64 MiB) is refused.

Only the formats the docs list are read (``FORMATS``); PIL's others (TGA, PCX, ICO...) are refused.
"""

from __future__ import annotations

import io
import os
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Union

import numpy as np
from PIL import (  # noqa: F401  the plugins of FORMATS, registered (PIL loads some lazily)
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,
    PpmImagePlugin,
    TiffImagePlugin,
    UnidentifiedImageError,
    WebPImagePlugin,
)

from emolens.core.errors import BadImageError, ImageTooLargeError
from emolens.core.settings import Settings

ImageInput = Union[str, Path, bytes, bytearray, Image.Image, np.ndarray]

_PIL_LIMIT_LOCK = threading.Lock()

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jfif"}
SUPPORTED = "JPEG, PNG, WebP, BMP, TIFF, GIF, PPM/PGM"
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "PPM")  # PIL's openers (JPEG opens MPO too)
LEAN_MIN_PIXELS = 4_000_000  # above this, decode with OpenCV straight into the result (see the module doc)
BUDGET_BYTES_PER_PIXEL = 4  # decoding may cost this much per pixel of the pixel limit...
BUDGET_EXTRA_BYTES = 64 << 20  # ...plus this (decoders' buffers; a small limit still reads ordinary photos)
_LEAN_FORMATS = {"JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF", "PPM"}
_LEAN_MODES = {"1", "L", "P", "RGB", "RGBA", "LA", "PA"}
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I", "F")  # more than 8 bits per sample: stretched to 8
_STRIP = 1 << 20  # values per strip of a conversion: a few MB of temporaries at most


def is_url(item: object) -> bool:
    """``https://...`` and the like: Path() would quietly mangle them into ``https:/...``."""
    return isinstance(item, str) and "://" in item and item.split("://", 1)[0].isalpha()


def offline_url_error(url: str) -> BadImageError:
    return BadImageError(f"{url}: EmoLens is offline and never fetches URLs: download the file and pass its path")


MAX_PIXELS = Settings.model_fields["max_pixels"].default  # the setting's default


def load_image(source: ImageInput, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode ``source`` to an RGB uint8 array, applying EXIF orientation.

    ``max_pixels`` refuses larger images (the analyzers, video and the server pass the
    ``max_pixels`` setting of their workspace)."""
    if isinstance(source, np.ndarray):
        return _from_array(source, max_pixels)
    if isinstance(source, Image.Image):
        _check_pixels(source.size, max_pixels, "image")
        try:  # a lazily opened PIL image decodes here, so a truncated file fails here
            return _from_pil(source, "image")
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


def _open(fp: io.BytesIO | Path, name: str, max_pixels: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            # PIL warns (then raises) on bombs by its own limit; ours is checked below instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with _PIL_LIMIT_LOCK:  # the limit is PIL-global; only the header read happens under it
                saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
                try:
                    img = Image.open(fp, formats=FORMATS)
                finally:
                    Image.MAX_IMAGE_PIXELS = saved
            _check_pixels(img.size, max_pixels, name)
            _check_budget(img, max_pixels, name, _size(fp))
            lean = _decode_lean(fp, img) if _lean(img) else None
            if lean is not None:
                img.close()
                return lean
            img.load()
            return _from_pil(img, name, owned=True)  # inside the try: EXIF and mode conversion can fail too
    except UnidentifiedImageError:
        raise BadImageError(f"{name}: not an image, or a format EmoLens cannot read{_format_hint(fp)}") from None
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


def decode_cost(img: Image.Image) -> float:
    """Bytes per pixel that decoding ``img`` (opened, not yet loaded) costs at its peak, the RGB
    result included, on the path ``load_image`` will take; from the header alone. Measured per
    format by ``benchmarks/decode_memory.py``."""
    quarter = _orientation(img) in (5, 6, 7, 8)
    coefficients = _jpeg_coefficients(img)  # a progressive JPEG's whole-image DCT buffer
    if _lean(img):
        out = 4 if _has_alpha(img) else 3
        if img.format == "TIFF":  # libtiff reads a strip (or tile) whole, and OpenCV converts a copy of it
            out += 2 * _tiff_unit_bytes(img) / (img.width * img.height) + (1 if _sixteen_bit(img) else 0)
        elif img.format == "WEBP" and _has_alpha(img):
            out += 6  # measured: libwebp's RGBA output and OpenCV's copy of it (PIL's path costs 17)
        elif img.format == "WEBP" and _webp_lossless(img):
            out += 4  # libwebp decodes lossless images through a 32-bit ARGB buffer
        return max(out + coefficients, 6 if quarter else out)
    pil = 1 if img.mode in ("1", "L", "P") else 2 if img.mode.startswith("I;16") else 4
    peak = max(pil + 1, 4) if img.mode in _WIDE_MODES else pil + 3
    return max(peak, pil + coefficients, 2 * pil if quarter else 0)


def _jpeg_coefficients(img: Image.Image) -> float:
    """A progressive JPEG's decoder keeps all its DCT coefficients until the last scan: 2 bytes a
    sample of every component at its own resolution (4:4:4 RGB: 6 bytes a pixel; 4:2:0: 3)."""
    if img.format not in ("JPEG", "MPO") or not img.info.get("progressive"):
        return 0.0
    layers = getattr(img, "layer", None) or []
    if not layers:
        return 2.0 * len(img.getbands())
    h_max, v_max = max(h for _, h, _, _ in layers), max(v for _, _, v, _ in layers)
    return 2.0 * sum(h * v for _, h, v, _ in layers) / (h_max * v_max)


def _tiff_unit_bytes(img: Image.Image) -> int:
    """Bytes of a TIFF's largest strip or tile, decoded: a file written as one strip holds the image."""
    tags = getattr(img, "tag_v2", {})
    tile_w, tile_h = tags.get(322), tags.get(323)
    rows = min(int(tags.get(278, img.height) or img.height), img.height)
    unit = int(tile_w) * int(tile_h) if tile_w and tile_h else rows * img.width
    return unit * len(img.getbands()) * (2 if _sixteen_bit(img) else 1)


def _webp_lossless(img: Image.Image) -> bool:
    fp = getattr(img, "fp", None)
    try:
        at = fp.tell()
        fp.seek(12)
        head = fp.read(4096)  # the chunk list: VP8X, ICCP, ANIM..., then VP8 (lossy) or VP8L (lossless)
        fp.seek(at)
    except (AttributeError, OSError, ValueError):
        return True  # cannot tell: assume the dearer
    return b"VP8L" in head


def _check_budget(img: Image.Image, max_pixels: int, name: str, file_bytes: int) -> None:
    budget = BUDGET_BYTES_PER_PIXEL * max_pixels + BUDGET_EXTRA_BYTES
    cost = decode_cost(img)
    # OpenCV reads a whole WebP file into memory, and libtiff maps the file: theirs counts too.
    need = cost * img.width * img.height + (file_bytes if img.format in ("WEBP", "TIFF") else 0)
    if need > budget:
        kind = f"a progressive {img.format} " if _jpeg_coefficients(img) else f"a {img.mode} {img.format} "
        raise ImageTooLargeError(
            f"{name}: {kind}of {img.width}x{img.height} needs about {need / 1e6:,.0f} MB to decode "
            f"({cost:.1f} bytes per pixel), above the {budget / 1e6:,.0f} MB budget (4 bytes per pixel of the "
            f"{max_pixels:,}-pixel limit, plus 64 MiB); save it as a baseline 8-bit RGB JPEG or PNG, or downscale it"
        )


def _sixteen_bit(img: Image.Image) -> bool:
    """PIL reads 16-bit PNG and TIFF colour images as 8-bit modes; the tile's raw mode tells."""
    return any(";16" in str(t.args[0] if isinstance(t.args, tuple) else t.args) for t in img.tile[:1])


def _format_hint(fp: io.BytesIO | Path) -> str:
    """Why an image was not recognised, when its first bytes say what it is; else the formats read."""
    try:
        if isinstance(fp, io.BytesIO):
            head = fp.getvalue()[:16]
        else:
            with fp.open("rb") as f:
                head = f.read(16)
    except OSError:
        head = b""
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"hevc", b"mif1", b"msf1", b"heim", b"avif"):
        kind = "AVIF" if head[8:12] == b"avif" else "HEIC/HEIF"
        return f" ({kind} is not supported; convert it to JPEG or PNG first. Supported: {SUPPORTED})"
    other = _other_format(fp)
    if other:
        return f" ({other} is not supported; convert it to JPEG or PNG first. Supported: {SUPPORTED})"
    return f" (supported: {SUPPORTED})"


def _other_format(fp: io.BytesIO | Path) -> str | None:
    """The name of a format PIL knows but EmoLens does not read (TGA, PCX...), from the header only."""
    try:
        with _PIL_LIMIT_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                if isinstance(fp, io.BytesIO):
                    fp.seek(0)
                with Image.open(fp) as img:  # the header only: nothing is decoded
                    return img.format
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except Exception:  # not an image at all, or a header PIL cannot parse either
        return None


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)


def _lean(img: Image.Image) -> bool:
    return (
        img.format in (("PNG", "WEBP") if _has_alpha(img) else _LEAN_FORMATS)  # TIFF alpha may be premultiplied
        and img.mode in _LEAN_MODES
        # OpenCV keeps 16 bits with the alpha channel (8 bytes a pixel): PIL is cheaper then
        and not (_has_alpha(img) and _sixteen_bit(img))
        and img.width * img.height >= LEAN_MIN_PIXELS
        and not getattr(img, "is_animated", False)
    )


def _decode_lean(fp: io.BytesIO | Path, img: Image.Image) -> np.ndarray | None:
    """Decode with OpenCV straight into the RGB result (3 bytes per pixel; 4 while an alpha
    channel is composited). None when OpenCV cannot decode it: PIL then does."""
    import cv2

    if img.format in ("JPEG", "MPO") and _tail(fp) != b"\xff\xd9":
        return None  # libjpeg fills a truncated file with grey without an error; PIL reports it
    alpha = _has_alpha(img)
    # RGB straight from the decoder: an in-place cvtColor would make a whole-image copy. OpenCV's BMP
    # reader makes that copy itself for RGB: BGR it is, swapped here row by row.
    bgr = img.format == "BMP"
    color = cv2.IMREAD_COLOR if bgr else cv2.IMREAD_COLOR_RGB
    flags = (cv2.IMREAD_UNCHANGED if alpha else color) | cv2.IMREAD_IGNORE_ORIENTATION
    dst = np.empty((img.height, img.width, 4 if alpha else 3), np.uint8)
    try:
        with _as_file(fp) as path:
            # imread into a buffer of ours: imdecode's result would be copied once more into NumPy.
            arr = cv2.imread(path, dst, flags)
    except (cv2.error, OSError):  # a layout OpenCV reads differently (e.g. grey + alpha TIFF): PIL decides
        return None
    if arr is None or arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape != dst.shape:
        return None
    if alpha:
        arr = _composite_bgra_in_place(arr)
    elif bgr:
        for row in arr:
            row[:] = row[:, ::-1]
    return _orient(arr, _orientation(img))


def _size(fp: io.BytesIO | Path) -> int:
    return fp.getbuffer().nbytes if isinstance(fp, io.BytesIO) else fp.stat().st_size


def _tail(fp: io.BytesIO | Path) -> bytes:
    if isinstance(fp, io.BytesIO):
        return bytes(fp.getbuffer()[-2:])
    with fp.open("rb") as f:
        f.seek(-2, os.SEEK_END)
        return f.read(2)


@contextmanager
def _as_file(fp: io.BytesIO | Path) -> Iterator[str]:
    """A path for ``fp``: the file itself, or the bytes in an anonymous in-memory file (Linux) or
    a private temporary file."""
    if isinstance(fp, Path):
        yield str(fp)
        return
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("emolens-image")
        try:
            os.write(fd, fp.getbuffer())
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.NamedTemporaryFile(prefix="emolens-", suffix=".img") as f:  # created 0600
        f.write(fp.getbuffer())
        f.flush()
        yield f.name


def _composite_bgra_in_place(arr: np.ndarray) -> np.ndarray:
    """BGRA → RGB on white, written over the front of the same buffer, strip by strip: output
    rows never reach input rows not yet read (3 bytes per pixel out, 4 in)."""
    h, w = arr.shape[:2]
    flat = arr.reshape(-1)
    rows = max(1, _STRIP // (8 * w))  # an eighth of a strip: its 16-bit temporaries stay near 4 MB
    for y0 in range(0, h, rows):
        y1 = min(h, y0 + rows)
        px = flat[y0 * w * 4 : y1 * w * 4].reshape(-1, 4)
        alpha = px[:, 3:4].astype(np.uint16)
        # c·a/255 + 255·(1 − a/255) = 255 − (255 − c)·a/255, rounded, in 16-bit integers
        dark = ((255 - px[:, 2::-1]).astype(np.uint16) * alpha + 127) // 255
        flat[y0 * w * 3 : y1 * w * 3] = (255 - dark).astype(np.uint8).reshape(-1)
    return flat[: h * w * 3].reshape(h, w, 3)


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation as ``ImageOps.exif_transpose`` does. Flips swap rows in place;
    a quarter turn needs a second buffer."""
    h = arr.shape[0]
    if orientation in (3, 4):  # upside down
        for y in range(h // 2):
            top = arr[y].copy()
            arr[y] = arr[h - 1 - y]
            arr[h - 1 - y] = top
    if orientation in (2, 3):  # mirrored
        for y in range(h):
            arr[y] = arr[y, ::-1].copy()
    if orientation in (5, 6, 7, 8):
        t = arr.transpose(1, 0, 2)
        turned = {5: t, 6: t[:, ::-1], 7: t[::-1, ::-1], 8: t[::-1]}[orientation]
        return np.ascontiguousarray(turned)
    return arr


def _orientation(img: Image.Image) -> int:
    # PIL reads a PNG's eXIf chunk after the pixels by decoding them all: only a chunk before them counts.
    if img.format == "PNG" and "exif" not in img.info:
        return 1
    return int(img.getexif().get(0x0112, 1) or 1)


def _from_pil(img: Image.Image, name: str = "image", owned: bool = False) -> np.ndarray:
    """``owned``: the image is ours to change (not the caller's), so it is turned in place."""
    if img.getexif().get(0x0112, 1) not in (None, 1):  # exif_transpose copies even when nothing turns
        if owned:
            ImageOps.exif_transpose(img, in_place=True)
        else:
            img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode in _WIDE_MODES:
        grey = _wide_to_uint8(img, name)
        if owned:
            img.close()  # free the wide pixels before the RGB result is made: 4 bytes per pixel at most
        return _grey_to_rgb(grey)
    alpha = _has_alpha(img)
    w, h = img.size
    out = np.empty((h, w, 3), np.uint8)
    rows = max(1, _STRIP // (4 * w))
    for y0 in range(0, h, rows):  # strip by strip: PIL's copy plus the result, no whole-image temporaries
        part = img.crop((0, y0, w, min(h, y0 + rows)))
        if alpha:
            # Composite on white: a transparent background reads as empty, not black.
            rgba = part.convert("RGBA")
            part = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        out[y0 : y0 + rows] = np.asarray(part.convert("RGB"), dtype=np.uint8)
    return out


def _wide_to_uint8(img: Image.Image, name: str) -> np.ndarray:
    """A 16-bit, 32-bit or float PIL image as uint8 grey, read in strips (the peak first)."""
    w, h = img.size
    rows = max(1, _STRIP // w)
    strips = [(0, y0, w, min(h, y0 + rows)) for y0 in range(0, h, rows)]
    peak = 0.0
    for box in strips:
        part = np.asarray(img.crop(box))
        _check_finite(part, name)
        peak = max(peak, float(part.max(initial=0)))
    kind = np.dtype(np.float32 if img.mode == "F" else np.uint16)
    peak = _peak(kind, peak)
    out = np.empty((h, w), np.uint8)
    for box in strips:
        out[box[1] : box[3]] = _scale(np.asarray(img.crop(box)), peak)
    return out


def _peak(dtype: np.dtype, top: float) -> float:
    if np.issubdtype(dtype, np.floating):
        return 1.0 if top <= 1.0 else 255.0
    if dtype.itemsize >= 2:
        # 16-bit scans often use only 12 bits: stretch by the real peak, not the type's range.
        return max(top, 255.0)
    return 255.0


def _scale(part: np.ndarray, peak: float) -> np.ndarray:
    return np.clip(part.astype(np.float32) * np.float32(255 / peak) + 0.5, 0, 255).astype(np.uint8)


def _check_finite(part: np.ndarray, name: str) -> None:
    if np.issubdtype(part.dtype, np.floating) and not np.isfinite(part).all():
        raise BadImageError(
            f"{name}: holds NaN or infinite values (a float image, e.g. a TIFF of measurements?); "
            "save it as an 8- or 16-bit image"
        )


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    out = np.empty((*grey.shape, 3), np.uint8)
    out[...] = grey[:, :, None]
    return out


def _from_array(arr: np.ndarray, max_pixels: int | None) -> np.ndarray:
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise BadImageError(f"array of shape {arr.shape} is not an image (expected HxW, HxWx3 or HxWx4)")
    if max_pixels is not None:
        _check_pixels((arr.shape[1], arr.shape[0]), max_pixels, "array")
    if arr.dtype != np.uint8:
        arr = _to_uint8(arr)
    if arr.ndim == 2:
        return _grey_to_rgb(arr)
    if arr.shape[2] == 1:
        return _grey_to_rgb(arr[:, :, 0])
    if arr.shape[2] == 4:
        alpha = arr[:, :, 3:4].astype(np.float32) / 255
        arr = (arr[:, :, :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(arr)


def _to_uint8(arr: np.ndarray, name: str = "image array") -> np.ndarray:
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    flat = arr.reshape(-1)
    top = 0.0
    for i in range(0, flat.size, _STRIP):  # in strips: never a whole-image float copy
        part = flat[i : i + _STRIP]
        _check_finite(part, name)
        top = max(top, float(part.max(initial=0)))
    peak = _peak(arr.dtype, top)
    out = np.empty(arr.shape, np.uint8)
    out_flat = out.reshape(-1)
    for i in range(0, flat.size, _STRIP):
        out_flat[i : i + _STRIP] = _scale(flat[i : i + _STRIP], peak)
    return out


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
