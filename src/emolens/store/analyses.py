"""Recent analyses kept for feedback: one row per analysis (its results as JSON and the uploaded
file as it came), shared by every server worker through the database, and forgotten after an expiry.

A JPEG upload is a tenth of its decoded pixels, so the file is kept rather than the image; it is
decoded again, the same way, when feedback needs to crop a face.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import JSON, DateTime, LargeBinary, String, delete, func, select
from sqlalchemy.orm import Mapped, mapped_column

from emolens.store.db import Base, session


class AnalysisRow(Base):
    __tablename__ = "analyses"

    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    results: Mapped[dict] = mapped_column(JSON)
    upload: Mapped[bytes] = mapped_column(LargeBinary)


class AnalysisStore:
    """At most ``size`` analyses, none older than ``ttl_s`` seconds; the oldest go first."""

    def __init__(self, url: str | None = None, size: int = 256, ttl_s: float = 3600.0):
        self.url = url
        self.size = max(1, size)
        self.ttl = timedelta(seconds=ttl_s)

    def put(self, key: str, results: dict[str, Any], upload: bytes) -> None:
        now = datetime.now(UTC)
        with session(self.url) as s:
            s.add(AnalysisRow(key=key, created_at=now, results=results, upload=upload))
            s.execute(delete(AnalysisRow).where(AnalysisRow.created_at < now - self.ttl))
            excess = s.scalar(select(func.count()).select_from(AnalysisRow)) - self.size
            if excess > 0:
                oldest = select(AnalysisRow.key).order_by(AnalysisRow.created_at).limit(excess)
                s.execute(delete(AnalysisRow).where(AnalysisRow.key.in_(oldest.scalar_subquery())))

    def get(self, key: str) -> tuple[dict[str, Any], bytes] | None:
        """The results and upload of analysis ``key``; None when unknown or expired."""
        with session(self.url) as s:
            row = s.get(AnalysisRow, key)
            if row is None or _aware(row.created_at) < datetime.now(UTC) - self.ttl:
                return None
            return row.results, row.upload


def _aware(t: datetime) -> datetime:
    # SQLite hands back naive datetimes for timezone-aware columns; they were stored in UTC.
    return t if t.tzinfo else t.replace(tzinfo=UTC)
