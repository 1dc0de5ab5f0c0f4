"""uvicorn's HTTP protocol with a deadline for request headers.

uvicorn closes an idle keep-alive connection, but not one that opened and then sent nothing, or
sent half its headers: each such connection holds a socket and memory for as long as the client
likes (slowloris). Here every connection must send a complete request head within
``header_timeout_s`` of opening, or of the previous response; otherwise it is closed. A request
whose head arrived is governed by ``request_timeout_s`` instead.

uvicorn builds protocol objects itself, from a class it pickles into its worker processes, so the
deadline cannot be passed to them: ``create_app`` sets it for its process from the settings it
was given (``set_header_timeout``), in every worker too, since each worker creates its app.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol


class _HeaderDeadline:
    """Mixed into a uvicorn HTTP protocol class (which provides loop, transport, cycle)."""

    header_timeout_s: float = 10.0  # the setting's default, until create_app sets this process's
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        seconds = _HeaderDeadline.header_timeout_s
        if seconds and seconds > 0:
            self._deadline = self.loop.call_later(seconds, self._expire)  # type: ignore[attr-defined]

    def _expire(self) -> None:
        cycle = self.cycle  # type: ignore[attr-defined]
        busy = cycle is not None and not cycle.response_complete
        if not busy and not self.transport.is_closing():  # type: ignore[attr-defined]
            self.transport.close()  # type: ignore[attr-defined]


class H11WithHeaderDeadline(_HeaderDeadline, H11Protocol):
    pass


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HttpToolsWithHeaderDeadline(_HeaderDeadline, HttpToolsProtocol):
        pass

except ImportError:  # httptools is optional; uvicorn then uses h11
    HttpToolsWithHeaderDeadline = None  # type: ignore[assignment,misc]


def set_header_timeout(seconds: float) -> None:
    """The deadline for request heads of every connection this process accepts from now on (0: none)."""
    _HeaderDeadline.header_timeout_s = seconds


def http_protocol() -> type:
    """The protocol class for ``uvicorn.run(http=...)``: httptools when installed, as uvicorn's "auto"."""
    return HttpToolsWithHeaderDeadline or H11WithHeaderDeadline
