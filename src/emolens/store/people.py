"""Tables of the identity domain: people, face embeddings, recognizer versions, attendance.

The ORM classes mirror ``migrations/versions/identity_0001.py``, which owns the schema. Every
row about a person refers to ``people`` with ON DELETE CASCADE; ``delete_person_rows`` also
deletes the dependents explicitly, so erasure holds on a database that does not enforce
foreign keys.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, LargeBinary, String, delete, select, text
from sqlalchemy.orm import Mapped, Session, mapped_column

from emolens.store.db import Base


class PersonRow(Base):
    __tablename__ = "people"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(32), unique=True)
    key: Mapped[str] = mapped_column(String(128), unique=True)
    name: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class FaceRow(Base):
    """One enrolled face: its embedding (float32 bytes) and the stored face crop's blob key."""

    __tablename__ = "face_embeddings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"), index=True)
    embedder: Mapped[str] = mapped_column(String(64), index=True)
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    image_sha256: Mapped[str] = mapped_column(String(64))
    image_key: Mapped[str | None] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(256))
    box: Mapped[list | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    @property
    def embedding(self) -> np.ndarray:
        return np.frombuffer(self.vector, dtype=np.float32, count=self.dim)


class VersionRow(Base):
    """A trained recognizer: what is needed to rebuild it exactly (its faces are in VersionFaceRow)."""

    __tablename__ = "recognizer_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    embedder: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    params: Mapped[dict] = mapped_column(JSON)
    threshold: Mapped[float] = mapped_column(Float)
    min_similarity: Mapped[float] = mapped_column(Float)
    n_people: Mapped[int] = mapped_column(Integer)
    n_embeddings: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict] = mapped_column(JSON)
    report_dir: Mapped[str | None] = mapped_column(String(512))


class VersionFaceRow(Base):
    __tablename__ = "recognizer_version_faces"

    version_id: Mapped[int] = mapped_column(ForeignKey("recognizer_versions.id", ondelete="CASCADE"), primary_key=True)
    face_id: Mapped[int] = mapped_column(ForeignKey("face_embeddings.id", ondelete="CASCADE"), primary_key=True)


class ActiveRow(Base):
    """The active-version pointer: one row per slot, switched inside one transaction."""

    __tablename__ = "recognizer_active"

    slot: Mapped[str] = mapped_column(String(16), primary_key=True)
    version_id: Mapped[int | None] = mapped_column(ForeignKey("recognizer_versions.id", ondelete="CASCADE"))
    switched_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SessionRow(Base):
    __tablename__ = "attendance_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(256))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    version: Mapped[int | None] = mapped_column(Integer)
    threshold: Mapped[float | None] = mapped_column(Float)
    frames: Mapped[int] = mapped_column(Integer, default=0)
    undecodable: Mapped[int] = mapped_column(Integer, default=0)
    faces: Mapped[int] = mapped_column(Integer, default=0)
    unknown_faces: Mapped[int] = mapped_column(Integer, default=0)


class RecordRow(Base):
    """One person present in one session: first sighting, confidence, and an emotion tally."""

    __tablename__ = "attendance_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("attendance_sessions.id", ondelete="CASCADE"))
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"), index=True)
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    first_seen_source: Mapped[str] = mapped_column(String(512))
    confidence: Mapped[float] = mapped_column(Float)
    best_confidence: Mapped[float] = mapped_column(Float)
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sightings: Mapped[int] = mapped_column(Integer)
    emotions: Mapped[dict] = mapped_column(JSON)


def delete_person_rows(s: Session, person_id: int) -> dict[str, int]:
    """Delete a person and every row about them; returns the number of rows deleted per table.

    On SQLite, ``secure_delete`` makes the freed pages zeroed rather than left holding the deleted
    names and vectors until reused; ``checkpoint`` afterwards moves them out of the WAL file."""
    if s.get_bind().dialect.name == "sqlite":
        s.execute(text("PRAGMA secure_delete=ON"))
    face_ids = select(FaceRow.id).where(FaceRow.person_id == person_id)
    counts = {
        "attendance_records": s.execute(delete(RecordRow).where(RecordRow.person_id == person_id)).rowcount,
        "recognizer_version_faces": s.execute(
            delete(VersionFaceRow).where(VersionFaceRow.face_id.in_(face_ids))
        ).rowcount,
        "face_embeddings": s.execute(delete(FaceRow).where(FaceRow.person_id == person_id)).rowcount,
        "people": s.execute(delete(PersonRow).where(PersonRow.id == person_id)).rowcount,
    }
    return counts


def checkpoint(engine) -> None:
    """SQLite in WAL mode keeps recent page images in ``-wal``: copy them into the database and
    truncate the log, so erased rows leave no copy behind. A no-op elsewhere; best effort when
    another connection is reading."""
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
