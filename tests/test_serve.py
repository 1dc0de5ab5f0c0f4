"""The REST API against a real uvicorn server on loopback, driven with httpx: every endpoint, and
every bad input answered with the right status and a JSON error, with nothing half-stored."""

from __future__ import annotations

import base64
import contextlib
import io
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from emolens.workspace import Workspace

EXAMPLE = Path(__file__).resolve().parents[1] / "src" / "emolens" / "assets" / "examples" / "astronaut.jpg"
ASTRONAUT = EXAMPLE.read_bytes()


@contextlib.contextmanager
def running_server(home: Path, prepare=None, wait="/readyz", **settings) -> Iterator[tuple[str, object]]:
    """A real uvicorn server in a thread, on a free loopback port, with ``$EMOLENS_HOME`` = ``home``.

    ``prepare(app)`` runs before the server starts; the server is up once ``wait`` answers 200.
    Yields the base URL and the app."""
    import uvicorn

    from emolens.core.settings import Settings
    from emolens.models import clear_model_cache
    from emolens.serve import create_app
    from emolens.workspace import get_settings

    with pytest.MonkeyPatch.context() as mp:
        for key in ("EMOLENS_CONFIG", "EMOLENS_MODEL", "EMOLENS_MAX_PIXELS", "EMOLENS_DATABASE_URL"):
            mp.delenv(key, raising=False)
        mp.setenv("EMOLENS_HOME", str(home))
        get_settings.cache_clear()
        clear_model_cache()
        app = create_app(Settings(threads=1, **settings))
        if prepare:
            prepare(app)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}{wait}", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the test server did not become ready")
            time.sleep(0.05)
        try:
            yield url, app
        finally:
            server.should_exit = True
            thread.join(timeout=15)
            sock.close()
            get_settings.cache_clear()
            clear_model_cache()


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def assert_error(r: httpx.Response, status: int, type_: str | None = None, text: str | None = None) -> dict:
    """The status is ``status`` and the body the JSON error shape, with a message that helps."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json"), r.headers
    err = r.json()["error"]
    assert set(err) >= {"type", "message"} and err["message"]
    if type_:
        assert err["type"] == type_, err
    if text:
        assert text.lower() in err["message"].lower(), err
    return err


# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("serve_home")
    with running_server(
        home,
        max_upload_mb=1.0,
        max_pixels=2_000_000,
        cors_origins=["http://allowed.example"],
        min_feedback=1,
        request_timeout_s=60,
        api_personal_reads_open=True,  # these tests read records without a key; test_hardening checks the default
    ) as (url, app):
        from emolens.store.keys import KeyStore

        store = KeyStore(app.state.emolens.db_url)
        keys = {scope: store.create(f"test-{scope}", scope)[1] for scope in ("read", "write", "admin")}
        revoked_key, revoked = store.create("gone", "admin")
        store.revoke(revoked_key.key_id)
        keys["revoked"] = revoked
        with httpx.Client(base_url=url, timeout=60) as client:
            yield {"url": url, "app": app, "home": home, "keys": keys, "client": client}


@pytest.fixture
def client(server) -> httpx.Client:
    return server["client"]


def hdr(server, scope: str) -> dict:
    return {"X-API-Key": server["keys"][scope]}


def analyze(client, data: bytes = ASTRONAUT, name: str = "astronaut.jpg", kind: str = "image/jpeg", **params):
    return client.post("/api/v1/analyze", files={"image": (name, data, kind)}, params=params)


def feedback_count(server) -> int:
    return server["app"].state.emolens.feedback_store().count()


# -- health, docs, page ------------------------------------------------------------------------
def test_health_ready_openapi_and_page(client):
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz").json()
    assert ready == {"status": "ready", "checks": {"model_and_detector": "ok", "database": "ok", "storage": "ok"}}
    schema = client.get("/openapi.json").json()
    for path in ("/api/v1/analyze", "/api/v1/feedback", "/api/v1/feedback/crop", "/api/v1/models", "/readyz"):
        assert path in schema["paths"], path
    assert "X-API-Key" in str(schema["components"]["securitySchemes"])
    assert "413" in schema["paths"]["/api/v1/analyze"]["post"]["responses"]
    # Documented errors have the shape the server sends, FastAPI's default 422 included.
    assert "ErrorResponse" in str(schema["paths"]["/api/v1/feedback"]["get"]["responses"]["422"])
    assert client.get("/docs").status_code == 200

    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    static = Path(__file__).resolve().parents[1] / "src" / "emolens" / "serve" / "static"
    for f in static.iterdir():  # the page needs no network: nothing is loaded from elsewhere
        text = f.read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, f.name
        assert client.get(f"/static/{f.name}").status_code == 200


def test_info(client):
    info = client.get("/api/v1/info").json()
    assert "sad" in info["labels"] and info["limits"]["max_upload_mb"] == 1.0
    assert info["read_key_required"] is False


# -- analysis ----------------------------------------------------------------------------------
def test_analyze_returns_faces_boxes_landmarks_emotions(client):
    r = analyze(client)
    assert r.status_code == 200, r.text
    a = r.json()
    assert (a["width"], a["height"]) == (512, 512) and a["model"] == "fast" and a["detector"] == "retinaface"
    assert len(a["faces"]) == 1 and a["annotated"] is None
    face = a["faces"][0]
    x1, y1, x2, y2 = face["box"]
    assert 0 <= x1 < x2 <= 512 and 0 <= y1 < y2 <= 512
    assert len(face["landmarks"]) == 5 and face["index"] == 0
    assert face["label"] == "happy" and abs(sum(face["probs"].values()) - 1) < 0.01
    assert set(face["probs"]) == set(a["labels"])
    assert a["analysis_id"] and {"decode", "detect", "classify"} <= set(a["timings_ms"])


def test_analyze_annotated_image(client):
    a = analyze(client, annotate="true", annotate_format="png").json()
    assert a["annotated"]["media_type"] == "image/png"
    img = Image.open(io.BytesIO(base64.b64decode(a["annotated"]["base64"])))
    assert img.size == (512, 512)
    b = analyze(client, annotate="true").json()["annotated"]
    assert b["media_type"] == "image/jpeg" and base64.b64decode(b["base64"])[:2] == b"\xff\xd8"


def test_analyze_image_without_face_and_octet_stream_part(client):
    blank = png(np.full((120, 160, 3), 200, np.uint8))
    r = analyze(client, blank, "blank.png", "application/octet-stream")
    assert r.status_code == 200 and r.json()["faces"] == []


@pytest.mark.parametrize(
    ("data", "kind", "status", "type_", "text"),
    [
        (b"just some text, not a picture", "application/octet-stream", 422, "bad_image", "not an image"),
        (ASTRONAUT[:4000], "image/jpeg", 422, "bad_image", "truncated"),
        (b"", "image/png", 422, "bad_image", "empty"),
        (b"%PDF-1.4 ...", "application/pdf", 415, "unsupported_media_type", "application/pdf"),
        (ASTRONAUT, "text/plain", 415, "unsupported_media_type", "text/plain"),
    ],
    ids=["not-an-image", "corrupt", "empty", "pdf-part", "text-part"],
)
def test_analyze_bad_files(client, data, kind, status, type_, text):
    assert_error(analyze(client, data, "upload", kind), status, type_, text)


def test_analyze_wrong_request_content_types(client):
    assert_error(client.post("/api/v1/analyze", json={"image": "x"}), 415, "unsupported_media_type", "multipart")
    r = client.post("/api/v1/analyze", content=ASTRONAUT, headers={"content-type": "image/jpeg"})
    assert_error(r, 415, "unsupported_media_type", "multipart")
    r = client.post("/api/v1/analyze", files={"photo": ("a.jpg", ASTRONAUT, "image/jpeg")})  # wrong field name
    assert_error(r, 422, "validation", "image")
    # No fetching on a client's behalf: a URL is not an image.
    r = client.post("/api/v1/analyze", files={"url": (None, "http://127.0.0.1:1/photo.jpg")})
    assert_error(r, 422, "validation", "image")


def test_oversize_upload_refused_before_decoding(client):
    big = ASTRONAUT + bytes(1_200_000)  # 1.27 MB against a 1 MB limit
    assert_error(analyze(client, big), 413, "payload_too_large", "limit is 1 MB")

    # Without a Content-Length (chunked), the limit applies while the body is read.
    boundary = "emolensboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="big.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()

    def chunks():
        yield head
        for _ in range(40):
            yield bytes(64_000)
        yield f"\r\n--{boundary}--\r\n".encode()

    r = client.post(
        "/api/v1/analyze", content=chunks(), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
    )
    assert "content-length" not in r.request.headers
    assert_error(r, 413, "payload_too_large", "limit")


def test_pixel_limit(client):
    # 3 million pixels of flat colour: a small file, but above the 2 MP limit of this server.
    huge = png(np.zeros((1500, 2000, 3), np.uint8))
    assert len(huge) < 1_000_000
    assert_error(analyze(client, huge, "wide.png", "image/png"), 413, "image_too_large", "pixels")


def test_unknown_endpoint_and_method(client):
    assert_error(client.get("/api/v1/nothing"), 404, "not_found")
    assert_error(client.put("/api/v1/analyze"), 405, "method_not_allowed")


# -- feedback ----------------------------------------------------------------------------------
def test_feedback_on_analysis_correction_and_confirmation(server, client):
    aid = analyze(client).json()["analysis_id"]
    before = feedback_count(server)
    r = client.post(
        "/api/v1/feedback", json={"analysis_id": aid, "face": 0, "label": "sad"}, headers=hdr(server, "write")
    )
    assert r.status_code == 201, r.text
    rec = r.json()
    assert rec["label"] == "sad" and rec["predicted"] == "happy" and rec["is_correction"] is True
    assert rec["source"] == "api" and rec["model_version"] == "fast" and rec["user_id"].startswith("key:")
    r = client.post(
        "/api/v1/feedback",
        json={"analysis_id": aid, "face": 0, "correct": True, "source": "web"},
        headers=hdr(server, "admin"),
    )
    assert r.status_code == 201 and r.json()["is_correction"] is False and r.json()["label"] == "happy"
    assert feedback_count(server) == before + 2

    got = client.get(f"/api/v1/feedback/{rec['uid']}").json()
    assert got["uid"] == rec["uid"] and got["label"] == "sad"
    crop = client.get(f"/api/v1/feedback/{rec['uid']}/crop")
    assert crop.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(crop.content)).size[0] >= 48


def test_an_uncertain_answer_is_corrected_through_the_api(server, client):
    """A blurred photo: the model answers "uncertain"; the correction stores its top class, flagged."""
    import cv2

    blurred = cv2.GaussianBlur(np.asarray(Image.open(EXAMPLE).convert("RGB")), (0, 0), 6)
    face = analyze(client, png(blurred), "blurred.png", "image/png").json()
    assert face["faces"][0]["label"] == "uncertain", face
    w = hdr(server, "write")
    r = client.post("/api/v1/feedback", json={"analysis_id": face["analysis_id"], "face": 0, "label": "sad"}, headers=w)
    assert r.status_code == 201, r.text
    assert r.json()["uncertain"] is True and r.json()["predicted"] == "happy" and r.json()["label"] == "sad"
    crop = png(np.asarray(Image.open(EXAMPLE).crop((170, 50, 280, 185))))
    r = client.post("/api/v1/feedback/crop", files={"image": ("face.png", crop, "image/png")},
                    data={"label": "sad", "predicted": "uncertain"}, headers=w)  # fmt: skip
    assert r.status_code == 201 and r.json()["uncertain"] is True and r.json()["is_correction"] is True


def test_feedback_on_uploaded_crop(server, client):
    crop = np.asarray(Image.open(EXAMPLE).crop((170, 50, 280, 185)))
    r = client.post(
        "/api/v1/feedback/crop",
        files={"image": ("face.png", png(crop), "image/png")},
        data={"label": "surprise", "predicted": "happy"},
        headers=hdr(server, "write"),
    )
    assert r.status_code == 201, r.text
    assert r.json()["label"] == "surprise" and r.json()["is_correction"] is True and r.json()["source"] == "api:crop"
    # One crop policy for both ways in: a crop larger than 96 px is fitted to 96 x 96 px, as fine-tuning reads it.
    stored = client.get(f"/api/v1/feedback/{r.json()['uid']}/crop", headers=hdr(server, "read"))
    assert Image.open(io.BytesIO(stored.content)).size == (96, 96)


def test_feedback_bad_inputs_store_nothing(server, client):
    aid = analyze(client).json()["analysis_id"]
    w = hdr(server, "write")
    before = feedback_count(server)
    blobs = server["home"] / "blobs"
    files_before = sorted(p.name for p in blobs.rglob("*")) if blobs.exists() else []
    post = lambda body, headers=w: client.post("/api/v1/feedback", json=body, headers=headers)  # noqa: E731

    assert_error(post({"analysis_id": aid, "face": 0, "label": "bored"}), 422, "bad_label", "unknown emotion")
    assert_error(post({"analysis_id": aid, "face": 0}), 422, "bad_label")  # neither label nor correct
    assert_error(post({"analysis_id": aid, "face": 5, "label": "sad"}), 404, "not_found", "no face 5")
    assert_error(post({"analysis_id": aid, "face": -1, "label": "sad"}), 404, "not_found")
    assert_error(post({"analysis_id": "0" * 32, "face": 0, "label": "sad"}), 404, "not_found", "no analysis")
    assert_error(post({"analysis_id": aid, "face": "first", "label": "sad"}), 422, "validation", "face")
    assert_error(post({"analysis_id": aid, "face": 0, "label": "sad", "extra": 1}), 422, "validation")
    r = client.post("/api/v1/feedback", content=b"face=0", headers={**w, "content-type": "text/plain"})
    assert_error(r, 415, "unsupported_media_type", "application/json")
    r = client.post("/api/v1/feedback", content=b"{not json", headers={**w, "content-type": "application/json"})
    assert_error(r, 422, "validation")

    crop = png(np.full((64, 64, 3), 128, np.uint8))
    post_crop = lambda data, label, kind="image/png": client.post(  # noqa: E731
        "/api/v1/feedback/crop", files={"image": ("c.png", data, kind)}, data={"label": label}, headers=w
    )
    assert_error(post_crop(crop, "bored"), 422, "bad_label")
    assert_error(post_crop(b"not an image", "sad"), 422, "bad_image")
    assert_error(post_crop(crop, "sad", "text/csv"), 415, "unsupported_media_type")
    r = client.post("/api/v1/feedback/crop", files={"image": ("c.png", crop, "image/png")}, headers=w)
    assert_error(r, 422, "validation", "label")

    assert feedback_count(server) == before
    assert (sorted(p.name for p in blobs.rglob("*")) if blobs.exists() else []) == files_before


def test_keys_missing_wrong_revoked_and_scope(server, client):
    aid = analyze(client).json()["analysis_id"]
    before = feedback_count(server)
    body = {"analysis_id": aid, "face": 0, "label": "sad"}
    r = client.post("/api/v1/feedback", json=body)
    assert_error(r, 401, "unauthorized", "X-API-Key")
    assert "ApiKey" in r.headers["www-authenticate"]
    assert_error(client.post("/api/v1/feedback", json=body, headers={"X-API-Key": "nonsense"}), 403, "forbidden")
    forged = server["keys"]["write"][:-4] + "AAAA"
    assert_error(client.post("/api/v1/feedback", json=body, headers={"X-API-Key": forged}), 403, "forbidden")
    r = client.post("/api/v1/feedback", json=body, headers=hdr(server, "revoked"))
    assert_error(r, 403, "forbidden", "revoked")
    r = client.post("/api/v1/feedback", json=body, headers=hdr(server, "read"))
    assert_error(r, 403, "forbidden", "'read' scope")
    r = client.post("/api/v1/models/rollback", headers=hdr(server, "write"))
    assert_error(r, 403, "forbidden", "admin")
    assert_error(client.delete("/api/v1/feedback/whatever"), 401, "unauthorized")
    assert_error(client.get("/api/v1/feedback/export"), 401, "unauthorized")  # faces: always keyed
    assert feedback_count(server) == before

    who = client.get("/api/v1/auth/key", headers=hdr(server, "admin")).json()
    assert who["scope"] == "admin" and who["name"] == "test-admin" and "secret" not in str(who)
    assert_error(client.get("/api/v1/auth/key"), 401)


def test_list_stats_export_delete(server, client):
    aid = analyze(client).json()["analysis_id"]
    w = hdr(server, "write")
    for label in ("angry", "fear"):
        client.post("/api/v1/feedback", json={"analysis_id": aid, "face": 0, "label": label}, headers=w)

    listing = client.get("/api/v1/feedback", params={"limit": 2}).json()
    assert len(listing["items"]) == 2 and listing["total"] == feedback_count(server)
    assert listing["items"][0]["label"] == "fear"  # newest first
    only = client.get("/api/v1/feedback", params={"label": "angry"}).json()
    assert only["total"] >= 1 and {i["label"] for i in only["items"]} == {"angry"}
    assert_error(client.get("/api/v1/feedback", params={"label": "bored"}), 422, "bad_label")
    assert_error(client.get("/api/v1/feedback", params={"limit": 0}), 422, "validation")

    stats = client.get("/api/v1/feedback/stats").json()
    assert stats["total"] == feedback_count(server) and stats["by_label"]["angry"] >= 1 and stats["min_feedback"] == 1

    r = client.get("/api/v1/feedback/export", headers=hdr(server, "read"))
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(r.content)).namelist()
    assert "feedback/feedback.csv" in names and any(n.startswith("feedback/images/angry/") for n in names)

    uid = listing["items"][0]["uid"]
    assert_error(client.delete(f"/api/v1/feedback/{uid}", headers=w), 403, "forbidden")
    assert client.delete(f"/api/v1/feedback/{uid}", headers=hdr(server, "admin")).status_code == 204
    assert_error(client.get(f"/api/v1/feedback/{uid}"), 404, "not_found")
    assert_error(client.delete(f"/api/v1/feedback/{uid}", headers=hdr(server, "admin")), 404, "not_found")


# -- models ------------------------------------------------------------------------------------
def test_models_promote_rollback_reload_without_restart(server, client):
    from emolens.models.registry import Registry
    from emolens.workspace import Workspace

    a = hdr(server, "admin")
    listing = client.get("/api/v1/models").json()
    assert listing["active"] is None and listing["serving"] == "fast" and "fast" in listing["available"]
    assert_error(client.post("/api/v1/models/rollback", headers=a), 409, "refused")
    assert_error(client.post("/api/v1/models/v9/promote", headers=a), 404, "not_found", "v9")

    reg = Registry(server["home"] / "registry")
    v1 = reg.register(Workspace.default().models.path("fast"), source="test", metrics={"accuracy": 0.7})
    v2 = reg.register(
        Workspace.default().models.path("fast-int8"), parent=v1.name, source="test", metrics={"accuracy": 0.69}
    )
    r = client.post(f"/api/v1/models/{v1.name}/promote", headers=a)
    assert r.status_code == 200 and r.json()["active"] is True
    assert analyze(client).json()["model"] == v1.name
    client.post(f"/api/v1/models/{v2.name}/promote", headers=a)
    assert analyze(client).json()["model"] == v2.name  # the same analyzer, reloaded
    listing = client.get("/api/v1/models").json()
    assert listing["active"] == v2.name and listing["serving"] == v2.name
    assert [v["name"] for v in listing["versions"]] == [v1.name, v2.name]
    assert listing["versions"][1]["metrics"]["accuracy"] == 0.69 and "path" not in listing["versions"][1]
    r = client.post("/api/v1/models/rollback", headers=a)
    assert r.status_code == 200 and r.json()["name"] == v1.name
    assert analyze(client).json()["model"] == v1.name


def use_settings(server, monkeypatch, **changes) -> None:
    state = server["app"].state.emolens
    monkeypatch.setattr(state, "settings", state.settings.model_copy(update=changes))


def test_finetune_refusals(server, client, monkeypatch):
    from emolens.core.errors import MissingExtraError
    from emolens.serve.routers import models

    a = hdr(server, "admin")
    assert_error(client.post("/api/v1/models/finetune", headers=hdr(server, "write")), 403, "forbidden")
    use_settings(server, monkeypatch, min_feedback=10**6)
    assert_error(client.post("/api/v1/models/finetune", headers=a), 409, "refused", "corrections")
    use_settings(server, monkeypatch, min_feedback=0)  # enough feedback, but no replay / validation data
    assert_error(client.post("/api/v1/models/finetune", headers=a), 409, "refused", "EMOLENS_REPLAY_DATA")
    r = client.post("/api/v1/models/finetune", content="epochs=1", headers={**a, "content-type": "text/plain"})
    assert_error(r, 415)
    assert_error(client.post("/api/v1/models/finetune", json={"epochs": 0}, headers=a), 422, "validation")

    def no_torch():
        raise MissingExtraError("train", "torch")

    monkeypatch.setattr(models, "check_train_extra", no_torch)
    assert_error(client.post("/api/v1/models/finetune", headers=a), 501, "missing_extra", "pip install -e '.[train]'")
    assert_error(client.get("/api/v1/jobs/nope"), 404, "not_found")
    assert client.get("/api/v1/jobs").json() == []


def test_finetune_job_runs_in_background(server, client, monkeypatch):
    """The job machinery, with the (minute-long) training replaced by a stand-in."""
    import emolens.feedback.learn

    use_settings(server, monkeypatch, min_feedback=0, replay_data=Path("x"), base_val_data=Path("y"))
    release = threading.Event()

    class Outcome:
        def to_dict(self):
            return {"candidate": "v9", "promoted": False}

    monkeypatch.setattr(emolens.feedback.learn, "finetune_from_feedback", lambda **kw: release.wait(10) and Outcome())
    a = hdr(server, "admin")
    r = client.post("/api/v1/models/finetune", json={"epochs": 1}, headers=a)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] in ("queued", "running")
    assert_error(client.post("/api/v1/models/finetune", headers=a), 409, "refused", "still")
    release.set()
    for _ in range(100):
        job = client.get(f"/api/v1/jobs/{job['id']}").json()
        if job["status"] == "succeeded":
            break
        time.sleep(0.05)
    assert job["status"] == "succeeded" and job["result"] == {"candidate": "v9", "promoted": False}


# -- cross-cutting -----------------------------------------------------------------------------
def test_cors(client):
    pre = {"Origin": "http://allowed.example", "Access-Control-Request-Method": "POST"}
    r = client.options("/api/v1/analyze", headers={**pre, "Access-Control-Request-Headers": "x-api-key"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://allowed.example"
    r = client.get("/api/v1/info", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers


def test_metrics(client):
    analyze(client)
    text = client.get("/metrics").text
    assert 'emolens_http_requests_total{method="POST",route="/api/v1/analyze",status="200"}' in text
    assert "emolens_http_request_duration_seconds_bucket" in text
    assert "emolens_faces_total" in text and "emolens_feedback_total" in text
    analyses = [ln for ln in text.splitlines() if ln.startswith("emolens_analyses_total ")]
    assert analyses and float(analyses[0].split()[1]) >= 1
    assert 'route="unmatched"' in text or "unmatched" not in text  # raw paths never become labels
    assert "/api/v1/nothing" not in text


# -- a strict server: reads need a key, a short timeout, no queue -------------------------------
class SlowAnalyzer:
    """Stands in for the analyzer: holds its worker thread until released."""

    labels = ["happy", "sad"]
    model_version = "slow"

    def __init__(self):
        self.release = threading.Event()

    def warmup(self):
        return self

    def __call__(self, image):
        from emolens.image.io import load_image
        from emolens.pipeline.results import Results

        self.release.wait(20)
        return Results(faces=[], image=load_image(image), model="slow", detector="none")


def test_strict_server_read_keys_timeout_and_busy(tmp_path):
    slow = SlowAnalyzer()

    def prepare(app):
        app.state.emolens._analyzer = slow

    settings = {"api_read_key_required": True, "request_timeout_s": 1.0, "serve_threads": 1, "serve_queue": 0}
    with running_server(tmp_path / "home", prepare=prepare, **settings) as (url, app):
        from emolens.store.keys import KeyStore

        _, read = KeyStore(app.state.emolens.db_url).create("reader", "read")
        with httpx.Client(base_url=url, timeout=30) as c:
            assert_error(c.get("/api/v1/feedback"), 401, "unauthorized")
            assert_error(c.get("/api/v1/models"), 401, "unauthorized")
            assert c.get("/api/v1/feedback", headers={"X-API-Key": read}).status_code == 200
            assert c.get("/healthz").status_code == 200  # probes stay open

            h = {"X-API-Key": read}
            t0 = time.monotonic()
            r = c.post("/api/v1/analyze", files={"image": ("a.jpg", ASTRONAUT, "image/jpeg")}, headers=h)
            assert_error(r, 504, "request_timeout", "within 1 s")
            assert time.monotonic() - t0 < 10
            # The timed-out analysis still holds the only worker: the next one is turned away, not queued.
            r = c.post("/api/v1/analyze", files={"image": ("a.jpg", ASTRONAUT, "image/jpeg")}, headers=h)
            assert_error(r, 503, "busy", "busy")
            slow.release.set()
            for _ in range(100):
                r = c.post("/api/v1/analyze", files={"image": ("a.jpg", ASTRONAUT, "image/jpeg")}, headers=h)
                if r.status_code != 503:
                    break
                time.sleep(0.05)
            assert r.status_code == 200 and r.json()["model"] == "slow"


def test_not_ready_while_the_model_is_missing(tmp_path):
    """A server whose model cannot load still answers /healthz, and /readyz says why it is not ready."""
    with running_server(tmp_path / "h", wait="/healthz", model="nope") as (url, _):
        for _ in range(200):
            r = httpx.get(f"{url}/readyz")
            if r.json()["checks"]["model_and_detector"] != "loading":
                break
            time.sleep(0.05)
        assert r.status_code == 503 and r.json()["status"] == "not_ready"
        assert "no model named 'nope'" in r.json()["checks"]["model_and_detector"]
        assert r.json()["checks"]["database"] == "ok"
        assert httpx.get(f"{url}/healthz").status_code == 200


def test_cli_keys_commands(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from emolens.cli import app
    from emolens.workspace import get_settings

    monkeypatch.setenv("EMOLENS_HOME", str(tmp_path / "h"))
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        r = runner.invoke(app, ["keys", "create", "ci-bot", "--scope", "admin"])
        assert r.exit_code == 0, r.output
        token = r.stdout.strip().splitlines()[-1]
        assert token.startswith("emk_")
        key_id = token.split("_")[1]

        assert Workspace.default().keys.verify(token).scope == "admin"
        stored = b"".join(p.read_bytes() for p in (tmp_path / "h").glob("emolens.db*"))
        assert stored and token.encode() not in stored and key_id.encode() in stored  # only a hash
        r = runner.invoke(app, ["keys", "list"])
        assert r.exit_code == 0 and key_id in r.stdout and "ci-bot" in r.stdout
        assert runner.invoke(app, ["keys", "create", "x", "--scope", "root"]).exit_code == 2
        assert runner.invoke(app, ["keys", "revoke", key_id]).exit_code == 0
        assert not Workspace.default().keys.verify(token).active
        assert key_id not in runner.invoke(app, ["keys", "list"]).stdout
        assert key_id in runner.invoke(app, ["keys", "list", "--all"]).stdout
        assert runner.invoke(app, ["keys", "revoke", "ffffffff"]).exit_code == 2
        assert "serve" in runner.invoke(app, ["--help"]).stdout
    finally:
        get_settings.cache_clear()


# -- settings passed down ----------------------------------------------------------------------
def test_create_app_uses_the_home_it_is_given_not_the_process_one(tmp_path, monkeypatch):
    """The registry, the models by name, the database and the analyzer all come from the settings
    given to create_app, even when EMOLENS_HOME points elsewhere."""
    import shutil

    from fastapi.testclient import TestClient

    from emolens.core.settings import Settings
    from emolens.models import clear_model_cache
    from emolens.serve import create_app
    from emolens.store.keys import KeyStore
    from emolens.workspace import Workspace, get_settings

    elsewhere, home = tmp_path / "elsewhere", tmp_path / "given"
    for key in ("EMOLENS_CONFIG", "EMOLENS_MODEL", "EMOLENS_DATABASE_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("EMOLENS_HOME", str(elsewhere))
    get_settings.cache_clear()
    clear_model_cache()
    try:
        (home / "models").mkdir(parents=True)
        shutil.copyfile(
            Workspace.default().models.path("fast-int8"), home / "models" / "mine.onnx"
        )  # a user model of this home
        app = create_app(Settings(home=home, threads=1))
        state = app.state.emolens
        assert state.db_url == f"sqlite:///{home / 'emolens.db'}"
        _, admin = KeyStore(state.db_url).create("admin", "admin")
        with TestClient(app, base_url="http://localhost") as c:  # a Host the server answers
            listing = c.get("/api/v1/models").json()
            assert "mine" in listing["available"] and listing["serving"] == "fast", listing
            r = c.post("/api/v1/models/mine/promote", headers={"X-API-Key": admin})
            assert r.status_code == 200 and r.json()["name"] == "v2", r.text  # v1 is the shipped default
            r = analyze(c)
            assert r.status_code == 200 and r.json()["model"] == "v2", r.text
        assert (home / "registry" / "versions" / "v2" / "model.onnx").is_file()
        assert (home / "emolens.db").is_file()
        assert not (elsewhere / "registry").exists() and not (elsewhere / "emolens.db").exists()
    finally:
        get_settings.cache_clear()
        clear_model_cache()
