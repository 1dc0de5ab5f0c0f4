"""Keep secrets and personal ids out of the server's logs.

A key sent as ``?key=`` (refused on HTTP, used by the live WebSocket) and the person id in
``/api/v1/people/{key}`` paths would otherwise stay in the access log, the id even after the
person is erased. ``redact`` rewrites a request target; ``AccessLogFilter`` applies it to
uvicorn's access log records.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, urlencode

SECRET_PARAMS = {"key", "api_key", "x-api-key"}  # query names that carry a key, compared decoded
_PERSON = re.compile(r"^(/api/v1/people/)(?!versions(?:/|$|\?)|train(?:$|\?))[^/?]+")


def redact(target: str) -> str:
    """``/api/v1/people/P001/images?key=emk_x`` → ``/api/v1/people/{key}/images?key=REDACTED``.
    Query names are decoded first, as a server reads them (``?k%65y=`` is ``?key=``)."""
    path, sep, query = target.partition("?")
    if sep:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in SECRET_PARAMS for k, _ in pairs):
            query = urlencode([(k, "REDACTED") if k.lower() in SECRET_PARAMS else (k, v) for k, v in pairs])
    return _PERSON.sub(r"\1{key}", path) + sep + query


class AccessLogFilter(logging.Filter):
    """uvicorn logs ``'%s - "%s %s HTTP/%s" %d'`` with the target as the third argument."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact(args[2]), *args[3:])
        return True


def install() -> None:
    """Filter uvicorn's access log (idempotent)."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, AccessLogFilter) for f in logger.filters):
        logger.addFilter(AccessLogFilter())
