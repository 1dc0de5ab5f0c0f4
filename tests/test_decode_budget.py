"""Decoding memory per format: files whose decoder needs more than the budget (4 bytes per pixel
of the pixel limit, plus 64 MiB) are refused from their header, before any pixel is decoded; the
rest decode within it. Only the documented formats are read."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import emolens.image.io as eio
from emolens.core.errors import BadImageError, ImageTooLargeError
from emolens.image.io import decode_cost, load_image

SRC = Path(eio.__file__).resolve().parents[1]
SIDE = 2100  # 4.4 MP: above LEAN_MIN_PIXELS, so the large-image path is the one judged


def picture(side: int = SIDE, channels: int = 3) -> np.ndarray:
    y, x = np.mgrid[0:side, 0:side]
    planes = [((x * 7 + y * 3 + 40 * c) % 256) for c in range(channels)]
    return np.stack(planes, axis=-1).astype(np.uint8)


def jpeg(mode: str = "RGB", **options) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(picture()).convert(mode).save(buf, "JPEG", quality=85, **options)
    return buf.getvalue()


def png16(channels: int) -> bytes:
    import cv2

    ok, data = cv2.imencode(".png", picture(channels=channels).astype(np.uint16) * 257)
    assert ok
    return data.tobytes()


def png8(channels: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(picture(channels=channels)).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


CASES = {  # name: (bytes, bytes per pixel the budget counts, refused when the budget is 4 B/px of the image)
    "JPEG baseline 4:2:0": (lambda: jpeg(), 3.0, False),
    "JPEG baseline 4:4:4": (lambda: jpeg(subsampling=0), 3.0, False),
    "JPEG progressive 4:2:0": (lambda: jpeg(progressive=True), 6.0, True),
    "JPEG progressive 4:4:4": (lambda: jpeg(progressive=True, subsampling=0), 9.0, True),
    "JPEG CMYK": (lambda: jpeg("CMYK"), 7.0, True),
    "JPEG CMYK progressive": (lambda: jpeg("CMYK", progressive=True), 12.0, True),
    "PNG 8-bit RGBA": (lambda: png8(4), 4.0, False),
    "PNG 16-bit RGB": (lambda: png16(3), 3.0, False),
    "PNG 16-bit RGBA": (lambda: png16(4), 7.0, True),
}


@pytest.mark.parametrize("name", CASES)
def test_the_budget_decides_per_format_from_the_header(name, monkeypatch):
    """With no fixed allowance and a pixel limit of the image's own size, the budget is exactly
    4 bytes per pixel: what costs more is refused before decoding, the rest decodes as before."""
    make, cost, refused = CASES[name]
    data = make()
    with Image.open(io.BytesIO(data)) as img:
        assert decode_cost(img) == pytest.approx(cost), name
    monkeypatch.setattr(eio, "BUDGET_EXTRA_BYTES", 0)
    if refused:
        with pytest.raises(ImageTooLargeError, match=r"needs about \d+ MB to decode .* above the \d+ MB budget"):
            load_image(data, max_pixels=SIDE * SIDE)
        assert load_image(data, max_pixels=SIDE * SIDE * 4).shape == (SIDE, SIDE, 3)  # a higher limit: decoded
    else:
        assert load_image(data, max_pixels=SIDE * SIDE).shape == (SIDE, SIDE, 3)


def progressive_header(width: int, height: int) -> bytes:
    """A small progressive 4:4:4 JPEG whose frame header claims ``width`` x ``height``: PIL reads the
    header only, so the budget can be tried at the review's size without the memory."""
    data = bytearray(jpeg(progressive=True, subsampling=0))
    at = data.index(b"\xff\xc2")  # SOF2: length (2), precision (1), height (2), width (2)
    data[at + 5 : at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_the_reviews_progressive_jpeg_is_refused_at_the_default_limit():
    """884 MB from a 1.5 MB file: a 96 MP progressive 4:4:4 JPEG needs 9 bytes per pixel."""
    with pytest.raises(ImageTooLargeError, match="progressive JPEG of 10000x9600 needs about 864 MB"):
        load_image(progressive_header(10_000, 9_600), max_pixels=100_000_000)
    smaller = progressive_header(6_000, 4_000)  # 216 MB: within the 464 MB budget
    with Image.open(io.BytesIO(smaller)) as img:
        eio._check_budget(img, 100_000_000, "smaller.jpg", len(smaller))


PEAK = """
import json, sys
import cv2, numpy, PIL.Image
from emolens.image.io import load_image
def peak():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
before = peak()
image = load_image(sys.argv[1], max_pixels=100_000_000)
print(json.dumps({"grown": peak() - before, "pixels": image.shape[0] * image.shape[1]}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_a_large_bmp_decodes_within_4_bytes_per_pixel(tmp_path):
    """OpenCV's RGB reading of a BMP made a whole-image copy (7.3 bytes per pixel)."""
    path = tmp_path / "big.bmp"
    Image.fromarray(np.zeros((5000, 5000, 3), np.uint8)).save(path)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run([sys.executable, "-c", PEAK, str(path)], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["grown"] <= 4 * got["pixels"] + 64 * 2**20, f"{got['grown'] / got['pixels']:.2f} bytes per pixel"


def test_a_bmp_decodes_to_the_same_pixels_on_both_paths(monkeypatch):
    rgb = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "BMP")
    monkeypatch.setattr(eio, "LEAN_MIN_PIXELS", 0)
    assert np.array_equal(load_image(buf.getvalue()), rgb)


@pytest.mark.parametrize(("fmt", "suffix"), [("TGA", ".tga"), ("PCX", ".pcx"), ("ICO", ".ico"), ("SGI", ".sgi")])
def test_undocumented_formats_are_refused_by_name(fmt, suffix, tmp_path):
    path = tmp_path / f"picture{suffix}"
    Image.fromarray(picture(32)).save(path, fmt)
    with pytest.raises(BadImageError, match=f"{fmt} is not supported.*Supported: JPEG, PNG"):
        load_image(path)
