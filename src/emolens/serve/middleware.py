"""Pure ASGI middleware (no BaseHTTPMiddleware: it buffers and breaks cancellation):
body size limit, request timeout, and per-route metrics."""

from __future__ import annotations

import asyncio
import time

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emolens.serve.errors import error_response


class BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive`` once the body passes the limit. An HTTPException because FastAPI
    re-raises those from body parsing (others become a 400), so it reaches the JSON error handler,
    or, outside a route, the middleware below."""

    def __init__(self, message: str):
        super().__init__(status_code=413, detail=message)


DRAIN_BYTES = 64 * 2**20


async def _drain(receive: Receive, budget: int) -> bool:
    """Read and drop the rest of a request body, up to ``budget`` bytes; True if it all came."""
    while budget >= 0:
        message = await receive()
        if message["type"] != "http.request":
            return False
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return True
    return False


class BodyLimitMiddleware:
    """Refuse request bodies above ``max_bytes`` with a 413, before any of it is parsed or decoded:
    at once when Content-Length says so, otherwise as soon as the bytes read pass the limit
    (chunked uploads). Nothing above the limit is kept in memory.

    The refused rest of the body is read and dropped (up to ``DRAIN_BYTES``) before the answer:
    a server that answers and closes with unread bytes makes the kernel reset the connection, and
    the client then sees "connection reset" instead of the 413. Beyond that, it answers anyway and
    closes."""

    def __init__(self, app: ASGIApp, max_bytes: int, drain_bytes: int = DRAIN_BYTES):
        self.app = app
        self.max_bytes = max_bytes
        self.drain_bytes = drain_bytes

    def _message(self, size: int | None = None) -> str:
        limit = f"{self.max_bytes / 1e6:g} MB"
        got = f" ({size / 1e6:.1f} MB sent)" if size else ""
        return f"request body too large{got}: the limit is {limit} (EMOLENS_MAX_UPLOAD_MB)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = None
        if length is not None and length > self.max_bytes:
            drained = length <= self.drain_bytes and await _drain(receive, self.drain_bytes)
            headers = None if drained else {"Connection": "close"}
            response = error_response(413, "payload_too_large", self._message(length), headers=headers)
            return await response(scope, receive, send)

        total = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal total
            message = await receive()
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > self.max_bytes:
                    if message.get("more_body", False):
                        await _drain(receive, self.drain_bytes)
                    raise BodyTooLarge(self._message())
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as exc:  # raised where no handler caught it (outside a route)
            if started:
                raise
            response = error_response(413, "payload_too_large", exc.detail, headers={"Connection": "close"})
            await response(scope, receive, send)


class TimeoutMiddleware:
    """Answer 504 when no response has started within ``seconds``. Once the response starts, the
    deadline is lifted (a large download is not cut off). Work that cannot be interrupted (an
    analysis, or a database call in a worker thread) is left behind: it is cancelled, finishes in its
    thread, and its answer is dropped, so a hung database or a long analysis never holds the reply."""

    def __init__(self, app: ASGIApp, seconds: float):
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.seconds or self.seconds <= 0:
            return await self.app(scope, receive, send)
        started = asyncio.Event()
        abandoned = False

        async def guarded_send(message: Message) -> None:
            if abandoned:
                return  # the client already has its 504
            if message["type"] == "http.response.start":
                started.set()
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, guarded_send))
        waiter = asyncio.ensure_future(started.wait())
        try:
            await asyncio.wait({task, waiter}, timeout=self.seconds, return_when=asyncio.FIRST_COMPLETED)
            if task.done() or started.is_set():
                return await task
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            waiter.cancel()
        abandoned = True
        task.cancel()
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # consumed: no "never retrieved"
        response = error_response(
            504,
            "request_timeout",
            f"the request was not answered within {self.seconds:g} s (EMOLENS_REQUEST_TIMEOUT_S); "
            "try a smaller image or try again when the server is less busy",
        )
        await response(scope, receive, send)


class MetricsMiddleware:
    """Count requests and time them, labelled by route template (never the raw path)."""

    def __init__(self, app: ASGIApp, metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500
        t0 = time.perf_counter()

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, path, str(status)).inc()
            self.metrics.latency.labels(method, path).observe(time.perf_counter() - t0)


OPEN_PATHS = ("/healthz", "/readyz", "/metrics")  # probes and scrapers address a pod by its IP


def host_name(header: str) -> str:
    """``example.com:8000`` → ``example.com``; ``[::1]:8000`` → ``::1``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class HostMiddleware:
    """Answer only requests whose Host header names this server (``allowed_hosts``): a web page
    elsewhere that points its own name at 127.0.0.1 (DNS rebinding) is refused with 400, before any
    route runs. Entries are names or addresses; ``*.example.com`` allows subdomains, ``*`` any host.
    Health, readiness and metrics stay open to probes that use an address."""

    def __init__(self, app: ASGIApp, allowed: list[str]):
        self.app = app
        self.any = "*" in allowed
        self.names = {host_name(a) for a in allowed if not a.startswith("*.")}
        self.suffixes = tuple(a[1:].lower() for a in allowed if a.startswith("*."))

    def allows(self, header: str) -> bool:
        name = host_name(header)
        return self.any or name in self.names or (bool(self.suffixes) and name.endswith(self.suffixes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.any or scope.get("path") in OPEN_PATHS:
            return await self.app(scope, receive, send)
        header = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"), "")
        if self.allows(header):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 4403, "reason": "host not allowed"})
            return
        message = (
            f"host {header[:100]!r} is not one of this server's names; "
            "add it to EMOLENS_ALLOWED_HOSTS if it should answer to it"
        )
        await error_response(400, "host_not_allowed", message)(scope, receive, send)
