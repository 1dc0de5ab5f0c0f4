"""The people store: the rows of the identity domain (people, face embeddings, recognizer
versions, attendance sessions and records) and the queries on them.

The ORM classes mirror ``migrations/versions/identity_0001.py``, which owns the schema. Every
row about a person refers to ``people`` with ON DELETE CASCADE; ``delete_person_rows`` also
deletes the dependents explicitly, so erasure holds on a database that does not enforce
foreign keys.

``PeopleStore.transaction()`` gives a ``PeopleRows``: the queries of one transaction, so that
what belongs together (a person and their new face, a version and its active pointer) is
committed together. The domain above it (``emolens.identify``) never touches a raw session.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, LargeBinary, String, delete, func, select, text
from sqlalchemy.orm import Mapped, Session, mapped_column

from emolens.core.errors import AmbiguousError, EmoLensError, NotFoundError
from emolens.store.analyses import clear_analyses
from emolens.store.db import Base, get_engine, session

ACTIVE_SLOT = "default"


class InvalidPersonError(EmoLensError):
    """A person id that cannot be stored (empty, too long, or with a slash)."""

    http_status = 422


def check_key(key: str) -> str:
    """A person id as stored (stripped), or InvalidPersonError."""
    key = str(key).strip()
    if not key or len(key) > 128 or "/" in key or "\\" in key:
        raise InvalidPersonError(f"person id {key[:40]!r} is not valid: 1-128 characters, no slashes")
    return key


def as_utc(t: datetime) -> datetime:
    """SQLite hands back naive datetimes: they were stored as UTC."""
    return t if t.tzinfo else t.replace(tzinfo=UTC)


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
    names and vectors until reused; ``checkpoint`` afterwards moves them out of the WAL file.
    Every recent upload goes too (``store.analyses``): which of them show the person is unknown."""
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
        # the server's recent uploads (kept for feedback) may show them: none is kept past an erasure
        "recent_uploads": clear_analyses(s),
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


class PeopleStore:
    """The identity rows of the database at ``url``."""

    def __init__(self, url: str):
        self.url = url

    @contextmanager
    def transaction(self) -> Iterator[PeopleRows]:
        """The queries of one transaction: everything inside is committed together, or nothing is."""
        with session(self.url) as s:
            yield PeopleRows(s)

    def database(self) -> str:
        """The database's URL with any password hidden (a cache key, never logged with a password)."""
        return get_engine(self.url).url.render_as_string(hide_password=True)

    def checkpoint(self) -> None:
        """See ``checkpoint``: after an erasure, no copy of the erased rows stays in SQLite's log."""
        checkpoint(get_engine(self.url))

    def find_session(self, uid: str | None = None, open_only: bool = False) -> SessionRow:
        """An attendance session by id (a unique prefix is enough), or with ``uid`` None the
        latest one (``open_only``: the latest open one). NotFoundError when there is none."""
        with self.transaction() as rows:
            return rows.find_session(uid, open_only)


class PeopleRows:
    """The identity queries inside one transaction (made by ``PeopleStore.transaction``)."""

    def __init__(self, s: Session):
        self._s = s

    # -- people and their faces

    def person(self, key: str, create: bool = False, name: str | None = None) -> tuple[PersonRow, bool]:
        """The person with ``key`` and whether this call created them (``create``; a new ``name``
        renames an existing one), or NotFoundError."""
        key = check_key(key)
        row = self._s.scalars(select(PersonRow).where(PersonRow.key == key)).first()
        if row is None:
            if not create:
                raise NotFoundError(f"no enrolled person with id {key!r}; see `emolens people list`")
            row = PersonRow(
                uid=uuid.uuid4().hex, key=key, name=(name or key).strip() or key, created_at=datetime.now(UTC)
            )
            self._s.add(row)
            self._s.flush()
            return row, True
        if name and name.strip() and name.strip() != row.name:
            row.name = name.strip()
        return row, False

    def person_or_none(self, key: str) -> PersonRow | None:
        return self._s.scalars(select(PersonRow).where(PersonRow.key == key)).first()

    def people(self) -> list[PersonRow]:
        """Everyone, by key."""
        return list(self._s.scalars(select(PersonRow).order_by(PersonRow.key)).all())

    def names(self) -> dict[int, tuple[str, str]]:
        """Person row id -> (key, name), for everyone."""
        return {r.id: (r.key, r.name) for r in self._s.scalars(select(PersonRow)).all()}

    def face_counts(self, embedder: str) -> dict[int, int]:
        """Person row id -> their faces enrolled with ``embedder`` (people without any are absent)."""
        q = select(FaceRow.person_id, func.count()).where(FaceRow.embedder == embedder).group_by(FaceRow.person_id)
        return dict(self._s.execute(q).all())

    def face_count(self, person_id: int, embedder: str) -> int:
        q = (
            select(func.count())
            .select_from(FaceRow)
            .where(FaceRow.person_id == person_id, FaceRow.embedder == embedder)
        )
        return int(self._s.scalar(q) or 0)

    def has_face(self, person_id: int, embedder: str, image_sha256: str) -> bool:
        """Whether this photo (its digest) is already enrolled for this person and embedder."""
        q = select(FaceRow.id).where(
            FaceRow.person_id == person_id, FaceRow.embedder == embedder, FaceRow.image_sha256 == image_sha256
        )
        return self._s.scalar(q) is not None

    def add_face(self, person_id: int, embedder: str, vector: np.ndarray, **fields: Any) -> None:
        """One enrolled face: ``fields`` are ``image_sha256``, ``image_key``, ``source``, ``box``."""
        vector = np.asarray(vector, dtype=np.float32)
        self._s.add(
            FaceRow(
                person_id=person_id,
                embedder=embedder,
                dim=int(vector.shape[0]),
                vector=vector.tobytes(),
                created_at=datetime.now(UTC),
                **fields,
            )
        )

    def gallery(
        self, embedder: str, dim: int, version_id: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """(vectors, person ids, face ids) of ``embedder``'s faces: all, or those of one version
        (``dim``: the width of the empty array when there are none)."""
        q = select(FaceRow.id, FaceRow.person_id, FaceRow.vector, FaceRow.dim).where(FaceRow.embedder == embedder)
        if version_id is not None:
            q = q.where(FaceRow.id.in_(select(VersionFaceRow.face_id).where(VersionFaceRow.version_id == version_id)))
        rows = self._s.execute(q.order_by(FaceRow.id)).all()
        if not rows:
            return np.zeros((0, dim), np.float32), np.zeros(0, int), []
        X = np.stack([np.frombuffer(r.vector, np.float32, count=r.dim) for r in rows])
        return X, np.array([r.person_id for r in rows]), [r.id for r in rows]

    def delete_person(self, row: PersonRow) -> tuple[dict[str, int], set[str]]:
        """Delete a person and every row about them: the rows deleted per table, and the keys of
        their face crops no other face uses (the same photo enrolled for two people stays)."""
        keys = set(self._s.scalars(select(FaceRow.image_key).where(FaceRow.person_id == row.id)).all()) - {None}
        counts = delete_person_rows(self._s, row.id)
        still_used = set(self._s.scalars(select(FaceRow.image_key).where(FaceRow.image_key.in_(keys))).all())
        return counts, keys - still_used

    # -- recognizer versions

    def next_version(self) -> int:
        return (self._s.scalar(select(func.max(VersionRow.version))) or 0) + 1

    def add_version(self, face_ids: Iterable[int], **fields: Any) -> VersionRow:
        """A version (``fields``: the columns of ``VersionRow``) and the faces it was trained on."""
        row = VersionRow(created_at=datetime.now(UTC), **fields)
        self._s.add(row)
        self._s.flush()
        self._s.add_all(VersionFaceRow(version_id=row.id, face_id=f) for f in face_ids)
        return row

    def activate(self, version_id: int) -> None:
        # One row, updated inside the caller's transaction: readers see the old or the new pointer.
        row = self._s.get(ActiveRow, ACTIVE_SLOT)
        if row is None:
            self._s.add(ActiveRow(slot=ACTIVE_SLOT, version_id=version_id, switched_at=datetime.now(UTC)))
        else:
            row.version_id, row.switched_at = version_id, datetime.now(UTC)

    def active_id(self) -> int | None:
        row = self._s.get(ActiveRow, ACTIVE_SLOT)
        return None if row is None else row.version_id

    def version_by_id(self, version_id: int) -> VersionRow:
        return self._s.get(VersionRow, version_id)

    def version(self, number: int) -> VersionRow | None:
        return self._s.scalars(select(VersionRow).where(VersionRow.version == int(number))).first()

    def versions(self) -> list[VersionRow]:
        return list(self._s.scalars(select(VersionRow).order_by(VersionRow.version)).all())

    def version_face_ids(self, version_id: int, embedder: str) -> list[int]:
        """The faces a version was trained on that are still enrolled (with ``embedder``)."""
        q = (
            select(VersionFaceRow.face_id)
            .join(FaceRow, FaceRow.id == VersionFaceRow.face_id)
            .where(VersionFaceRow.version_id == version_id, FaceRow.embedder == embedder)
            .order_by(VersionFaceRow.face_id)
        )
        return list(self._s.scalars(q).all())

    # -- attendance

    def add_session(self, **fields: Any) -> SessionRow:
        row = SessionRow(frames=0, undecodable=0, faces=0, unknown_faces=0, **fields)
        self._s.add(row)
        return row

    def find_session(self, uid: str | None, open_only: bool = False) -> SessionRow:
        """See ``PeopleStore.find_session``."""
        if uid is None:
            q = select(SessionRow).order_by(SessionRow.started_at.desc())
            if open_only:
                q = q.where(SessionRow.stopped_at.is_(None))
            row = self._s.scalars(q).first()
            if row is None:
                raise NotFoundError(
                    "no open attendance session; start one with `emolens attendance start`"
                    if open_only
                    else "no attendance session yet; start one with `emolens attendance start`"
                )
            return row
        q = select(SessionRow).where(SessionRow.uid.startswith(str(uid), autoescape=True)).limit(11)
        rows = self._s.scalars(q).all()
        if not rows:
            raise NotFoundError(f"no attendance session {uid!r}; see `emolens attendance list`")
        if len(rows) > 1:
            shown = ", ".join(r.uid for r in rows[:10]) + (", ..." if len(rows) > 10 else "")
            raise AmbiguousError(
                f"attendance session id {uid!r} matches several sessions ({shown}); give more characters"
            )
        return rows[0]

    def sessions(self) -> list[tuple[SessionRow, int]]:
        """Every session, newest first, with how many people it marked present."""
        rows = self._s.scalars(select(SessionRow).order_by(SessionRow.started_at.desc())).all()
        return [(r, len(self._s.scalars(select(RecordRow.id).where(RecordRow.session_id == r.id)).all())) for r in rows]

    def record(self, session_id: int, person_id: int) -> RecordRow | None:
        """A person's attendance record in a session, if they were marked present."""
        q = select(RecordRow).where(RecordRow.session_id == session_id, RecordRow.person_id == person_id)
        return self._s.scalars(q).first()

    def add_record(self, **fields: Any) -> RecordRow:
        row = RecordRow(**fields)
        self._s.add(row)
        return row

    def records(self, session_id: int) -> dict[int, RecordRow]:
        """Person row id -> their record, for everyone marked present in a session."""
        return {r.person_id: r for r in self._s.scalars(select(RecordRow).where(RecordRow.session_id == session_id))}
