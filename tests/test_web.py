"""The web page in a real browser: headless Chromium (Debian's package) driven by Playwright.

Uploads a photo, sees the box drawn over it, marks the face wrong, and finds the feedback stored;
a screenshot is saved to tests/artifacts/web.png.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from test_serve import EXAMPLE, running_server

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="/usr/bin/chromium is not installed (scripts/test.sh installs Debian's chromium package when it can)",
)


sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the test extra) is not installed")
expect = sync_api.expect


@pytest.fixture(scope="module")
def playwright():
    with sync_api.sync_playwright() as p:  # one per thread: the sync API runs an event loop of its own
        yield p


@pytest.fixture(scope="module")
def browser(playwright):
    b = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
    yield b
    b.close()


def test_upload_see_boxes_mark_wrong_feedback_stored(browser, tmp_path):
    with running_server(tmp_path / "home", max_upload_mb=5.0) as (url, app):
        from emolens.store.keys import KeyStore

        _, key = KeyStore(app.state.emolens.db_url).create("browser", "write")
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        outside: list[str] = []  # the page must load nothing from elsewhere
        local = (url, "data:", f"blob:{url}")
        page.on("request", lambda req: None if req.url.startswith(local) else outside.append(req.url))
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            page.goto(url + "/")
            page.wait_for_selector("body[data-ready='true']")

            # A key with the write scope, as a person would paste it.
            page.fill("#key-input", key)
            page.click("#key-save")
            page.wait_for_selector("#key-status.ok")
            assert "browser (write)" in page.text_content("#key-status")

            page.set_input_files("#file", str(EXAMPLE))
            page.wait_for_selector("#overlay[data-boxes='1']", timeout=30_000)
            assert page.locator("#faces li.face").count() == 1
            assert page.text_content("#faces .face-label") == "happy"

            # The box is really drawn: pixels on its left edge are opaque, the canvas corner is not.
            analysis_box = page.evaluate(
                """() => {
                  const c = document.getElementById('overlay');
                  const ctx = c.getContext('2d');
                  const row = Math.round(c.height * 0.25);
                  let opaque = 0;
                  for (let x = 0; x < c.width; x++) if (ctx.getImageData(x, row, 1, 1).data[3] > 0) opaque++;
                  return {w: c.width, h: c.height, opaque, corner: ctx.getImageData(2, 2, 1, 1).data[3]};
                }"""
            )
            assert (analysis_box["w"], analysis_box["h"]) == (512, 512)
            assert analysis_box["opaque"] >= 2 and analysis_box["corner"] == 0

            # "Wrong, it is… sad"
            face = page.locator("#faces li.face").first
            face.locator("select.fb-label").select_option("sad")
            face.locator("button.fb-wrong").click()
            page.wait_for_selector("#faces .fb-status.ok")
            assert "happy → sad" in face.locator(".fb-status").text_content()
            expect(page.locator("#fb-corrections")).to_have_text("1")  # the counts were refreshed

            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "web.png"), full_page=True)
        finally:
            page.close()

        stored = httpx.get(f"{url}/api/v1/feedback", headers={"X-API-Key": key}).json()
        assert stored["total"] == 1
        rec = stored["items"][0]
        assert (rec["label"], rec["predicted"], rec["is_correction"], rec["source"]) == ("sad", "happy", True, "web")
        assert not errors, errors
        assert not outside, outside
    assert (ARTIFACTS / "web.png").stat().st_size > 10_000


def test_page_without_key_explains_how_to_get_one(browser, tmp_path):
    with running_server(tmp_path / "home") as (url, _):
        page = browser.new_page()
        try:
            page.goto(url + "/")
            page.wait_for_selector("body[data-ready='true']")
            page.set_input_files("#file", str(EXAMPLE))
            page.wait_for_selector("#overlay[data-boxes='1']", timeout=30_000)
            assert page.is_visible("#feedback-hint")
            assert page.is_hidden("#finetune")
            page.locator("#faces li.face button.fb-wrong").click()
            page.wait_for_selector("#faces .fb-status.bad")
            assert "API key" in page.text_content("#faces .fb-status")

            # A bad file: the page shows the server's message, and no box.
            bad = tmp_path / "notes.jpg"
            bad.write_text("not a photo")
            page.set_input_files("#file", str(bad))
            page.wait_for_selector("#status.bad")
            assert "not an image" in page.text_content("#status")
            assert page.get_attribute("#overlay", "data-boxes") == "0"
        finally:
            page.close()
        assert httpx.get(f"{url}/api/v1/feedback/stats").json()["total"] == 0


def test_admin_key_shows_models_and_finetune_button(browser, tmp_path):
    with running_server(tmp_path / "home") as (url, app):
        from emolens.store.keys import KeyStore
        from emolens.workspace import Workspace

        state = app.state.emolens
        reg = state.registry()
        reg.promote(
            reg.register(Workspace.default().models.path("fast"), source="shipped:fast", metrics={"accuracy": 0.7}).name
        )
        _, key = KeyStore(state.db_url).create("boss", "admin")
        page = browser.new_page()
        try:
            page.goto(url + "/")
            page.wait_for_selector("body[data-ready='true']")
            assert page.is_hidden("#finetune")
            page.fill("#key-input", key)
            page.click("#key-save")
            page.wait_for_selector("#finetune", state="visible")
            page.wait_for_selector("#models tr.active")
            row = page.text_content("#models tr.active")
            assert "v1" in row and "accuracy 70.0%" in row
            assert page.text_content("#serving") == "v1"
            page.click("#finetune")  # refused: no feedback yet; the page says why
            expect(page.locator("#job")).to_contain_text("corrections")
        finally:
            page.close()


def fake_camera_y4m(path: Path, frames: int = 10, step: int = 2) -> Path:
    """A Y4M clip of the shipped photo sliding ``step`` px per frame and back (so it loops smoothly),
    for Chromium's fake camera: a real face in front of the camera."""
    import numpy as np
    from PIL import Image

    image = np.asarray(Image.open(EXAMPLE).convert("RGB")).astype(np.float32)
    h, w = image.shape[:2]
    pad = step * frames
    padded = np.pad(image, ((0, 0), (pad, 0), (0, 0)), mode="edge")
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{w} H{h} F10:1 Ip A1:1 C420jpeg\n".encode())
        for i in [*range(frames), *reversed(range(frames))]:
            rgb = padded[:, pad - step * i : pad - step * i + w]
            r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
            y = 0.299 * r + 0.587 * g + 0.114 * b
            u = -0.168736 * r - 0.331264 * g + 0.5 * b + 128
            v = 0.5 * r - 0.418688 * g - 0.081312 * b + 128
            planes = [y] + [c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)) for c in (u, v)]
            out.write(b"FRAME\n" + b"".join(np.clip(p, 0, 255).round().astype(np.uint8).tobytes() for p in planes))
    return path


def test_camera_live_mode_over_a_websocket(playwright, tmp_path):
    """Live mode: Chromium's fake camera plays the shipped photo, moving; frames go over the
    WebSocket and come back with a track id, drawn as "#id label"; freezing keeps the last frame
    (analysed once more over HTTP, for feedback) with its track id. When the socket cannot open,
    live mode falls back to a POST per frame."""
    video = fake_camera_y4m(tmp_path / "camera.y4m")
    with running_server(tmp_path / "home") as (url, app):
        args = [
            *LAUNCH_ARGS,
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={video}",
        ]
        b = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        try:
            page = b.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            sockets: list = []
            answers: list[dict] = []
            sent: list[int] = []

            def on_socket(ws) -> None:
                sockets.append(ws.url)
                ws.on("framesent", lambda payload: sent.append(len(payload)) if isinstance(payload, bytes) else None)
                ws.on("framereceived", lambda payload: answers.append(json.loads(payload)))

            page.on("websocket", on_socket)
            page.goto(url + "/")
            page.wait_for_selector("body[data-ready='true']")
            page.click("#tab-camera")
            page.click("#cam-start")
            page.wait_for_selector("#panel-camera[data-transport='websocket']", timeout=20_000)
            page.wait_for_selector("#overlay[data-boxes='1']", timeout=30_000)
            expect(page.locator("#cam-rate")).to_contain_text("frames/s", timeout=20_000)
            for _ in range(100):  # a few answered frames (socket events arrive while Playwright waits)
                if sum(a["type"] == "result" for a in answers) >= 3:
                    break
                page.wait_for_timeout(100)
            expect(page.locator("#faces .face-index")).to_have_text(re.compile(r"^#\d+$"))
            assert re.fullmatch(r"#\d+ \w+ \d+%", page.get_attribute("#overlay", "data-labels")), page.get_attribute(
                "#overlay", "data-labels"
            )
            assert page.is_visible("#video")

            assert sockets == [url.replace("http", "ws", 1) + "/api/v1/live"]  # CSP connect-src 'self' let it open
            results = [a for a in answers if a["type"] == "result"]
            assert answers[0]["type"] == "ready" and len(results) >= 3 and len(sent) >= len(results)
            ids = {f["track_id"] for r in results for f in r["faces"]}
            assert len(ids) == 1, results  # one person, one id, frame after frame
            track = ids.pop()
            assert page.text_content("#faces .face-index") == f"#{track}"

            page.click("#cam-freeze")
            expect(page.locator("#status")).to_contain_text("frame frozen")
            assert page.is_visible("#photo") and page.is_hidden("#video")
            assert page.get_attribute("#overlay", "data-labels").startswith(f"#{track} ")  # the id stays on it
            assert not errors, errors  # no script errors, no CSP refusals
            # It can take feedback (the HTTP analysis is kept by the server): here it asks for a key.
            page.locator("#faces li.face button.fb-wrong").click()
            page.wait_for_selector("#faces .fb-status.bad")
            assert "API key" in page.text_content("#faces .fb-status")
            page.close()

            # A socket that cannot open: live mode still works, a request per frame.
            page = b.new_page()
            page.route_web_socket("**/api/v1/live", lambda ws: ws.close(code=1011, reason="test: refused"))
            page.goto(url + "/")
            page.wait_for_selector("body[data-ready='true']")
            page.click("#tab-camera")
            page.click("#cam-start")
            page.wait_for_selector("#panel-camera[data-transport='http']", timeout=20_000)
            expect(page.locator("#cam-rate")).to_contain_text("frames/s", timeout=20_000)
            assert page.get_attribute("#overlay", "data-labels").startswith("0: ")  # no track ids over HTTP
            page.close()
        finally:
            b.close()
        state = app.state.emolens
        assert state.metrics.analyses._value.get() >= 2  # the frozen frame, and the HTTP fallback's frames
        text = httpx.get(url + "/metrics").text
        assert 'emolens_live_frames_total{outcome="analysed"}' in text


@pytest.mark.parametrize(("path", "rendered"), [("/docs", ".opblock"), ("/redoc", "[data-section-id]")])
def test_api_docs_render_offline_under_their_csp(browser, tmp_path, path, rendered):
    """Swagger UI and ReDoc draw the API from this server alone. ReDoc's sidebar asks for Redocly's
    logo from their CDN: the page's CSP refuses it, so it never leaves the browser; nothing else
    goes elsewhere and nothing of this server's is refused."""
    with running_server(tmp_path / "home") as (url, _):
        page = browser.new_page()
        outside: list[str] = []
        refused: dict[str, str] = {}
        csp: list[str] = []
        local = (url, "data:", f"blob:{url}")
        page.on("request", lambda req: None if req.url.startswith(local) else outside.append(req.url))
        page.on("requestfailed", lambda req: refused.__setitem__(req.url, req.failure or ""))
        page.on("console", lambda msg: csp.append(msg.text) if "Content Security Policy" in msg.text else None)
        page.goto(url + path)
        page.wait_for_selector(rendered, timeout=60_000)
        assert page.locator(rendered).count() >= 10
        page.close()
    assert all("csp" in refused.get(u, "").lower() for u in outside), (outside, refused)  # blocked, not sent
    assert all("cdn.redoc.ly" in m for m in csp), csp
