"""Recent analyses kept for feedback: one row per analysis (its results as JSON and the uploaded
file as it came), shared by every server worker through the database, and forgotten after an expiry.

A JPEG upload is a tenth of its decoded pixels, so the file is kept rather than the image; it is
decoded again, the same way, when feedback needs to crop a face.

Uploads are kept no longer than needed: at most ``size`` analyses and ``max_bytes`` of uploads,
none older than the expiry. ``sweep`` (run by the server on a timer, not only when the next photo
comes) deletes what is due; on SQLite the deleted pages are zeroed (``secure_delete``), the space
is given back to the file system (incremental vacuum) and the write-ahead log truncated, so no copy
of a forgotten photo stays in the database's files.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import JSON, DateTime, LargeBinary, String, delete, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from emolens.store.db import Base, get_engine, reclaim, session


class AnalysisRow(Base):
    __tablename__ = "analyses"

    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    results: Mapped[dict] = mapped_column(JSON)
    upload: Mapped[bytes] = mapped_column(LargeBinary)


class AnalysisStore:
    """At most ``size`` analyses and ``max_bytes`` of uploads (None: no byte cap), none older than
    ``ttl_s`` seconds; the oldest go first."""

    def __init__(self, url: str | None = None, size: int = 256, ttl_s: float = 3600.0, max_bytes: int | None = None):
        self.url = url
        self.size = max(1, size)
        self.ttl = timedelta(seconds=ttl_s)
        self.max_bytes = max_bytes
        self._trimmed = False

    def put(self, key: str, results: dict[str, Any], upload: bytes) -> None:
        with session(self.url) as s:
            s.add(AnalysisRow(key=key, created_at=datetime.now(UTC), results=results, upload=upload))
            s.flush()
            if _trim(s, self):
                self._trimmed = True  # the next sweep truncates the log, where older copies may stay

    def get(self, key: str) -> tuple[dict[str, Any], bytes] | None:
        """The results and upload of analysis ``key``; None when unknown or expired."""
        with session(self.url) as s:
            row = s.get(AnalysisRow, key)
            if row is None or _aware(row.created_at) < datetime.now(UTC) - self.ttl:
                return None
            return row.results, row.upload

    def count(self) -> int:
        with session(self.url) as s:
            return s.scalar(select(func.count()).select_from(AnalysisRow)) or 0

    def sweep(self) -> int:
        """Delete what is due (expired, beyond ``size`` or ``max_bytes``) and give its space back.
        Returns how many analyses went."""
        with session(self.url) as s:
            gone = _trim(s, self)
        deleted, self._trimmed = bool(gone or self._trimmed), False
        reclaim(get_engine(self.url), deleted)  # also space freed since the last turn (puts, erasures)
        return gone

    def clear(self) -> int:
        """Forget every analysis (a person was erased: any upload may show them)."""
        with session(self.url) as s:
            gone = clear_analyses(s)
        if gone:
            reclaim(get_engine(self.url))
        return gone


def clear_analyses(s: Session) -> int:
    """Delete every analysis inside transaction ``s``; returns how many."""
    return s.execute(delete(AnalysisRow)).rowcount or 0


def _trim(s: Session, store: AnalysisStore) -> int:
    now = datetime.now(UTC)
    gone = s.execute(delete(AnalysisRow).where(AnalysisRow.created_at < now - store.ttl)).rowcount or 0
    rows = s.execute(
        select(AnalysisRow.key, func.length(AnalysisRow.upload)).order_by(AnalysisRow.created_at.desc())
    ).all()
    total, drop = 0, []
    for kept, (key, size) in enumerate(rows, 1):  # newest first; the newest is always kept
        total += size or 0
        if kept > store.size or (store.max_bytes is not None and total > store.max_bytes and kept > 1):
            drop.append(key)
    for i in range(0, len(drop), 500):
        gone += s.execute(delete(AnalysisRow).where(AnalysisRow.key.in_(drop[i : i + 500]))).rowcount or 0
    return gone


def _aware(t: datetime) -> datetime:
    # SQLite hands back naive datetimes for timezone-aware columns; they were stored in UTC.
    return t if t.tzinfo else t.replace(tzinfo=UTC)
