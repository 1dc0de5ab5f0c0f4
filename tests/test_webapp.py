"""The on-device web app (``/app/``): its files and headers over HTTP, then the whole pipeline in
headless Chromium (Debian's package, driven by Playwright) with the network cut, compared with the
Python pipeline on the same pixels; and the JavaScript pre-processing against Python's."""

from __future__ import annotations

import base64
import hashlib
import os

import httpx
import numpy as np
import pytest

from emolens.webapp import build_info
from test_serve import EXAMPLE, running_server
from test_web import CHROMIUM, LAUNCH_ARGS, fake_camera_y4m


def test_app_files_headers_and_models(tmp_path):
    """The page is cross-origin isolated (WASM threads) and loads nothing from elsewhere; the
    models are the server's own files, by content hash; only model names are accepted."""
    from retinaface.weights import WEIGHTS

    from emolens.workspace import Workspace

    with running_server(tmp_path / "home") as (url, _):
        page = httpx.get(f"{url}/app/")
        assert page.status_code == 200 and 'src="/app/app.js"' in page.text
        assert page.headers["cross-origin-opener-policy"] == "same-origin"
        assert page.headers["cross-origin-embedder-policy"] == "require-corp"
        assert "'wasm-unsafe-eval'" in page.headers["content-security-policy"]
        assert httpx.get(f"{url}/app", follow_redirects=False).headers["location"] == "/app/"

        config = httpx.get(f"{url}/app/config.json").json()
        assert config["model"]["name"] == "fast" and config["settings"]["detection_threshold"] == 0.6
        model = httpx.get(url + config["model"]["url"])
        assert model.content == Workspace.default().models.path("fast").read_bytes()
        assert "immutable" in model.headers["cache-control"]
        assert httpx.get(url + config["detector"]["url"]).content == WEIGHTS
        other = httpx.get(f"{url}/app/config.json", params={"model": "fast-int8"}).json()["model"]
        assert hashlib.sha256(httpx.get(url + other["url"]).content).hexdigest() == other["sha256"]

        bad_paths = ["/app/config.json?model=../../etc/passwd", "/app/config.json?model=nope"]
        bad_paths += ["/app/models/fast-0000.onnx", "/app/secret.py", "/app/vendor/000000000000/ort.wasm.min.mjs"]
        for bad in bad_paths:
            r = httpx.get(url + bad)
            assert r.status_code == 404 and r.json()["error"]["message"], bad

        info = build_info()
        if info is not None:  # the runtime, gzipped on the wire, byte for byte the npm package's
            wasm = httpx.get(url + config["vendor"] + "ort-wasm-simd-threaded.wasm")
            assert wasm.headers["content-encoding"] == "gzip" and "immutable" in wasm.headers["cache-control"]
            assert hashlib.sha256(wasm.content).hexdigest() == info["files"]["ort-wasm-simd-threaded.wasm"]["sha256"]
        sw = httpx.get(f"{url}/app/sw.js").text
        assert config["model"]["url"] in sw and "__VERSION__" not in sw and "/*PRECACHE*/" not in sw
        manifest = httpx.get(f"{url}/app/manifest.webmanifest").json()
        assert manifest["start_url"] == "/app/" and manifest["display"] == "standalone"
        for icon in manifest["icons"]:
            assert httpx.get(url + icon["src"]).status_code == 200


def test_unbuilt_app_says_how_to_build_it(tmp_path, monkeypatch):
    """A source checkout without the runtime: the page still opens and config.json names the command."""
    from emolens.serve.routers import webapp

    monkeypatch.setattr(webapp, "build_info", lambda: None)
    with running_server(tmp_path / "home") as (url, _):
        config = httpx.get(f"{url}/app/config.json").json()
        assert config["built"] is False and config["build_command"] == "bash scripts/build_webapp.sh"
        assert httpx.get(f"{url}/app/").status_code == 200
        missing = httpx.get(f"{url}/app/vendor/000000000000/ort.wasm.min.mjs")
        assert missing.status_code == 404 and "scripts/build_webapp.sh" in missing.json()["error"]["message"]
        assert "/app/vendor/" not in httpx.get(f"{url}/app/sw.js").text  # nothing to precache that is not there


def needs_browser(test):
    test = pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed")(test)
    reason = "the web app's runtime is not built: run scripts/build_webapp.sh"
    return pytest.mark.skipif(build_info() is None, reason=reason)(test)


@pytest.fixture(scope="module")
def app_browser(tmp_path_factory):
    """One server and one Chromium (with a fake camera playing the shipped photo) for the module."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the test extra) is not installed")
    tmp = tmp_path_factory.mktemp("webapp")
    video = fake_camera_y4m(tmp / "camera.y4m")
    args = [
        *LAUNCH_ARGS,
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={video}",
    ]
    with running_server(tmp / "home") as (url, app), sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        context = browser.new_context(viewport={"width": 1000, "height": 900})
        try:
            yield url, app, context
        finally:
            context.close()
            browser.close()


def _open(context, url: str):
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(url + "/app/")
    page.wait_for_selector("body[data-ready='true']", timeout=60_000)
    return page, errors


def _pixels(page) -> np.ndarray:
    """The RGB pixels the app analysed last."""
    d = page.evaluate(
        """() => { const im = window.emolensApp.state.img; let s = '';
                   for (let i = 0; i < im.data.length; i += 8192)
                     s += String.fromCharCode(...im.data.subarray(i, i + 8192));
                   return {w: im.width, h: im.height, b64: btoa(s)}; }"""
    )
    return np.frombuffer(base64.b64decode(d["b64"]), np.uint8).reshape(d["h"], d["w"], 3)


def _agrees(js: list[dict], pixels: np.ndarray, analyzer) -> None:
    """The browser finds the faces Python finds (boxes within 2 px) and reads them as Python does.

    Given the browser's own box and landmarks, Python's alignment and model give the browser's
    probabilities to 0.005 (the crops agree to a grey level). From Python's own detections the
    label is the same unless the face is borderline (top two within 0.1): ONNX Runtime Web and
    native ONNX Runtime place the landmarks up to 0.3 px apart, which moves a borderline face of
    the group photo by 0.042 (measured); the probabilities stay within 0.05."""
    from emolens.image.align import align_face

    py = analyzer(pixels)
    model = analyzer.model
    spec = model.meta.input
    assert len(js) == len(py), (len(js), len(py))
    for a, b in zip(js, py, strict=True):
        assert np.abs(np.asarray(a["box"]) - np.asarray(b.box)).max() < 2.0, (a["box"], b.box)
        crop = align_face(pixels, np.asarray(a["box"]), np.asarray(a["landmarks"]), spec.size, spec.channels)
        same_face = dict(zip(model.labels, model.predict(crop[None])[0].tolist(), strict=True))
        assert max(abs(a["probs"][k] - v) for k, v in same_face.items()) < 0.005, (a["probs"], same_face)
        top, second = sorted(b.probs.values())[::-1][:2]
        assert a["label"] == b.label or top - second < 0.1, (a["probs"], b.probs)
        assert max(abs(a["probs"][k] - v) for k, v in b.probs.items()) < 0.05, (a["probs"], b.probs)


@needs_browser
def test_offline_photo_camera_and_corrections(app_browser, shared_datasets):
    """After one visit the app works with the network cut: a shared group photo and the fake
    camera are analysed in the browser and agree with the Python pipeline on the same pixels. A
    correction stays on the device until the user sends it."""
    from playwright.sync_api import expect

    from emolens import Analyzer

    url, app, context = app_browser
    photo = shared_datasets / "photos" / "compreface" / "015_6.jpg"
    # The app searches as the server does (native size first, then small faces' regions enlarged).
    analyzer = Analyzer(model="fast", threads=1)
    page, errors = _open(context, url)
    assert page.evaluate("crossOriginIsolated")  # COOP/COEP: WASM threads
    assert int(page.get_attribute("body", "data-threads")) == min(4, os.cpu_count() or 1)
    page.evaluate("navigator.serviceWorker.ready.then(() => true)")  # installed: shell, runtime and models cached

    context.set_offline(True)  # no network from here: the page, the runtime and the models come from the cache
    try:
        page.reload()
        page.wait_for_selector("body[data-ready='true']", timeout=60_000)
        assert page.evaluate("navigator.serviceWorker.controller !== null")
        page.set_input_files("#file", str(photo))
        page.wait_for_selector("#view[data-boxes='6']", timeout=60_000)
        js = page.evaluate("window.emolensApp.state.last")
        assert js["where"] == "device"
        pixels = _pixels(page)
        _agrees(js["faces"], pixels, analyzer)
        # Numbered from 0, as the CLI and the server page number them (what --face takes).
        assert [f["index"] for f in js["faces"]] == list(range(6))
        assert page.locator("#faces li.face .face-index").all_text_contents() == [f"#{i}" for i in range(6)]
        # The browser's JPEG decoder gives the same pixels as Python's, give or take rounding.
        from emolens.image.io import load_image

        assert np.abs(pixels.astype(int) - load_image(photo)).mean() < 1.0

        # Keep a correction: it stays on this device.
        face = page.locator("#faces li.face").first
        face.locator("select.fix-label").select_option("sad")
        face.locator("button.fix").click()
        page.wait_for_selector("body[data-pending='1']")
        assert httpx.get(f"{url}/api/v1/feedback/stats").json()["total"] == 0

        # The fake camera: frames analysed one by one, with smoothed labels.
        page.click("#tab-camera")
        page.click("#cam-start")
        page.wait_for_selector("#view[data-boxes='1']", timeout=60_000)
        expect(page.locator("#cam-rate")).to_contain_text("frames/s", timeout=60_000)
        page.click("#cam-stop")
        frame = page.evaluate("window.emolensApp.state.last")
        _agrees(frame["faces"], _pixels(page), analyzer)
        assert page.get_attribute("#view", "data-labels") == "happy"
    finally:
        context.set_offline(False)

    # Online again: the user sends the kept correction, with a write key.
    from emolens.store.keys import KeyStore

    _, key = KeyStore(app.state.emolens.db_url).create("device", "write")
    page.fill("#key", key)
    page.click("#send")
    page.wait_for_selector("#send-status.ok")
    assert page.get_attribute("body", "data-pending") == "0"
    stored = httpx.get(f"{url}/api/v1/feedback", headers={"X-API-Key": key}).json()["items"]  # personal data
    assert [(r["label"], r["predicted"], r["source"]) for r in stored] == [("sad", js["faces"][0]["label"], "api:crop")]

    # The switch to the server: the same photo through the REST API gives the same answer.
    page.click("#tab-photo")
    page.check("#server-mode")
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("#view[data-where='server']", timeout=60_000)
    server = page.evaluate("window.emolensApp.state.last")
    # The same search on both sides: the same faces, in the same order, with the same numbers.
    assert [f["index"] for f in server["faces"]] == [f["index"] for f in js["faces"]]
    for f, g in zip(server["faces"], js["faces"], strict=True):
        assert np.abs(np.asarray(g["box"]) - np.asarray(f["box"])).max() < 2.0, (f["box"], g["box"])
        assert f["label"] == g["label"] or max(f["probs"].values()) < 0.6, (f, g)
    page.close()
    assert not [e for e in errors if "Failed to load resource" not in e], errors


@needs_browser
def test_js_preprocessing_matches_python(app_browser, shared_datasets):
    """On real faces (shared photos and the shipped example), the JavaScript alignment matrix, the
    aligned crop and the model input equal Python's, given the same pixels and landmarks."""
    from emolens.classify.emotion import to_input
    from emolens.classify.modelfile import InputSpec
    from emolens.detect import create_detector
    from emolens.image.align import align_face, alignment_matrix
    from emolens.image.io import load_image

    url, _, context = app_browser
    page, _ = _open(context, url)
    detector = create_detector("retinaface")
    photos = shared_datasets / "photos"
    images = [
        EXAMPLE,
        photos / "dlib_voc" / "2008_002079.jpg",
        photos / "dlib_voc" / "2008_001322.jpg",
        photos / "compreface" / "010_2.jpg",
    ]
    checked = differ = pixels = 0
    for path in images:
        image = load_image(path)
        faces = detector(image)[:4]
        assert faces, path
        cases = []
        for f in faces:
            for size, channels in ((48, 1), (96, 3)):  # the models' input, and feedback's crop
                spec = InputSpec(size=size, channels=channels, mean=[0.5] * channels, std=[0.25] * channels)
                crop = align_face(image, f.box, f.landmarks, size, channels)
                cases.append(
                    {
                        "box": f.box.tolist(), "landmarks": f.landmarks.tolist(), "spec": spec.__dict__,
                        "matrix": alignment_matrix(f.box, f.landmarks, size).ravel().tolist(),
                        "crop": base64.b64encode(crop.tobytes()).decode(),
                        "x": base64.b64encode(to_input(crop[None], spec).tobytes()).decode(),
                    }
                )  # fmt: skip
        result = page.evaluate(
            """async ([b64, w, h, cases]) => {
                 const P = await import('/app/pipeline.js');
                 const bytes = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
                 const img = {width: w, height: h, data: bytes(b64)};
                 return cases.map((c) => {
                   const m = P.alignmentMatrix(c.box, c.landmarks, c.spec.size);
                   const crop = P.alignFace(img, c.box, c.landmarks, c.spec.size, c.spec.channels);
                   const x = P.toInput([crop], c.spec);
                   const ref = bytes(c.crop), refX = new Float32Array(bytes(c.x).buffer);
                   let px = 0, nx = 0, dx = 0;
                   crop.data.forEach((v, i) => {
                     if (v !== ref[i]) { px = Math.max(px, Math.abs(v - ref[i])); nx++; }
                   });
                   x.forEach((v, i) => { dx = Math.max(dx, Math.abs(v - refX[i])); });
                   const dm = Math.max(...m.map((v, i) => Math.abs(v - c.matrix[i])));
                   return {dm, px, nx, n: crop.data.length, dx};
                 });
               }""",
            [base64.b64encode(image.tobytes()).decode(), image.shape[1], image.shape[0], cases],
        )
        for r in result:
            assert r["dm"] < 1e-6, r  # the same similarity transform (OpenCV's LMedS, replayed)
            assert r["px"] <= 1 and r["nx"] <= r["n"] // 200, r  # crops equal but for rare rounding
            differ += r["nx"]
            pixels += r["n"]
            assert r["dx"] <= 1 / (255 * 0.25) + 1e-6, r  # hence the model input too
            checked += 1
    assert checked >= 16
    assert differ / pixels < 1e-3, (differ, pixels)  # OpenCV's and this arithmetic part on 1 in 10,000 or so
    page.close()


@needs_browser
def test_the_app_starts_with_the_saved_key_where_reads_need_one(app_browser):
    """With EMOLENS_API_READ_KEY_REQUIRED the app's settings and models need a key: the app sends the
    one saved on the server's page and starts; without it, it says why it cannot."""
    from emolens.store.keys import KeyStore

    url, app, context = app_browser
    state = app.state.emolens
    _, read = KeyStore(state.db_url).create("phone", "read")
    before = state.settings
    state.settings = before.model_copy(update={"api_read_key_required": True})
    page = context.new_page()
    try:
        page.goto(url + "/app/")
        # A selector, not a JS expression: the app's CSP forbids eval, which an expression string needs.
        page.locator("#engine", has_text="cannot start").wait_for()
        assert "key" in page.inner_text("#engine")
        page.evaluate("(key) => localStorage.setItem('emolens.key', key)", read)
        page.goto(url + "/app/")
        page.wait_for_selector("body[data-ready='true']", timeout=60_000)
    finally:
        page.evaluate("() => localStorage.removeItem('emolens.key')")
        page.close()
        state.settings = before


def test_two_pass_search_finds_the_faces_python_finds(app_browser, shared_datasets):
    """The app's face search is Python's: native size (0.8x) first, then the regions of possible small
    faces enlarged. On photos with small and large faces it finds the same faces (boxes and landmarks
    within 2 px, same order); its blur before the mild shrink is OpenCV's, bit for bit."""
    import cv2

    from emolens.detect import create_detector
    from emolens.image.io import load_image

    url, _, context = app_browser
    page, errors = _open(context, url)
    detector = create_detector("retinaface", threads=1)
    photos = shared_datasets / "photos"
    paths = [
        EXAMPLE,
        photos / "dlib_voc" / "2008_002079.jpg",  # small background faces: the second pass's regions
        photos / "dlib_voc" / "bald_guys.jpg",  # a crowd of about 25 faces
        photos / "compreface" / "015_6.jpg",
    ]
    passes = []
    for path in paths:
        image = load_image(path)
        js = page.evaluate(
            """async ([b64, w, h]) => {
                 const P = await import('/app/pipeline.js');
                 const img = {width: w, height: h, data: Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))};
                 const timings = {};
                 const faces = await window.emolensApp.state.engine.detect(img, timings);
                 const blurred = P.gaussianBlur3({width: 41, height: 23, data: img.data.subarray(0, 41 * 23 * 3)});
                 return {faces, passes: timings.detect_passes, blurred: btoa(String.fromCharCode(...blurred.data))};
               }""",
            [base64.b64encode(image.tobytes()).decode(), image.shape[1], image.shape[0]],
        )
        patch = image.reshape(-1)[: 41 * 23 * 3].reshape(23, 41, 3)
        blurred = np.frombuffer(base64.b64decode(js["blurred"]), np.uint8).reshape(23, 41, 3)
        assert np.array_equal(blurred, cv2.GaussianBlur(patch, (3, 3), 0.7)), path
        py = detector(image)
        assert len(js["faces"]) == len(py), (path.name, len(js["faces"]), len(py))
        for a, b in zip(js["faces"], py, strict=True):
            assert np.abs(np.asarray(a["box"]) - b.box).max() < 2.0, (path.name, a["box"], b.box)
            assert np.abs(np.asarray(a["landmarks"]) - b.landmarks).max() < 2.0, (path.name, a["landmarks"])
        passes.append(js["passes"])
    assert max(passes) > 1, passes  # the regions were searched again somewhere
    page.close()
    assert not [e for e in errors if "Failed to load resource" not in e], errors
