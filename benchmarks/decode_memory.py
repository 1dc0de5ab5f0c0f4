"""Memory to decode an image, per format: the peak of ``emolens.image.io.load_image`` in bytes per pixel.

Method: for each format the docs list (JPEG baseline and progressive, 4:2:0 and 4:4:4, grey and
CMYK; PNG 8- and 16-bit, grey, palette, RGB, RGBA, interlaced; WebP lossy, lossless and with
alpha; BMP; TIFF 8- and 16-bit, RGBA, CMYK, float; GIF; PPM/PGM) a SIDE x SIDE image (a smooth
gradient with noise, so that files are of realistic size) is written once; each is then decoded
in a fresh Python process that has already imported NumPy, PIL and OpenCV, and the growth of its
peak resident set (``VmHWM`` in ``/proc/self/status``: ``ru_maxrss`` would include the parent's
peak, inherited through fork) over the ``load_image`` call, divided by the pixel count, is the
cost; the result array (3 bytes per pixel) and the decoders' fixed buffers are included. The
decode runs with a pixel limit so high that nothing is refused, and the per-format budget (which
refuses files that would cost more than 4 bytes per pixel of the pixel limit plus 64 MiB) is
applied separately, at a pixel limit of the image's own size: "refused" there means such a file is
turned down before decoding; the cost it assumed (``emolens.image.io.decode_cost``, plus the file where
the decoder holds it whole: WebP, TIFF) is beside the measure.

Writes the table into ``benchmarks/results/hardening.md`` (its "Decoding memory per format"
section). Run: ``python benchmarks/decode_memory.py [--side 6000] [--only REGEX] [--src PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "hardening.md"
START, END = "<!-- decode-memory:start -->", "<!-- decode-memory:end -->"

PEAK = """
import json, os, sys
import cv2, numpy, PIL.Image  # imported before the measure: their code is not the decode's cost
from emolens.core.errors import ImageTooLargeError
from emolens.image.io import load_image
def peak():  # this process's own high-water mark (ru_maxrss would start from the parent's)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
path = sys.argv[1]
before = peak()
image = load_image(path, max_pixels=10**10)  # a limit so high that the budget never refuses: measured
grown = peak() - before
try:  # afterwards: opening some formats (WebP) reads the whole file, which must not hide in the baseline
    from emolens.image.io import _check_budget, decode_cost
except ImportError:  # sources from before the budget
    decode_cost = None
assumed, verdict = None, "decoded"
if decode_cost:
    with PIL.Image.open(path) as img:
        # the file counts for the formats whose decoders hold or map it whole, as in the budget
        held = os.path.getsize(path) if img.format in ("WEBP", "TIFF") else 0
        assumed = decode_cost(img) + held / (img.width * img.height)
        try:  # the budget at a pixel limit of the image's own size
            _check_budget(img, img.width * img.height, path, os.path.getsize(path))
        except ImageTooLargeError:
            verdict = "refused"
print(json.dumps({"bytes": grown, "pixels": image.shape[0] * image.shape[1], "assumed": assumed, "verdict": verdict}))
"""


def picture(side: int, channels: int, seed: int = 0) -> np.ndarray:
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    rng = np.random.default_rng(seed)
    planes = [(x * 200 + y * 40 + 8 * c) % 256 for c in range(channels)]
    arr = np.stack(planes, axis=-1) + rng.normal(0, 6, (side, side, channels)).astype(np.float32)
    return np.clip(arr, 0, 255).astype(np.uint8)


def cases(side: int) -> dict[str, tuple[str, callable]]:
    """name -> (suffix, writer(path))"""
    rgb = lambda: Image.fromarray(picture(side, 3))  # noqa: E731
    grey = lambda: Image.fromarray(picture(side, 1)[..., 0])  # noqa: E731
    rgba = lambda: Image.fromarray(picture(side, 4))  # noqa: E731
    g16 = lambda: Image.fromarray(picture(side, 1)[..., 0].astype(np.uint16) * 257)  # noqa: E731

    def png16(path: Path, channels: int) -> None:
        import cv2

        arr = picture(side, channels).astype(np.uint16) * 257
        cv2.imwrite(str(path), arr[..., ::-1] if channels == 3 else arr[..., [2, 1, 0, 3]])

    def tiff16_rgb(path: Path) -> None:
        import cv2

        cv2.imwrite(str(path), picture(side, 3).astype(np.uint16)[..., ::-1] * 257)

    return {
        "JPEG baseline 4:2:0": (".jpg", lambda p: rgb().save(p, quality=90)),
        "JPEG baseline 4:4:4": (".jpg", lambda p: rgb().save(p, quality=90, subsampling=0)),
        "JPEG progressive 4:2:0": (".jpg", lambda p: rgb().save(p, quality=90, progressive=True)),
        "JPEG progressive 4:4:4": (".jpg", lambda p: rgb().save(p, quality=90, progressive=True, subsampling=0)),
        "JPEG grey": (".jpg", lambda p: grey().save(p, quality=90)),
        "JPEG grey progressive": (".jpg", lambda p: grey().save(p, quality=90, progressive=True)),
        "JPEG CMYK": (".jpg", lambda p: rgb().convert("CMYK").save(p, quality=90)),
        "JPEG CMYK progressive": (".jpg", lambda p: rgb().convert("CMYK").save(p, quality=90, progressive=True)),
        "PNG 8-bit grey": (".png", lambda p: grey().save(p, compress_level=1)),
        "PNG 8-bit palette": (".png", lambda p: rgb().quantize(64).save(p, compress_level=1)),
        "PNG 8-bit RGB": (".png", lambda p: rgb().save(p, compress_level=1)),
        "PNG 8-bit RGBA": (".png", lambda p: rgba().save(p, compress_level=1)),
        "PNG 8-bit RGB interlaced": (".png", None),  # PIL cannot write interlaced PNG: made with OpenCV below
        "PNG 16-bit grey": (".png", lambda p: g16().save(p, compress_level=1)),
        "PNG 16-bit RGB": (".png", lambda p: png16(p, 3)),
        "PNG 16-bit RGBA": (".png", lambda p: png16(p, 4)),
        "WebP lossy": (".webp", lambda p: rgb().save(p, quality=80)),
        "WebP lossless": (".webp", lambda p: rgb().save(p, lossless=True, method=0)),
        "WebP with alpha": (".webp", lambda p: rgba().save(p, quality=80)),
        "BMP 24-bit": (".bmp", lambda p: rgb().save(p)),
        "BMP 32-bit": (".bmp", lambda p: rgba().save(p)),
        "TIFF 8-bit RGB": (".tif", lambda p: rgb().save(p)),
        "TIFF 8-bit RGBA": (".tif", lambda p: rgba().save(p)),
        "TIFF CMYK": (".tif", lambda p: rgb().convert("CMYK").save(p)),
        "TIFF 16-bit grey": (".tif", lambda p: g16().save(p)),
        "TIFF 16-bit RGB": (".tif", tiff16_rgb),
        "TIFF float grey": (
            ".tif",
            lambda p: Image.fromarray(picture(side, 1)[..., 0].astype(np.float32) / 255).save(p),
        ),
        "GIF": (".gif", lambda p: rgb().quantize(64).save(p)),
        "PPM": (".ppm", lambda p: rgb().save(p)),
        "PGM": (".pgm", lambda p: grey().save(p)),
    }


def write_interlaced_png(path: Path, side: int) -> None:
    """PIL and OpenCV write no interlaced PNG: libpng through a raw encoder is not at hand, so the
    rows are laid out by Adam7 here and zlib-compressed (filter 0 on every row)."""
    import struct
    import zlib

    arr = picture(side, 3)
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    z = zlib.compressobj(1)
    body = []
    for x0, y0, dx, dy in passes:
        sub = arr[y0::dy, x0::dx]
        if sub.size:
            for row in sub:
                body.append(z.compress(b"\x00" + row.tobytes()))
    body.append(z.flush())

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 1)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(body)) + chunk(b"IEND", b""))


def measure(src: Path, path: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    env.pop("EMOLENS_MAX_PIXELS", None)
    r = subprocess.run([sys.executable, "-c", PEAK, str(path)], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(r.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--side", type=int, default=6000, help="image side in pixels (default 6000: 36 MP)")
    ap.add_argument("--src", type=Path, default=ROOT / "src", help="the emolens sources to measure")
    ap.add_argument("--only", default="", help="a regular expression: only the formats it matches")
    args = ap.parse_args()
    print(__doc__.split("Writes")[0].strip(), flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="emolens-decode-") as tmp:
        for name, (suffix, write) in cases(args.side).items():
            if args.only and not re.search(args.only, name):
                continue
            path = Path(tmp) / (re.sub(r"\W+", "_", name) + suffix)
            write_interlaced_png(path, args.side) if write is None else write(path)
            got = measure(args.src, path)
            size = path.stat().st_size
            path.unlink()
            cell = f"{got['bytes'] / got['pixels']:.2f}" if "bytes" in got else f"error: {got['error']}"
            assumed = "" if got.get("assumed") is None else f"{got['assumed']:.2f}"
            verdict = got.get("verdict", "")
            rows.append((name, f"{size / 1e6:.1f}", cell, assumed, verdict))
            print(f"{name:28s} {size / 1e6:7.1f} MB  {cell:>8s}  assumed {assumed:>5s}  {verdict}", flush=True)
    table = [
        "| format | file (MB) | bytes per pixel, measured | bytes per pixel, the budget's estimate (file included for "
        "WebP, TIFF) | at a pixel limit "
        "of the image's size |",
        "|---|---:|---:|---:|---|",
        *[f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in rows],
    ]
    section = "\n".join(
        [
            START,
            "## Decoding memory per format",
            "",
            f"Measured by `python benchmarks/decode_memory.py --side {args.side}` ({args.side}x{args.side}, "
            f"{args.side * args.side / 1e6:.0f} MP per image) on {platform.machine()}, Python "
            f"{platform.python_version()}: the peak RSS growth of a fresh process "
            "over `load_image` (VmHWM), per pixel, result and decoders' fixed buffers included. The last column: "
            "the per-format budget (4 bytes per pixel of the pixel limit plus 64 MiB, estimated from the header "
            'before decoding) with a pixel limit equal to the image\'s size; "refused" files are turned down '
            "before any pixel is decoded. Before the budget (main at 3a4579e) every such file was decoded whatever it "
            "cost: the review measured 9.25 bytes per pixel for a progressive 4:4:4 JPEG (884 MB from a 1.5 MB file), "
            "7.25 for a CMYK JPEG and 7.3 for a 16-bit RGBA PNG; a BMP took 7.3 through OpenCV's RGB copy.",
            "",
            *table,
            END,
        ]
    )
    text = RESULTS.read_text() if RESULTS.exists() else ""
    if args.only and START in text:  # a partial run replaces its own rows and keeps the others
        old = {m.group(1): m.group(0) for m in re.finditer(r"^\| ([^|]+?) \| .*$", text.split(START)[1], re.M)}
        new = {r[0]: f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} |" for r in rows}
        names = [n for n in cases(args.side) if n in old or n in new]
        kept = [new.get(n) or old[n] for n in names]
        section = section.split("| format |")[0] + "\n".join(table[:2] + kept) + "\n" + END
    if START in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    RESULTS.write_text(text)
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
