"""Safe image decoding on real files: every bad input is a clear BadImageError, never a crash."""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emolens.core.errors import BadImageError, ImageTooLargeError
from emolens.image.io import iter_image_paths, load_image

EXAMPLE = Path(__file__).resolve().parents[1] / "src" / "emolens" / "assets" / "examples" / "astronaut.jpg"


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose IHDR is patched (CRC fixed) to claim width x height pixels."""
    data = bytearray(encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- bad inputs -----------------------------------------------------------------------------


def test_missing_path(tmp_path):
    missing = tmp_path / "nowhere.jpg"
    with pytest.raises(BadImageError, match="no such file") as exc:
        load_image(missing)
    assert str(missing) in str(exc.value)


def test_folder_path(tmp_path):
    with pytest.raises(BadImageError, match="is a folder") as exc:
        load_image(tmp_path)
    assert str(tmp_path) in str(exc.value)


def test_zero_byte_file(tmp_path):
    empty = write(tmp_path / "empty.jpg", b"")
    with pytest.raises(BadImageError, match=r"empty file \(0 bytes\)") as exc:
        load_image(empty)
    assert str(empty) in str(exc.value)


def test_zero_bytes():
    with pytest.raises(BadImageError, match="0 bytes"):
        load_image(b"")


def test_random_bytes_file(tmp_path):
    junk = write(tmp_path / "junk.png", np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(BadImageError, match="not an image") as exc:
        load_image(junk)
    assert str(junk) in str(exc.value)


def test_text_file_with_jpg_suffix(tmp_path):
    text = write(tmp_path / "notes.jpg", b"this is a shopping list, not a photo\n" * 20)
    with pytest.raises(BadImageError, match="not an image") as exc:
        load_image(text)
    assert str(text) in str(exc.value)


def test_jpeg_header_then_garbage():
    with pytest.raises(BadImageError, match="corrupt or truncated"):
        load_image(b"\xff\xd8\xff\xe0" + b"garbage!" * 100)


def test_truncated_jpeg_file(tmp_path):
    data = EXAMPLE.read_bytes()
    half = write(tmp_path / "half.jpg", data[: len(data) // 2])
    with pytest.raises(BadImageError, match="truncated") as exc:
        load_image(half)
    assert str(half) in str(exc.value)
    assert not isinstance(exc.value, ImageTooLargeError)


def test_truncated_jpeg_bytes():
    data = EXAMPLE.read_bytes()
    with pytest.raises(BadImageError, match="image bytes: corrupt or truncated"):
        load_image(data[: len(data) // 2])


def test_truncated_jpeg_as_lazily_opened_pil():
    # Image.open only reads the header; the truncation shows when load_image decodes it.
    data = EXAMPLE.read_bytes()
    img = Image.open(io.BytesIO(data[: len(data) // 2]))
    with pytest.raises(BadImageError, match="truncated"):
        load_image(img)


def test_pil_mode_that_cannot_convert():
    la = Image.new("LA", (4, 4), (100, 255)).convert("La")  # premultiplied alpha: PIL cannot make RGB of it
    with pytest.raises(BadImageError, match="unsupported mode"):
        load_image(la)


# --- the pixel limit ------------------------------------------------------------------------


def test_header_bomb_is_refused_from_the_header(tmp_path):
    bomb = write(tmp_path / "bomb.png", png_claiming(100_000, 100_000))  # 10 gigapixels in 69 bytes
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(ImageTooLargeError) as exc:
            load_image(bomb)  # the default limit: 100 megapixels
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 2.0
    assert peak < 5_000_000, peak  # no pixel buffer was allocated (30 GB if it had been)
    msg = str(exc.value)
    assert str(bomb) in msg and "100000x100000" in msg and "EMOLENS_MAX_PIXELS" in msg
    assert exc.value.http_status == 413 and isinstance(exc.value, BadImageError)


def test_header_bomb_is_refused_before_decoding():
    # The file holds 1 pixel of data. Decoding it would fail as truncated (shown with a limit
    # high enough to let it through), so an ImageTooLargeError proves no decoding was tried.
    bomb = png_claiming(3000, 3000)
    with pytest.raises(BadImageError, match="corrupt or truncated") as exc:
        load_image(bomb, max_pixels=10_000_000)
    assert not isinstance(exc.value, ImageTooLargeError)
    with pytest.raises(ImageTooLargeError, match="3000x3000"):
        load_image(bomb, max_pixels=1_000_000)


@pytest.mark.parametrize("kind", ["path", "bytes", "pil", "numpy"])
def test_small_pixel_limit_on_a_normal_image(kind):
    source = {
        "path": EXAMPLE,
        "bytes": EXAMPLE.read_bytes(),
        "pil": Image.open(EXAMPLE),
        "numpy": np.zeros((512, 512, 3), np.uint8),
    }[kind]
    with pytest.raises(ImageTooLargeError) as exc:
        load_image(source, max_pixels=512 * 512 - 1)
    msg = str(exc.value)
    # Exact numbers: a limit of a few thousand pixels must not read "0 megapixels above 0".
    assert "512x512" in msg and "262,144" in msg and "262,143" in msg, msg
    assert load_image(source, max_pixels=512 * 512).shape == (512, 512, 3)  # the limit itself is allowed


def test_pixel_limit_from_the_environment(emolens_home, monkeypatch):
    from emolens.workspace import get_settings

    """The setting reaches the decoder through the analyzer of the process's workspace."""
    from emolens import Analyzer

    monkeypatch.setenv("EMOLENS_MAX_PIXELS", "1000")
    get_settings.cache_clear()
    with pytest.raises(ImageTooLargeError, match="above the limit of 1,000"):
        Analyzer().analyze(EXAMPLE)


# --- formats and modes ----------------------------------------------------------------------


def test_exif_rotation_is_applied():
    stored = np.zeros((20, 40, 3), np.uint8)  # 40 wide, 20 high: left half red, right half blue
    stored[:, :20] = (255, 0, 0)
    stored[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    out = load_image(encode(Image.fromarray(stored), "JPEG", exif=exif, quality=95))
    assert out.shape == (40, 20, 3)
    assert out[5, 10, 0] > 200 and out[5, 10, 2] < 50  # the left half is now on top
    assert out[35, 10, 2] > 200 and out[35, 10, 0] < 50


def test_grayscale_l():
    gray = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (8, 1))
    out = load_image(encode(Image.fromarray(gray, "L"), "PNG"))
    assert out.shape == (8, 25, 3) and out.dtype == np.uint8
    assert (out == gray[:, :, None]).all()


def test_grayscale_with_alpha_la():
    la = np.zeros((4, 6, 2), np.uint8)
    la[:, :3] = (60, 255)  # opaque dark grey
    la[:, 3:] = (60, 0)  # fully transparent
    out = load_image(encode(Image.fromarray(la, "LA"), "PNG"))
    assert out.shape == (4, 6, 3)
    assert (out[:, :3] == 60).all() and (out[:, 3:] == 255).all()


def test_rgba_transparent_becomes_white():
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[:, :2] = (255, 0, 0, 255)  # opaque red
    rgba[:, 2:4] = (0, 0, 0, 0)  # transparent black
    rgba[:, 4:] = (0, 0, 0, 128)  # half-transparent black
    out = load_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert (out[:, :2] == (255, 0, 0)).all()
    assert (out[:, 2:4] == 255).all()
    assert (np.abs(out[:, 4:].astype(int) - 127) <= 1).all()


def test_16_bit_png_with_12_bit_values_is_stretched():
    values = np.linspace(0, 4095, 64 * 64).reshape(64, 64).astype(np.uint16)  # a 12-bit scan in 16 bits
    data = encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out = load_image(data)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert out.min() == 0 and out.max() == 255  # stretched by the real peak, not by 65535
    assert (np.diff(out[..., 0].ravel().astype(int)) >= 0).all()  # order kept
    mid = out[..., 0].ravel()[len(values.ravel()) // 2]
    assert 120 <= mid <= 135


def test_cmyk_jpeg():
    data = encode(Image.new("CMYK", (20, 10), (0, 255, 255, 0)), "JPEG", quality=95)  # pure red in ink
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = load_image(data)
    assert out.shape == (10, 20, 3)
    r, g, b = out[5, 10].astype(int)
    assert r > 200 and g < 60 and b < 60


def palette_image() -> Image.Image:
    img = Image.new("P", (10, 4), 0)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))  # index 0 red, 1 blue
    img.paste(1, (5, 0, 10, 4))
    return img


def test_palette_without_transparency():
    out = load_image(encode(palette_image(), "PNG"))
    assert (out[:, :5] == (255, 0, 0)).all() and (out[:, 5:] == (0, 0, 255)).all()


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparency(fmt):
    data = encode(palette_image(), fmt, transparency=0)  # index 0 (red) is transparent
    assert Image.open(io.BytesIO(data)).info.get("transparency") == 0
    out = load_image(data)
    assert (out[:, :5] == 255).all() and (out[:, 5:] == (0, 0, 255)).all()


# --- numpy, PIL and bytes inputs ------------------------------------------------------------


def test_numpy_rgb_uint8_is_taken_as_is():
    arr = np.random.default_rng(1).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    out = load_image(arr)
    assert out.dtype == np.uint8 and out.flags.c_contiguous and (out == arr).all()


def test_numpy_non_contiguous_view():
    arr = np.random.default_rng(2).integers(0, 256, (20, 20, 3), dtype=np.uint8)[::2, ::-1]
    out = load_image(arr)
    assert out.flags.c_contiguous and (out == arr).all()


@pytest.mark.parametrize("shape", [(6, 5), (6, 5, 1)])
def test_numpy_grayscale(shape):
    arr = np.arange(30, dtype=np.uint8).reshape(shape) * 8
    out = load_image(arr)
    assert out.shape == (6, 5, 3)
    assert (out == arr.reshape(6, 5)[:, :, None]).all()


def test_numpy_rgba():
    arr = np.zeros((3, 4, 4), np.uint8)
    arr[:, :2] = (10, 20, 30, 255)
    arr[:, 2:] = (10, 20, 30, 0)
    out = load_image(arr)
    assert out.shape == (3, 4, 3)
    assert (out[:, :2] == (10, 20, 30)).all() and (out[:, 2:] == 255).all()


def test_numpy_float_in_unit_range():
    arr = np.stack([np.zeros((4, 4)), np.full((4, 4), 0.5), np.ones((4, 4))], axis=2)
    out = load_image(arr.astype(np.float32))
    assert out.dtype == np.uint8
    assert (out[..., 0] == 0).all() and (out[..., 1] == 128).all() and (out[..., 2] == 255).all()


def test_numpy_float_in_byte_range():
    out = load_image(np.full((4, 4, 3), 200.0))
    assert (out == 200).all()


def test_numpy_uint16_12_bit():
    arr = np.array([[0, 1024], [2048, 4095]], dtype=np.uint16)
    out = load_image(arr)[..., 0]
    assert out[0, 0] == 0 and out[1, 1] == 255
    assert abs(int(out[1, 0]) - 128) <= 1 and abs(int(out[0, 1]) - 64) <= 1


def test_numpy_bool():
    arr = np.array([[True, False], [False, True]])
    out = load_image(arr)
    assert out.dtype == np.uint8 and (out[..., 0] == np.array([[255, 0], [0, 255]])).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_numpy_non_finite(bad):
    arr = np.full((4, 4, 3), 0.5)
    arr[1, 2, 0] = bad
    with pytest.raises(BadImageError, match="NaN or infinite"):
        load_image(arr)


@pytest.mark.parametrize("shape", [(5,), (4, 4, 2), (4, 4, 5), (2, 4, 4, 3), ()])
def test_numpy_wrong_shape(shape):
    with pytest.raises(BadImageError, match="is not an image") as exc:
        load_image(np.zeros(shape, np.uint8))
    assert str(shape) in str(exc.value)


def test_pil_input_modes():
    rgb = np.random.default_rng(3).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    assert (load_image(Image.fromarray(rgb)) == rgb).all()
    assert (
        load_image(Image.fromarray(rgb).convert("L")) == np.asarray(Image.fromarray(rgb).convert("L"))[..., None]
    ).all()
    rgba = Image.new("RGBA", (3, 3), (0, 0, 0, 0))
    assert (load_image(rgba) == 255).all()
    assert load_image(Image.new("1", (5, 3), 1)).shape == (3, 5, 3)


def test_path_bytes_bytearray_pil_agree():
    ref = load_image(EXAMPLE)
    assert ref.shape == (512, 512, 3) and ref.dtype == np.uint8
    data = EXAMPLE.read_bytes()
    for source in (str(EXAMPLE), data, bytearray(data), Image.open(EXAMPLE)):
        assert (load_image(source) == ref).all()


# --- iter_image_paths -----------------------------------------------------------------------


def test_iter_image_paths_folder_glob_and_missing(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    for name in ("b.jpg", "a.PNG", "notes.txt", "sub/c.jpeg", "sub/deeper/d.webp", "sub/e.csv"):
        (tmp_path / name).write_bytes(b"x")
    found = iter_image_paths([tmp_path])
    assert found == [
        tmp_path / "a.PNG",
        tmp_path / "b.jpg",
        tmp_path / "sub" / "c.jpeg",
        tmp_path / "sub/deeper/d.webp",
    ]

    assert iter_image_paths([str(tmp_path / "*.jpg")]) == [tmp_path / "b.jpg"]
    assert iter_image_paths([str(tmp_path / "**" / "*.jp*g")]) == [tmp_path / "b.jpg", tmp_path / "sub" / "c.jpeg"]
    assert iter_image_paths([str(tmp_path / "*.gif")]) == []  # a glob that matches nothing adds nothing

    missing = tmp_path / "missing.jpg"  # kept, so the caller reports it instead of dropping it silently
    assert iter_image_paths([missing]) == [missing]
    with pytest.raises(BadImageError, match="no such file"):
        load_image(iter_image_paths([missing])[0])

    # De-duplicated, first occurrence kept.
    assert iter_image_paths([tmp_path / "b.jpg", str(tmp_path / "*.jpg"), tmp_path]) == [
        tmp_path / "b.jpg",
        tmp_path / "a.PNG",
        tmp_path / "sub" / "c.jpeg",
        tmp_path / "sub/deeper/d.webp",
    ]


def test_iter_image_paths_literal_name_with_brackets(tmp_path):
    odd = tmp_path / "photo[1].jpg"
    odd.write_bytes(b"x")
    (tmp_path / "photo1.jpg").write_bytes(b"x")
    assert iter_image_paths([odd]) == [odd]  # an existing file is a file, not a glob pattern
