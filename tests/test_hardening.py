"""The attack-and-fault review made repeatable: each defect it found, tried again as an outsider
would (hostile files, API abuse, races, symlinks, logs, telemetry), through the Python API, the
CLI and the real server on loopback."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from emolens.core.errors import BadImageError
from emolens.image.io import load_image
from emolens.workspace import Workspace
from test_serve import ASTRONAUT, assert_error, png, running_server

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SRC = Path(__import__("emolens").__file__).resolve().parents[1]  # the sources under test, for subprocesses


def write_png(path: Path, width: int, height: int, color_type: int, bit_depth: int = 8) -> Path:
    """A real, all-black PNG of any size, written row by row (a 100-megapixel one costs no memory)."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    row = b"\x00" * (1 + width * channels * bit_depth // 8)  # filter byte 0, then zeros

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(1)
    body = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


# -- 1. memory: decoding costs at most about 4 bytes per pixel ---------------------------------

PEAK_SCRIPT = """
import resource, sys
from emolens.image.io import load_image
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
image = load_image(sys.argv[1], max_pixels=100_000_000)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(image.shape[0] * image.shape[1], (after - before) * 1024)
"""


@pytest.mark.parametrize(
    ("kind", "side", "color_type", "bits"),
    [("16-bit grey", 9999, 0, 16), ("8-bit RGBA", 6000, 6, 8)],  # the worst case; the lean path's
)
def test_decoding_a_large_accepted_image_stays_within_4_bytes_per_pixel(tmp_path, kind, side, color_type, bits):
    """A PNG under the 100 MP limit decoded in a fresh process: the peak RSS grows by at most
    4 bytes per pixel plus 64 MB (the issue measured 30 bytes per pixel for the 16-bit one)."""
    path = write_png(tmp_path / "big.png", side, side, color_type, bits)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(path)], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr
    pixels, grown = map(int, out.stdout.split())
    assert pixels == side * side
    assert grown <= 4 * pixels + 64 * 2**20, f"{kind}: {grown / pixels:.2f} bytes per pixel"


def test_large_image_decoding_matches_the_small_image_path(monkeypatch):
    """Large images take the lean OpenCV path: it gives the same pixels as PIL for every mode,
    format and EXIF orientation."""
    import emolens.image.io as eio

    rng = np.random.default_rng(0)
    rgba = Image.fromarray(rng.integers(0, 256, (30, 50, 4), dtype=np.uint8), "RGBA")
    cases = []
    for mode in ("1", "L", "P", "RGB", "RGBA", "LA"):
        for fmt in ("PNG", "WEBP", "JPEG", "BMP", "TIFF"):
            img = rgba.convert(mode)
            buf = io.BytesIO()
            with contextlib.suppress(OSError, KeyError, ValueError):  # not every format takes every mode
                img.save(buf, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
                cases.append((f"{mode} {fmt}", buf.getvalue()))
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        buf = io.BytesIO()
        rgba.convert("RGB").save(buf, "JPEG", exif=exif, quality=95)
        cases.append((f"JPEG orientation {orientation}", buf.getvalue()))
    assert len(cases) > 30
    for name, data in cases:
        monkeypatch.setattr(eio, "LEAN_MIN_PIXELS", 10**12)
        reference = load_image(data)
        monkeypatch.setattr(eio, "LEAN_MIN_PIXELS", 0)
        lean = load_image(data)
        assert lean.shape == reference.shape and lean.dtype == np.uint8, name
        assert np.abs(lean.astype(int) - reference).max() <= 1, name


def test_a_truncated_large_jpeg_is_still_refused(monkeypatch):
    """OpenCV would fill the missing part with grey without a word: the lean path leaves it to PIL."""
    import emolens.image.io as eio

    monkeypatch.setattr(eio, "LEAN_MIN_PIXELS", 0)
    with pytest.raises(BadImageError, match="truncated"):
        load_image(ASTRONAUT[: len(ASTRONAUT) * 2 // 3])


# -- 10. error messages with context -----------------------------------------------------------


def test_float_tiff_with_nan_names_the_file(tmp_path):
    values = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    values[3, 3] = np.nan
    path = tmp_path / "scan.tif"
    Image.fromarray(values, "F").save(path)
    with pytest.raises(BadImageError) as exc:
        load_image(path)
    assert str(path) in str(exc.value) and "NaN" in str(exc.value)


def heic_bytes() -> bytes:
    """The first box of an HEIC file (what a phone sends), enough for a format sniffer."""
    ftyp = b"ftypheic" + b"\x00\x00\x00\x00" + b"mif1heic"
    return struct.pack(">I", 8 + len(ftyp) - 4) + ftyp + b"\x00" * 64


def test_heic_says_it_is_not_supported_and_what_is(tmp_path):
    path = tmp_path / "IMG_0001.HEIC"
    path.write_bytes(heic_bytes())
    with pytest.raises(BadImageError) as exc:
        load_image(path)
    message = str(exc.value)
    assert str(path) in message and "HEIC" in message and "not supported" in message and "JPEG" in message


# -- hostile files through the CLI and HTTP ----------------------------------------------------


def hostile_files(folder: Path) -> dict[str, Path]:
    """The foundation issue's hostile set plus this review's files."""
    folder.mkdir(parents=True, exist_ok=True)
    good = ASTRONAUT
    nan = np.zeros((8, 8), np.float32)
    nan[0, 0] = np.inf
    tiff = io.BytesIO()
    Image.fromarray(nan, "F").save(tiff, "TIFF")
    bomb = bytearray(png(np.zeros((1, 1, 3), np.uint8)))
    bomb[16:24] = struct.pack(">II", 50_000, 50_000)
    bomb[29:33] = struct.pack(">I", zlib.crc32(bytes(bomb[12:29])))
    files = {
        "empty.jpg": b"",
        "random.jpg": np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "text.jpg": b"this is not an image\n" * 20,
        "truncated.jpg": good[: len(good) // 3],
        "header-only.jpg": good[:200],
        "bomb.png": bytes(bomb),
        "nan.tif": tiff.getvalue(),
        "photo.heic": heic_bytes(),
        "zero-size.png": png(np.zeros((1, 1, 3), np.uint8))[:16] + struct.pack(">II", 0, 0),
    }
    return {name: (folder / name).resolve() for name, data in files.items() if (folder / name).write_bytes(data) >= 0}


def test_hostile_files_through_the_cli_one_line_each_no_traceback(tmp_path, emolens_home, monkeypatch):
    from emolens.cli import app

    monkeypatch.setenv("EMOLENS_MAX_PIXELS", "100000000")
    files = hostile_files(tmp_path / "hostile")
    monkeypatch.chdir(tmp_path)  # anything it writes stays here
    r = CliRunner().invoke(app, ["analyze", *map(str, files.values())])
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    for name in files:
        assert name in r.output, name


def test_hostile_files_through_http_answer_4xx_json(tmp_path):
    files = hostile_files(tmp_path / "hostile")
    with running_server(tmp_path / "home", max_pixels=100_000_000) as (url, _), httpx.Client(base_url=url) as c:
        for name, path in files.items():
            r = c.post("/api/v1/analyze", files={"image": (name, path.read_bytes(), "application/octet-stream")})
            assert 400 <= r.status_code < 500, (name, r.status_code, r.text)
            assert r.json()["error"]["message"], name


# -- 2 and 4. the registry: promote only what can serve, under one lock ------------------------


def test_promote_refuses_paths_and_models_that_cannot_load(emolens_home, tmp_path):
    from emolens.cli import app
    from emolens.core.errors import ModelNotFoundError, RefusedError

    reg = Workspace.default().registry
    runner = CliRunner()
    r = runner.invoke(app, ["models", "promote", str(README)])
    assert r.exit_code == 2 and "not a path" in r.output, r.output
    with pytest.raises(ModelNotFoundError):
        reg.promote("../../README.md")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx at all")
    version = reg.register(bad, source="test")  # a broken file in the registry (by hand, or a bad disk)
    with pytest.raises(RefusedError, match="cannot be made active"):
        reg.promote(version.name)
    (emolens_home / "models" / "mine.onnx").write_bytes(b"also not onnx")
    r = runner.invoke(app, ["models", "promote", "mine"])
    assert r.exit_code == 2 and "cannot be made active" in r.output, r.output
    assert reg.active_name() is None  # nothing was switched


def test_api_promote_refuses_and_readyz_fails_when_the_active_model_cannot_load(tmp_path):
    from emolens.models.registry import Registry

    with running_server(tmp_path / "home") as (url, app), httpx.Client(base_url=url, timeout=60) as c:
        from emolens.store.keys import KeyStore

        _, admin = KeyStore(app.state.emolens.db_url).create("admin", "admin")
        h = {"X-API-Key": admin}
        assert_error(c.post("/api/v1/models/README.md/promote", headers=h), 404, text="not a path")
        assert_error(c.post("/api/v1/models/regrace.sh/promote", headers=h), 404)
        reg = Registry(tmp_path / "home" / "registry")
        broken = tmp_path / "broken.onnx"
        broken.write_bytes(b"#!/bin/sh\n")
        version = reg.register(broken, source="test")
        assert_error(c.post(f"/api/v1/models/{version.name}/promote", headers=h), 409, "refused", "cannot be made")
        assert c.post("/api/v1/analyze", files={"image": ("a.jpg", ASTRONAUT, "image/jpeg")}).status_code == 200
        assert c.get("/readyz").status_code == 200
        # The pointer changed behind the server's back (another tool, a restored backup): not ready.
        (reg.root / "active.json").write_text(json.dumps({"version": version.name, "history": []}))
        r = c.get("/readyz")
        assert r.status_code == 503 and "corrupt or not ONNX" in r.json()["checks"]["model_and_detector"]


def test_concurrent_promotions_on_an_empty_registry_register_once(tmp_path):
    """Two `emolens models promote accurate` at once: v1 (the default) and v2 (accurate), v2 active
    with only v1 in its history (the issue saw v3 and the active version in its own history)."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    env.pop("EMOLENS_MODEL", None)
    command = [sys.executable, "-m", "emolens.cli", "models", "promote", "accurate"]
    for trial in range(2):
        env["EMOLENS_HOME"] = str(tmp_path / f"home{trial}")
        procs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(3)]
        outputs = [p.communicate(timeout=300)[0].decode() for p in procs]
        assert all(p.returncode == 0 for p in procs), outputs
        registry = tmp_path / f"home{trial}" / "registry"
        assert sorted(p.name for p in (registry / "versions").iterdir()) == ["v1", "v2"], outputs
        assert json.loads((registry / "active.json").read_text()) == {"version": "v2", "history": ["v1"]}


# -- 3. personal data needs a read key by default ----------------------------------------------

PERSONAL = [
    ("GET", "/api/v1/feedback"),
    ("GET", "/api/v1/feedback/0123456789ab"),
    ("GET", "/api/v1/feedback/0123456789ab/crop"),
    ("GET", "/api/v1/people"),
    ("GET", "/api/v1/people/versions"),
    ("GET", "/api/v1/attendance/sessions"),
    ("GET", "/api/v1/attendance/sessions/ffffffffffff/report"),
]


def test_faces_names_and_attendance_need_a_read_key_by_default(tmp_path):
    with running_server(tmp_path / "home") as (url, app), httpx.Client(base_url=url, timeout=60) as c:
        from emolens.store.keys import KeyStore

        _, read = KeyStore(app.state.emolens.db_url).create("reader", "read")
        for method, path in PERSONAL:
            assert_error(c.request(method, path), 401, "unauthorized")
            assert c.request(method, path, headers={"X-API-Key": read}).status_code in (200, 404), path
        r = c.post("/api/v1/identify", files={"image": ("a.jpg", ASTRONAUT, "image/jpeg")})
        assert_error(r, 401, "unauthorized")
        assert c.get("/api/v1/feedback/stats").status_code == 200  # counts only: still open
        assert c.post("/api/v1/analyze", files={"image": ("a.jpg", ASTRONAUT, "image/jpeg")}).status_code == 200
        state = app.state.emolens
        state.settings = state.settings.model_copy(update={"api_personal_reads_open": True})
        assert c.get("/api/v1/feedback").status_code == 200  # opened explicitly


# -- 5. bad numbers are 4xx, and exit 2 in the CLI ---------------------------------------------


def test_out_of_range_numbers_are_client_errors(tmp_path):
    with running_server(tmp_path / "home") as (url, app), httpx.Client(base_url=url, timeout=60) as c:
        from emolens.store.keys import KeyStore

        _, admin = KeyStore(app.state.emolens.db_url).create("admin", "admin")
        h = {"X-API-Key": admin}
        for offset in ("9223372036854775808", "-1", "1e400"):
            assert_error(c.get("/api/v1/feedback", params={"offset": offset}, headers=h), 422, "validation")
        assert_error(c.post("/api/v1/people/versions/99999999999999999999/restore", headers=h), 422, "validation")
        assert_error(c.post("/api/v1/people/train", json={"classifier": "bogus"}, headers=h), 422, "validation")


@pytest.mark.parametrize("limit", ["99999999999999999999", "-5", "0"])
def test_cli_feedback_list_refuses_out_of_range_limits(emolens_home, limit):
    from emolens.cli import app

    r = CliRunner().invoke(app, ["feedback", "list", "--limit", limit])
    assert r.exit_code == 2 and "--limit" in r.output and "Traceback" not in r.output, r.output


# -- 1b. every endpoint that decodes goes through the analysis gate ----------------------------


class BlockingAnalyzer:
    """Holds the only analysis slot until released."""

    model_name = model_version = "slow"
    labels = ["happy"]

    def __init__(self) -> None:
        self.release = threading.Event()

    def warmup(self):
        return self

    def __call__(self, image):
        from emolens.pipeline.results import Results

        self.release.wait(30)
        return Results(faces=[], image=image, model="slow", detector="none")


def test_feedback_uploads_decode_inside_the_bounded_gate(tmp_path):
    slow = BlockingAnalyzer()

    def prepare(app):
        app.state.emolens._analyzer = slow

    settings = {"serve_threads": 1, "serve_queue": 0, "request_timeout_s": 60}
    with running_server(tmp_path / "home", prepare=prepare, **settings) as (url, app):
        from emolens.store.keys import KeyStore

        _, write = KeyStore(app.state.emolens.db_url).create("writer", "write")
        state = app.state.emolens
        busy = threading.Thread(
            target=httpx.post,
            args=(f"{url}/api/v1/analyze",),
            kwargs={"files": {"image": ("a.jpg", ASTRONAUT, "image/jpeg")}, "timeout": 60},
        )
        busy.start()
        try:
            for _ in range(400):
                if state.gate.pending:
                    break
                time.sleep(0.025)
            assert state.gate.pending == 1
            h = {"X-API-Key": write}
            crop = png(np.full((48, 48, 3), 128, np.uint8))
            r = httpx.post(
                f"{url}/api/v1/feedback/crop", files={"image": ("c.png", crop)}, data={"label": "sad"}, headers=h
            )
            assert_error(r, 503, "busy")  # not decoded beside the running analysis
            r = httpx.post(
                f"{url}/api/v1/feedback", json={"analysis_id": "x" * 32, "face": 0, "label": "sad"}, headers=h
            )
            assert_error(r, 503, "busy")
        finally:
            slow.release.set()
            busy.join(60)
        assert state.feedback_store().count() == 0


# -- 6. import does not follow links out of its folder -----------------------------------------


def test_import_refuses_links_that_leave_the_folder(emolens_home, tmp_path):
    from emolens.feedback import FeedbackService

    folder = tmp_path / "export"
    (folder / "feedback_images").mkdir(parents=True)
    secret = tmp_path / "elsewhere" / "private.png"
    secret.parent.mkdir()
    Image.fromarray(np.full((48, 48), 77, np.uint8)).save(secret)
    (folder / "feedback_images" / "face.png").symlink_to(secret)
    Image.fromarray(np.full((48, 48), 99, np.uint8)).save(folder / "feedback_images" / "real.png")
    (folder / "feedback_log.csv").write_text(
        "timestamp,image_path,predicted_emotion,corrected_emotion,confidence\n"
        "2024-01-01 10:00:00,feedback_images/face.png,happy,sad,0.9\n"
        "2024-01-01 10:01:00,feedback_images/real.png,happy,sad,0.9\n"
    )
    report = FeedbackService().import_streamlit(folder)
    assert report.imported == 1
    assert len(report.skipped) == 1 and "outside" in report.skipped[0] and "face.png" in report.skipped[0]


# -- 7. the database is private ----------------------------------------------------------------


def test_database_and_its_wal_files_are_private(emolens_home):
    from emolens.feedback import FeedbackService

    store = FeedbackService()
    store.add(np.full((48, 48), 50, np.uint8), "sad")
    files = [emolens_home / n for n in ("emolens.db", "emolens.db-wal", "emolens.db-shm")]
    assert all(p.exists() for p in files)
    for p in files:
        assert p.stat().st_mode & 0o077 == 0, f"{p.name}: {oct(p.stat().st_mode)}"


def test_an_existing_world_readable_database_is_made_private(tmp_path):
    from emolens.store.db import get_engine

    path = tmp_path / "old.db"
    path.touch(mode=0o644)
    path.chmod(0o644)
    get_engine(f"sqlite:///{path}")
    assert path.stat().st_mode & 0o077 == 0


# -- 8. logs and half-open connections ---------------------------------------------------------


@contextlib.contextmanager
def uvicorn_server(home: Path, **settings):
    """A server as `emolens serve` runs it: its HTTP protocol, access log at info level."""
    import uvicorn

    from emolens.core.settings import Settings
    from emolens.serve import create_app
    from emolens.serve.connections import http_protocol
    from emolens.workspace import get_settings

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMOLENS_HOME", str(home))
        for key, value in settings.items():
            mp.setenv(f"EMOLENS_{key.upper()}", str(value))
        get_settings.cache_clear()
        app = create_app(Settings())
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, log_level="info", http=http_protocol()))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        for _ in range(400):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            time.sleep(0.05)
        try:
            yield url, sock.getsockname()[1]
        finally:
            server.should_exit = True
            thread.join(15)
            sock.close()
            get_settings.cache_clear()


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_access_log_keeps_neither_keys_nor_person_ids(tmp_path):
    handler = Collect()
    with uvicorn_server(tmp_path / "home") as (url, _):
        logger = logging.getLogger("uvicorn.access")
        logger.addHandler(handler)
        try:
            httpx.get(f"{url}/api/v1/feedback", params={"key": "emk_secret_value"})
            httpx.delete(f"{url}/api/v1/people/alice-smith")
            httpx.get(f"{url}/api/v1/people/versions")
        finally:
            logger.removeHandler(handler)
    text = "\n".join(handler.lines)
    assert "/api/v1/feedback?key=REDACTED" in text and "/api/v1/people/{key}" in text, text
    assert "emk_secret_value" not in text and "alice-smith" not in text
    assert "/api/v1/people/versions" in text  # not a person


def test_half_open_connections_are_closed(tmp_path):
    with uvicorn_server(tmp_path / "home", header_timeout_s=1) as (_, port):
        for sent in (b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\n"):  # nothing; half the headers
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(sent)
                s.settimeout(30)
                assert s.recv(100) == b"", sent  # closed by the server, not by our timeout
            with httpx.Client() as c:  # a whole request still works
                assert c.get(f"http://127.0.0.1:{port}/healthz").status_code == 200


# -- 9. telemetry is off -----------------------------------------------------------------------


def test_onnxruntime_writes_no_telemetry(tmp_path):
    """Analyzing a photo in a fresh process with an empty home directory leaves it empty of
    ONNX Runtime's device id and event queue (~/.cache/Microsoft/DeveloperTools/.onnxruntime)."""
    env = {**os.environ, "HOME": str(tmp_path), "PYTHONPATH": str(SRC), "EMOLENS_HOME": str(tmp_path / "e")}
    env.pop("ORT_DISABLE_TELEMETRY", None)
    env.pop("XDG_CACHE_HOME", None)
    script = "from emolens import Analyzer; print(len(Analyzer()(__import__('sys').argv[1])))"
    example = ROOT / "src" / "emolens" / "assets" / "examples" / "astronaut.jpg"
    out = subprocess.run([sys.executable, "-c", script, str(example)], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "1", out.stderr
    assert not (tmp_path / ".cache" / "Microsoft").exists()


def test_cli_people_restore_with_a_huge_version_is_a_clear_error(emolens_home):
    from emolens.cli import app

    r = CliRunner().invoke(app, ["people", "restore", "99999999999999999999"])
    assert r.exit_code == 2 and "no recognizer version" in r.output and "Traceback" not in r.output, r.output
