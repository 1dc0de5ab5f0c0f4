"""``WS /api/v1/live``: camera frames in, faces with track ids and smoothed emotions out.

One ``LiveSession`` per connection, so track ids and smoothing belong to one viewer. The protocol:

- the client sends each frame as one **binary** message (JPEG, PNG or WebP; at most
  ``max_upload_mb`` and ``max_pixels``, as uploads);
- it may send **text** messages ``{"type": "config", "detect_every": N, "smoothing": a}`` and
  ``{"type": "reset"}`` (no smoothing memory; faces get new ids, numbered on from the last one
  shown on this connection); each is acknowledged in order with ``{"type": "config", ...}`` or
  ``{"type": "reset"}``;
- the server answers ``{"type": "ready", ...}`` once on opening, then one
  ``{"type": "result", "frame": n, "faces": [...], "timings_ms": ..., "fps": ..., "dropped": d}``
  per analysed frame (``n`` counts the binary messages of the connection from 1), or
  ``{"type": "error", "frame": n, "error": {"type", "message", "status"}}`` (``frame`` is null for a
  bad text message); the connection stays open.

Frames are analysed strictly in order, one at a time per connection, in the same worker pool as
``/analyze`` (so the server's concurrency limit holds). While one is being analysed only the
newest frame waits: a client sending faster than the server reads is answered about its newest
frames, never a growing backlog; ``dropped`` counts the frames skipped so.

Access: when reads need a key, send it as ``?key=`` (a browser cannot set headers on a WebSocket)
or in ``X-API-Key``; without one the socket is closed with code 4401, with a bad one 4403. The
key is checked again before each message is handled: revoking it closes the socket with 4403. A
browser page from another origin (not this host, not in ``cors_origins``) is closed with 4403.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import weakref
from collections import deque
from urllib.parse import parse_qsl, urlencode, urlsplit

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from emolens.core.errors import EmoLensError
from emolens.serve.deps import ServerState, _check
from emolens.serve.errors import ForbiddenError, UnauthorizedError, error_type
from emolens.serve.logs import SECRET_PARAMS
from emolens.serve.schemas import LiveConfigIn

log = logging.getLogger("emolens.serve")

router = APIRouter(prefix="/api/v1", tags=["analyze"])

CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
MAX_TEXT = 4096  # bytes of a control message
MAX_WAITING_CONTROLS = 32  # control messages waiting behind a frame being analysed
FPS_WINDOW = 10  # answered frames the fps is measured over


# -- metrics -----------------------------------------------------------------------------------
class LiveMetrics:
    def __init__(self, registry) -> None:
        from prometheus_client import Counter, Gauge

        self.frames = Counter(
            "emolens_live_frames",
            "Live frames received over WebSockets, by outcome (analysed, dropped, refused)",
            ["outcome"],
            registry=registry,
        )
        self.sessions = Gauge("emolens_live_sessions", "Open live WebSocket connections", registry=registry)


_METRICS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_METRICS_LOCK = threading.Lock()


def live_metrics(state: ServerState) -> LiveMetrics:
    """The live counters, registered in the app's own metrics registry on first use."""
    with _METRICS_LOCK:
        m = _METRICS.get(state.metrics)
        if m is None:
            m = _METRICS[state.metrics] = LiveMetrics(state.metrics.registry)
        return m


# -- access ------------------------------------------------------------------------------------
def _origin_allowed(websocket: WebSocket, allowed: list[str]) -> bool:
    """Browsers send Origin and apply no CORS to WebSockets: a page elsewhere could otherwise read
    results through a visitor's browser. Clients without Origin (scripts) are not browsers."""
    origin = websocket.headers.get("origin")
    if not origin or "*" in allowed or origin in allowed:
        return True
    host = websocket.headers.get("host", "")
    return bool(host) and urlsplit(origin).netloc.lower() == host.lower()


def _redact_key(websocket: WebSocket) -> None:
    """Blank ``?key=`` in the scope, in place: the server logs the handshake's path and query string,
    and a key must not end up in a log. Names are compared decoded, as the key is read: ``?k%65y=``
    is ``?key=``."""
    raw = websocket.scope.get("query_string", b"")
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    if any(k.lower() in SECRET_PARAMS for k, _ in pairs):
        pairs = [(k, "REDACTED") if k.lower() in SECRET_PARAMS else (k, v) for k, v in pairs]
        websocket.scope["query_string"] = urlencode(pairs).encode("latin-1")


async def _refuse(websocket: WebSocket, code: int, message: str) -> None:
    """Accept, then close with ``code``: a close before accepting reaches the client as a bare HTTP 403."""
    await websocket.accept()
    await _close(websocket, code, message)


async def _close(websocket: WebSocket, code: int, message: str) -> None:
    reason = message.encode()[:123].decode(errors="ignore")  # a close reason is at most 123 bytes
    await websocket.close(code=code, reason=reason)


# -- one connection ----------------------------------------------------------------------------
class LiveConnection:
    def __init__(self, websocket: WebSocket, state: ServerState, token: str | None = None):
        s = state.settings
        self.ws = websocket
        self.state = state
        self.token = token  # checked again before each message is handled: a revoked key stops here
        self.metrics = live_metrics(state)
        self.max_bytes = int(s.max_upload_mb * 1_000_000)
        self.max_pixels = s.max_pixels
        self.detect_every = 1
        self.smoothing = float(s.video_smoothing)
        self.session = None  # made in a worker thread with the first frame: the analyzer may load then
        self.queue: deque[tuple] = deque()  # ("frame", n, bytes, received) and ("config"|"reset", ...)
        self.wake = asyncio.Event()
        self.send_lock = asyncio.Lock()
        self.received = 0
        self.dropped = 0
        self.id_offset = 0  # track ids stay unique across resets on one connection
        self.max_id = 0
        self.answered: deque[float] = deque(maxlen=FPS_WINDOW)

    # -- sending ---------------------------------------------------------------------------
    async def send(self, message: dict) -> None:
        async with self.send_lock:
            await self.ws.send_text(json.dumps(message, separators=(",", ":"), allow_nan=False))

    async def send_error(self, type_: str, message: str, status: int, frame: int | None = None) -> None:
        await self.send(
            {"type": "error", "frame": frame, "error": {"type": type_, "message": message, "status": status}}
        )

    def config(self) -> dict:
        return {"detect_every": self.detect_every, "smoothing": self.smoothing}

    # -- receiving -------------------------------------------------------------------------
    async def receive_loop(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                await self.on_frame(message["bytes"])
            elif message.get("text") is not None:
                await self.on_text(message["text"])

    async def on_frame(self, data: bytes) -> None:
        self.received += 1
        n = self.received
        if len(data) > self.max_bytes:
            self.metrics.frames.labels("refused").inc()
            limit = f"{self.max_bytes / 1e6:g} MB"
            await self.send_error(
                "payload_too_large",
                f"frame too large ({len(data) / 1e6:.1f} MB): the limit is {limit} (EMOLENS_MAX_UPLOAD_MB)",
                413,
                n,
            )
            return
        # Only the newest frame waits: any frame still waiting is stale now.
        stale = [item for item in self.queue if item[0] == "frame"]
        if stale:
            self.queue = deque(item for item in self.queue if item[0] != "frame")
            self.dropped += len(stale)
            self.metrics.frames.labels("dropped").inc(len(stale))
        self.queue.append(("frame", n, data, time.perf_counter()))
        self.wake.set()

    async def on_text(self, text: str) -> None:
        if len(text.encode()) > MAX_TEXT:
            return await self.send_error("validation", f"control message above {MAX_TEXT} bytes", 422)
        try:
            body = json.loads(text)
        except ValueError:
            return await self.send_error("validation", "a text message must be JSON: {'type': 'config'|'reset'}", 422)
        kind = body.get("type") if isinstance(body, dict) else None
        if kind == "reset":
            item: tuple = ("reset",)
        elif kind == "config":
            try:
                cfg = LiveConfigIn.model_validate(body)
            except ValidationError as exc:
                msg = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
                return await self.send_error("validation", f"bad config: {msg}", 422)
            item = ("config", cfg)
        else:
            return await self.send_error(
                "validation",
                f"unknown message type {kind!r}: send frames as binary messages, and text "
                '{"type": "config", "detect_every": N, "smoothing": a} or {"type": "reset"}',
                422,
            )
        if len(self.queue) >= MAX_WAITING_CONTROLS:
            return await self.send_error("busy", "too many control messages waiting; slow down", 503)
        self.queue.append(item)
        self.wake.set()

    # -- analysing, in order ---------------------------------------------------------------
    async def key_still_valid(self) -> bool:
        """The key the socket was opened with is still valid (not revoked meanwhile); if not, the
        socket is closed with 4403. A database that cannot answer now does not close it."""
        if not self.token:
            return True
        try:
            await self.state.db(_check, self.state, self.token, "read")
        except (ForbiddenError, UnauthorizedError) as exc:
            await _close(self.ws, CLOSE_FORBIDDEN, str(exc))
            return False
        except EmoLensError:
            pass
        return True

    async def work_loop(self) -> None:
        while True:
            while not self.queue:
                self.wake.clear()
                await self.wake.wait()
            if not await self.key_still_valid():
                return
            item = self.queue.popleft()
            if item[0] == "frame":
                await self.analyse(*item[1:])
            elif item[0] == "config":
                self.apply_config(item[1])
                await self.send({"type": "config", **self.config()})
            else:
                self.reset()
                await self.send({"type": "reset", **self.config()})

    def apply_config(self, cfg: LiveConfigIn) -> None:
        from emolens.video.smooth import make_smoother

        if cfg.detect_every is not None:
            self.detect_every = cfg.detect_every
        if cfg.smoothing is not None:
            self.smoothing = float(cfg.smoothing)
        if self.session is not None:  # no frame is being analysed here: this loop awaits each one
            video = self.session.video
            video.detect_every = self.detect_every
            if cfg.smoothing is not None:
                video.smoother = make_smoother(self.smoothing)

    def reset(self) -> None:
        if self.session is not None:
            self.session.reset()
        # LiveSession numbers faces from 1 again after a reset; shift them past every id shown so far.
        self.id_offset = self.max_id

    def process(self, data: bytes):
        """In a worker thread: decode with the server's limits, then the session's next frame."""
        from emolens.image.io import load_image
        from emolens.video.live import LiveSession

        t0 = time.perf_counter()
        image = load_image(data, max_pixels=self.max_pixels)
        decode_ms = (time.perf_counter() - t0) * 1e3
        if self.session is None:
            self.session = LiveSession(
                self.state.live_analyzer, detect_every=self.detect_every, smoothing=self.smoothing
            )
        results = self.session.process(image)
        results.timings_ms = {"decode": decode_ms, **results.timings_ms}
        return results

    async def analyse(self, n: int, data: bytes, received: float) -> None:
        started = time.perf_counter()
        try:
            results = await self.state.gate.run(self.process, data)
        except EmoLensError as exc:
            self.metrics.frames.labels("refused").inc()
            await self.send_error(error_type(exc), str(exc), int(getattr(exc, "http_status", 500)), n)
            return
        except Exception as exc:  # a bug: say so on the socket, keep the connection
            log.exception("live frame %d failed", n)
            self.metrics.frames.labels("refused").inc()
            await self.send_error(
                "internal", f"internal error ({type(exc).__name__}); the server log has details", 500, n
            )
            return
        self.metrics.frames.labels("analysed").inc()
        now = time.perf_counter()
        self.answered.append(now)
        d = results.to_dict()
        d.pop("source", None)
        faces = d["faces"]
        for f in faces:
            if f["track_id"] is not None:
                f["track_id"] += self.id_offset
                self.max_id = max(self.max_id, f["track_id"])
        span = self.answered[-1] - self.answered[0]
        fps = round((len(self.answered) - 1) / span, 2) if len(self.answered) > 1 and span > 0 else None
        await self.send(
            {
                "type": "result",
                "frame": n,
                **d,
                "faces": faces,
                "timings_ms": {"queue": round((started - received) * 1e3, 2), **d["timings_ms"]},
                "fps": fps,
                "dropped": self.dropped,
            }
        )


@router.websocket("/live")
async def live(websocket: WebSocket) -> None:
    """Live mode: see the module's docstring for the protocol."""
    state: ServerState = websocket.app.state.emolens
    s = state.settings
    token = websocket.query_params.get("key") or websocket.headers.get("x-api-key")
    _redact_key(websocket)
    if not _origin_allowed(websocket, list(s.cors_origins or [])):
        origin = websocket.headers.get("origin")
        return await _refuse(websocket, CLOSE_FORBIDDEN, f"origin {origin} is not allowed (EMOLENS_CORS_ORIGINS)")
    if s.api_read_key_required or token:
        try:
            await run_in_threadpool(_check, state, token, "read")
        except UnauthorizedError:
            return await _refuse(websocket, CLOSE_UNAUTHORIZED, "an API key with the 'read' scope is needed: ?key=")
        except ForbiddenError as exc:
            return await _refuse(websocket, CLOSE_FORBIDDEN, str(exc))

    await websocket.accept()
    conn = LiveConnection(websocket, state, token)
    conn.metrics.sessions.inc()
    tasks: list[asyncio.Task] = []
    try:
        limits = {"max_bytes": conn.max_bytes, "max_pixels": conn.max_pixels}
        await conn.send({"type": "ready", **conn.config(), "limits": limits})
        tasks = [asyncio.create_task(conn.receive_loop()), asyncio.create_task(conn.work_loop())]
        # The receiver ends when the client closes; either ends early on an error.
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task.exception() is not None:
                raise task.exception()
    except (WebSocketDisconnect, OSError):
        pass  # the client went away while something was being sent to it
    except Exception:
        log.exception("live connection failed")
        with contextlib.suppress(Exception):
            await websocket.close(code=1011, reason="internal error; the server log has details")
    finally:
        for task in tasks:
            task.cancel()  # a frame being analysed finishes in its worker thread; its answer is dropped
        await asyncio.gather(*tasks, return_exceptions=True)
        conn.metrics.sessions.dec()
