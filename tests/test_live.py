"""Live mode over a WebSocket (``/api/v1/live``) against a real uvicorn server on loopback, driven
with the ``websockets`` client: real frames (the shipped photo, shifted a few pixels each time)
come back with one stable track id and smoothed emotions; bad frames and bad messages are answered
on the socket without closing it; a client that sends too fast has its stale frames dropped."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from test_serve import EXAMPLE, png, running_server

ws_client = pytest.importorskip("websockets.sync.client", reason="websockets is not installed")
from websockets.exceptions import ConnectionClosed  # noqa: E402


def shifted_frames(n: int, step: tuple[int, int] = (3, 2)) -> list[bytes]:
    """The astronaut moved ``step`` pixels further right and down in each frame, as JPEG."""
    image = np.asarray(Image.open(EXAMPLE).convert("RGB"))
    h, w = image.shape[:2]
    pad = max(step) * n
    padded = np.pad(image, ((pad, 0), (pad, 0), (0, 0)), mode="edge")
    out = []
    for i in range(n):
        dx, dy = step[0] * i, step[1] * i
        frame = padded[pad - dy : pad - dy + h, pad - dx : pad - dx + w]
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(frame)).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


FRAMES = shifted_frames(15)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("live_home")
    settings = {"api_read_key_required": True, "max_upload_mb": 0.5, "max_pixels": 1_000_000}
    with running_server(home, **settings) as (url, app):
        from emolens.store.keys import KeyStore

        _, key = KeyStore(app.state.emolens.db_url).create("viewer", "read")
        yield {"url": url, "ws": "ws" + url.removeprefix("http") + "/api/v1/live", "app": app, "key": key}


def recv(ws) -> dict:
    return json.loads(ws.recv(timeout=60))


def connect(server, key: str | None = "default", **kwargs):
    """A client socket (a context manager); ``key`` goes in ``?key=`` (None: no key)."""
    key = server["key"] if key == "default" else key
    url = server["ws"] + (f"?key={key}" if key else "")
    return ws_client.connect(url, open_timeout=30, **kwargs)


@contextlib.contextmanager
def open_live(server, **kwargs):
    """A live socket past its ``ready`` message: yields the socket and that message."""
    with connect(server, **kwargs) as ws:
        ready = recv(ws)
        assert ready["type"] == "ready", ready
        yield ws, ready


def send_frame(ws, data: bytes) -> dict:
    ws.send(data)
    return recv(ws)


def assert_probs(face: dict) -> None:
    for probs in (face["probs"], face["raw_probs"]):
        assert abs(sum(probs.values()) - 1.0) < 2e-3, probs
        assert all(0.0 <= p <= 1.0 for p in probs.values())
    assert face["label"] == max(face["probs"], key=face["probs"].get)
    assert face["confidence"] == pytest.approx(face["probs"][face["label"]], abs=1e-3)


# ---------------------------------------------------------------------------------------------
def test_frames_keep_one_track_id_with_smoothed_emotions(server):
    with open_live(server) as (ws, ready):
        assert ready["detect_every"] == 1 and 0 < ready["smoothing"] <= 1
        assert ready["limits"] == {"max_bytes": 500_000, "max_pixels": 1_000_000}
        replies = [send_frame(ws, data) for data in FRAMES]
    assert [r["type"] for r in replies] == ["result"] * len(FRAMES), replies[0]
    assert [r["frame"] for r in replies] == list(range(1, len(FRAMES) + 1))
    assert all(len(r["faces"]) == 1 for r in replies), [len(r["faces"]) for r in replies]
    faces = [r["faces"][0] for r in replies]
    assert {f["track_id"] for f in faces} == {faces[0]["track_id"]}
    for f in faces:
        assert_probs(f)
        assert f["index"] == 0 and len(f["box"]) == 4
    # The first reading is the reading itself; later ones are smoothed, so they differ from the raw.
    assert faces[0]["probs"] == faces[0]["raw_probs"]
    assert any(max(abs(f["probs"][k] - f["raw_probs"][k]) for k in f["probs"]) > 1e-4 for f in faces[1:])
    # The box follows the face: it moved 3 px right per frame.
    moved = faces[-1]["box"][0] - faces[0]["box"][0]
    assert 3 * (len(FRAMES) - 1) - 10 < moved < 3 * (len(FRAMES) - 1) + 10, moved
    last = replies[-1]
    assert (last["width"], last["height"]) == (512, 512)
    assert last["dropped"] == 0 and last["fps"] and last["fps"] > 0
    assert {"decode", "detect", "classify", "queue"} <= set(last["timings_ms"])


def test_bad_frames_and_messages_are_answered_and_the_socket_stays_open(server):
    with open_live(server) as (ws, _):
        assert send_frame(ws, FRAMES[0])["type"] == "result"

        err = send_frame(ws, b"\xff\xd8\xff\xe0 this is not a JPEG")
        assert err["type"] == "error" and err["frame"] == 2
        assert err["error"]["type"] == "bad_image" and err["error"]["status"] == 422, err
        ok = send_frame(ws, FRAMES[1])
        assert ok["type"] == "result" and ok["frame"] == 3 and len(ok["faces"]) == 1

        big = send_frame(ws, FRAMES[0] + b"\0" * 500_000)  # above max_upload_mb = 0.5
        assert big["frame"] == 4 and big["error"]["type"] == "payload_too_large" and big["error"]["status"] == 413
        assert "0.5 MB" in big["error"]["message"]

        huge = send_frame(ws, png(np.zeros((1000, 1200, 3), np.uint8)))  # small file, 1.2 MP > max_pixels
        assert huge["error"]["type"] == "image_too_large" and "pixels" in huge["error"]["message"], huge

        for text, needle in [
            ("not json", "JSON"),
            ('{"type": "dance"}', "unknown message type"),
            ('{"type": "config", "detect_every": 0}', "detect_every"),
            ('{"type": "config", "smoothing": 1.5}', "smoothing"),
            ('{"type": "config", "detect_every": "2"}', "detect_every"),
            ('{"type": "config", "window": 3}', "window"),
        ]:
            ws.send(text)
            err = recv(ws)
            assert err["type"] == "error" and err["error"]["type"] == "validation", (text, err)
            assert needle in err["error"]["message"], (text, err)

        still = send_frame(ws, FRAMES[2])
        assert still["type"] == "result" and len(still["faces"]) == 1
        assert still["faces"][0]["track_id"] == ok["faces"][0]["track_id"]  # the bad frames broke nothing


def test_config_and_reset(server):
    with open_live(server) as (ws, _):
        first = send_frame(ws, FRAMES[0])["faces"][0]
        ws.send(json.dumps({"type": "config", "detect_every": 2, "smoothing": 1.0}))
        assert recv(ws) == {"type": "config", "detect_every": 2, "smoothing": 1.0}
        for data in FRAMES[1:4]:  # no smoothing now: what is shown is this frame's reading
            f = send_frame(ws, data)["faces"][0]
            assert f["probs"] == f["raw_probs"] and f["track_id"] == first["track_id"]

        ws.send(json.dumps({"type": "reset"}))
        assert recv(ws)["type"] == "reset"
        after = send_frame(ws, FRAMES[4])
        assert after["frame_index"] == 0 and len(after["faces"]) == 1
        assert after["faces"][0]["track_id"] != first["track_id"]  # a new face, as far as the viewer knows
        assert after["faces"][0]["track_id"] == send_frame(ws, FRAMES[5])["faces"][0]["track_id"]


def test_a_fast_client_gets_its_newest_frames_and_a_dropped_count(server):
    with open_live(server) as (ws, _):
        for data in FRAMES[:10]:  # no waiting: far faster than frames are analysed
            ws.send(data)
        replies = []
        while not replies or replies[-1]["frame"] != 10:
            replies.append(recv(ws))
    assert all(r["type"] == "result" for r in replies), replies
    numbers = [r["frame"] for r in replies]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)  # in order, each once
    assert replies[-1]["dropped"] == 10 - len(replies) >= 1, numbers
    assert len({r["faces"][0]["track_id"] for r in replies}) == 1


def test_access_keys_and_origin(server):
    logged: list[str] = []  # the server logs each handshake's path: never with the key in it
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: logged.append(record.getMessage())
    uvicorn_log = logging.getLogger("uvicorn.error")
    level = uvicorn_log.level
    uvicorn_log.setLevel(logging.INFO)
    uvicorn_log.addHandler(handler)
    try:
        _check_access(server)
    finally:
        uvicorn_log.removeHandler(handler)
        uvicorn_log.setLevel(level)
    handshakes = [m for m in logged if "/api/v1/live" in m]
    assert handshakes and any("key=REDACTED" in m for m in handshakes), logged
    assert not any(server["key"] in m for m in logged), logged


def _check_access(server) -> None:
    def close_code(**kwargs) -> tuple[int, str]:
        with connect(server, **kwargs) as ws, pytest.raises(ConnectionClosed) as exc:
            ws.recv(timeout=30)
        return exc.value.rcvd.code, exc.value.rcvd.reason

    code, reason = close_code(key=None)
    assert code == 4401 and "key" in reason
    code, reason = close_code(key="emk_nothing_like_a_real_key")
    assert code == 4403 and "not valid" in reason
    code, reason = close_code(origin="http://evil.example")
    assert code == 4403 and "origin" in reason

    # The key in the X-API-Key header works too (clients that can set headers); so does the page's own origin.
    origin = server["url"]
    with connect(server, key=None, additional_headers={"X-API-Key": server["key"]}, origin=origin) as ws:
        assert recv(ws)["type"] == "ready"
        assert len(send_frame(ws, FRAMES[0])["faces"]) == 1

    metrics = httpx.get(server["url"] + "/metrics").text
    analysed = [
        line for line in metrics.splitlines() if line.startswith('emolens_live_frames_total{outcome="analysed"}')
    ]
    assert analysed and float(analysed[0].split()[-1]) >= 1
    assert "emolens_live_sessions" in metrics


def test_an_encoded_key_name_is_redacted_and_revoking_the_key_closes_its_socket(server):
    """``?k%65y=`` is ``?key=`` once decoded: it is read as the key, so it must be kept out of the log
    too. A key revoked while its socket is open stops it at the next message (4403)."""
    from emolens.store.keys import KeyStore

    store = KeyStore(server["app"].state.emolens.db_url)
    row, secret = store.create("short-lived", "read")
    logged: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: logged.append(record.getMessage())
    uvicorn_log = logging.getLogger("uvicorn.error")
    level = uvicorn_log.level
    uvicorn_log.setLevel(logging.INFO)
    uvicorn_log.addHandler(handler)
    try:
        with ws_client.connect(server["ws"] + f"?k%65y={secret}", open_timeout=30) as ws:
            assert recv(ws)["type"] == "ready"
            assert len(send_frame(ws, FRAMES[0])["faces"]) == 1
            store.revoke(row.key_id)
            ws.send(FRAMES[1])
            with pytest.raises(ConnectionClosed) as exc:
                recv(ws)
            assert exc.value.rcvd.code == 4403 and "revoked" in exc.value.rcvd.reason, exc.value
    finally:
        uvicorn_log.removeHandler(handler)
        uvicorn_log.setLevel(level)
    assert any("/api/v1/live" in m and "REDACTED" in m for m in logged), logged
    assert not any(secret in m for m in logged), logged


def test_a_client_that_leaves_mid_frame_leaves_nothing_behind(server):
    state = server["app"].state.emolens
    with open_live(server) as (ws, _):
        for data in FRAMES[:3]:
            ws.send(data)  # and leave without reading the answers
    deadline = time.monotonic() + 20
    while state.gate.pending or live_sessions(server) != 0:
        assert time.monotonic() < deadline, (state.gate.pending, live_sessions(server))
        time.sleep(0.05)
    with open_live(server) as (ws, _):  # the worker slots are free again
        assert len(send_frame(ws, FRAMES[0])["faces"]) == 1


def live_sessions(server) -> float:
    text = httpx.get(server["url"] + "/metrics").text
    return float(next(line for line in text.splitlines() if line.startswith("emolens_live_sessions ")).split()[-1])
