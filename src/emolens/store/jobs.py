"""Background jobs (fine-tuning) in the database, so that every server worker sees them and only
one runs at a time across all of them.

The slot is a row with a fixed primary key: claiming it is an INSERT, which the database lets
exactly one worker win (on SQLite and PostgreSQL alike). A job whose worker died without
releasing the slot is taken over once its heartbeat is older than ``stale_s``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import JSON, DateTime, String, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from emolens.core.errors import NotFoundError, RefusedError
from emolens.store.db import Base, session

SLOT = "jobs"  # one slot: fine-tuning jobs never run side by side
KEEP = 50  # finished jobs kept for listing


class JobRow(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))  # queued, running, succeeded, failed
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    result: Mapped[dict | None] = mapped_column(JSON)
    error: Mapped[dict | None] = mapped_column(JSON)


class JobSlotRow(Base):
    __tablename__ = "job_slots"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(32))


@dataclass
class Job:
    id: str
    kind: str
    status: str
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    result: dict | None = None
    error: dict | None = None

    @classmethod
    def from_row(cls, r: JobRow) -> Job:
        return cls(
            r.id, r.kind, r.status, _iso(r.created_at), _iso(r.started_at), _iso(r.finished_at), r.result, r.error
        )


class JobStore:
    def __init__(self, url: str | None = None, stale_s: float = 600.0):
        self.url = url
        self.stale = timedelta(seconds=stale_s)

    def claim(self, kind: str) -> Job:
        """A new queued job holding the slot; RefusedError while another job holds it."""
        now = datetime.now(UTC)
        job_id = uuid.uuid4().hex[:12]
        self._take_over_stale(now)
        try:
            with session(self.url) as s:
                s.add(JobSlotRow(name=SLOT, job_id=job_id))
                s.flush()  # the INSERT that only one claimant can win
                s.add(JobRow(id=job_id, kind=kind, status="queued", created_at=now, heartbeat_at=now))
        except IntegrityError:
            with session(self.url) as s:
                slot = s.get(JobSlotRow, SLOT)
                busy = s.get(JobRow, slot.job_id) if slot else None
            what = f"job {busy.id} ({busy.kind}) is still {busy.status}" if busy else "another job is starting"
            raise RefusedError(f"{what}; wait for it to end") from None
        self._forget_old()
        return self.get(job_id)

    def _take_over_stale(self, now: datetime) -> None:
        with session(self.url) as s:
            slot = s.get(JobSlotRow, SLOT)
            if slot is None:
                return
            job = s.get(JobRow, slot.job_id)
            if job is None or _aware(job.heartbeat_at) < now - self.stale:
                if job is not None and job.status in ("queued", "running"):
                    job.status, job.finished_at = "failed", now
                    job.error = {"type": "internal", "message": "the worker running this job stopped"}
                s.execute(delete(JobSlotRow).where(JobSlotRow.name == SLOT, JobSlotRow.job_id == slot.job_id))

    def update(self, job_id: str, **fields: Any) -> None:
        """Set fields of a job (``status``, ``result``, ``error``; times are set from the status)."""
        now = datetime.now(UTC)
        with session(self.url) as s:
            job = s.get(JobRow, job_id)
            for k, v in fields.items():
                setattr(job, k, v)
            job.heartbeat_at = now
            if fields.get("status") == "running":
                job.started_at = now
            if fields.get("status") in ("succeeded", "failed"):
                job.finished_at = now
                s.execute(delete(JobSlotRow).where(JobSlotRow.name == SLOT, JobSlotRow.job_id == job_id))

    def get(self, job_id: str) -> Job:
        with session(self.url) as s:
            row = s.get(JobRow, job_id)
            if row is None:
                raise NotFoundError(f"no job {job_id!r} (the server keeps its last {KEEP} jobs)")
            return Job.from_row(row)

    def list(self) -> list[Job]:
        """The most recent jobs, newest first."""
        with session(self.url) as s:
            rows = s.scalars(select(JobRow).order_by(JobRow.created_at.desc()).limit(KEEP)).all()
            return [Job.from_row(r) for r in rows]

    def _forget_old(self) -> None:
        with session(self.url) as s:
            keep = select(JobRow.id).order_by(JobRow.created_at.desc()).limit(KEEP)
            s.execute(delete(JobRow).where(JobRow.id.not_in(keep.scalar_subquery())))


def _aware(t: datetime) -> datetime:
    # SQLite hands back naive datetimes for timezone-aware columns; they were stored in UTC.
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _iso(t: datetime | None) -> str | None:
    return None if t is None else _aware(t).isoformat(timespec="seconds")
