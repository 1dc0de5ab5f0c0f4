"""The feedback store: the rows and files of what users said about faces.

A record is one statement about one face: "this is sad" (a correction, when the model said
otherwise) or "that's right" (a confirmation). The face crop, and optionally the whole photo,
are stored once on disk by content hash (``$EMOLENS_HOME/blobs``); the row in the database
points at them. The file is written (atomically) before the row is committed, so a crash can
leave an unreferenced file, which ``check(repair=True)`` removes, but never a row without its
crop. Concurrent writers, in threads or processes, are serialised by the database.

This module keeps rows and files only. What goes in (the crop policy, the part a record is held
out in, imports) and what comes out (datasets, exports) is the feedback service's work:
``emolens.feedback.FeedbackService``, which is what applications use.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import JSON, Boolean, DateTime, Float, Integer, String, delete, func, select, update
from sqlalchemy.orm import Mapped, mapped_column

from emolens.core.errors import BadLabelError, NotFoundError
from emolens.data.schemas import FERPLUS8, canonical
from emolens.store.blobs import BlobStore
from emolens.store.db import Base, session

# The side of stored crops: the models' aligned input at twice the usual 48 px. The feedback
# service's crop policy makes them so (emolens.feedback.crops); the shadow store keeps its alike.
CROP_SIZE = 96


class FeedbackRow(Base):
    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    crop_key: Mapped[str] = mapped_column(String(128))
    image_key: Mapped[str | None] = mapped_column(String(128))
    box: Mapped[list | None] = mapped_column(JSON)
    predicted: Mapped[str | None] = mapped_column(String(32))
    confidence: Mapped[float | None] = mapped_column(Float)
    probs: Mapped[dict | None] = mapped_column(JSON)
    model_version: Mapped[str | None] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(32))
    is_correction: Mapped[bool] = mapped_column(Boolean)
    holdout: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(String(128))
    person: Mapped[str | None] = mapped_column(String(128))
    origin: Mapped[str | None] = mapped_column(String(128))
    upload_session: Mapped[str | None] = mapped_column(String(128))
    phash: Mapped[str | None] = mapped_column(String(64))
    uncertain: Mapped[bool | None] = mapped_column(Boolean)


@dataclass
class Feedback:
    """One stored statement about a face, as the API and CLI show it."""

    uid: str
    created_at: datetime
    label: str
    predicted: str | None
    confidence: float | None
    is_correction: bool
    holdout: bool
    source: str
    user_id: str | None
    model_version: str | None
    box: list[float] | None
    probs: dict[str, float] | None
    crop_key: str
    image_key: str | None
    person: str | None = None  # who the face is, when known
    origin: str | None = None  # the source photo or video it came from
    upload_session: str | None = None
    phash: str | None = None  # perceptual hash of the crop (hex), to catch the same photo stored again
    # the model answered "uncertain" (its top class is ``predicted``): below its threshold or a poor face
    uncertain: bool = False

    @property
    def group_key(self) -> str | None:
        return group_key(self.person, self.origin, self.upload_session)

    @classmethod
    def from_row(cls, row: FeedbackRow) -> Feedback:
        d = {k: getattr(row, k) for k in cls.__dataclass_fields__}
        return cls(**{**d, "uncertain": bool(d["uncertain"])})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["created_at"] = self.created_at.isoformat()
        return d


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _uses(key: str):
    return (FeedbackRow.crop_key == key) | (FeedbackRow.image_key == key)


def group_key(person: str | None, origin: str | None, upload_session: str | None) -> str | None:
    """What ties a record to others: the person when known, else its source, else its upload session."""
    for kind, value in (("person", person), ("origin", origin), ("upload_session", upload_session)):
        if value:
            return f"{kind}:{value}"
    return None


class FeedbackStore:
    """Feedback rows in the database and their files on disk; ``FeedbackService`` adds to it.

    ``url``: the database URL and ``blobs``: the files' folder (``Workspace.feedback_store``
    gives those of a home).
    """

    def __init__(
        self,
        url: str,
        blobs: str | Path,
        labels: Sequence[str] = FERPLUS8,
    ):
        self.url = url
        self.blobs = BlobStore(blobs)
        self.labels = tuple(labels)

    def check_label(self, label: str) -> str:
        name = canonical(label)
        if name not in self.labels:
            raise BadLabelError(f"unknown emotion {label!r}; use one of: {', '.join(self.labels)}")
        return name

    # -- writing ---------------------------------------------------------------------------
    def put_png(self, image: np.ndarray) -> str:
        """Store an image (uint8, grey or RGB) as a PNG file and return its key. Files go in
        before the row that refers to them: a crash leaves a spare file, never a row without it."""
        return self.blobs.put(_png(np.asarray(image)))

    @staticmethod
    def png_key(image: np.ndarray) -> str:
        """The key ``put_png`` gives ``image``, without storing it."""
        return BlobStore.key_of(_png(np.asarray(image)))

    def insert(
        self,
        *,
        crop_key: str,
        label: str,
        holdout: bool,
        phash: str | None,
        image_key: str | None = None,
        predicted: str | None = None,
        confidence: float | None = None,
        probs: dict[str, float] | None = None,
        box: Sequence[float] | None = None,
        model_version: str | None = None,
        source: str = "python",
        user_id: str | None = None,
        created_at: datetime | None = None,
        person: str | None = None,
        origin: str | None = None,
        upload_session: str | None = None,
        uncertain: bool = False,
    ) -> Feedback:
        """The row of a record whose files are stored (``put_png``) and whose labels are checked.
        ``predicted`` is the model's top class, also when it answered "uncertain" (``uncertain``)."""
        row = FeedbackRow(
            uid=uuid.uuid4().hex,
            created_at=created_at or datetime.now(UTC),
            crop_key=crop_key,
            image_key=image_key,
            box=[round(float(v), 2) for v in box] if box is not None else None,
            predicted=predicted,
            confidence=None if confidence is None else float(confidence),
            probs={k: round(float(v), 5) for k, v in probs.items()} if probs else None,
            # the column holds 64 characters (PostgreSQL enforces it): a long ensemble or path is cut
            model_version=None if model_version is None else model_version[:64],
            label=label,
            is_correction=predicted is None or label != predicted,
            holdout=holdout,
            source=source,
            user_id=user_id,
            person=person,
            origin=origin,
            upload_session=upload_session,
            phash=phash,
            uncertain=uncertain,
        )
        with session(self.url) as s:
            s.add(row)
        return Feedback.from_row(row)

    def first_side(self, group: str) -> bool | None:
        """Whether the earliest record of ``group`` (a ``group_key``) is held out; None: it has none."""
        column = {
            "person": FeedbackRow.person,
            "origin": FeedbackRow.origin,
            "upload_session": FeedbackRow.upload_session,
        }
        kind, value = group.split(":", 1)
        with session(self.url) as s:
            side = s.scalar(select(FeedbackRow.holdout).where(column[kind] == value).order_by(FeedbackRow.id).limit(1))
        return None if side is None else bool(side)

    def hash_sides(self) -> list[tuple[str | None, str | None, bool]]:
        """(perceptual hash, person, held out) of every record, oldest first: three columns, not whole rows."""
        with session(self.url) as s:
            rows = s.execute(
                select(FeedbackRow.phash, FeedbackRow.person, FeedbackRow.holdout).order_by(FeedbackRow.id)
            ).all()
        return [(h, person, bool(side)) for h, person, side in rows]

    def set_phash(self, hashes: dict[str, str]) -> None:
        """Store recomputed perceptual hashes (record uid -> hash) of records kept with an older kind."""
        with session(self.url) as s:
            for uid, h in hashes.items():
                s.execute(update(FeedbackRow).where(FeedbackRow.uid == uid).values(phash=h))

    def delete(self, uid: str) -> None:
        with session(self.url) as s:
            row = s.scalar(select(FeedbackRow).where(FeedbackRow.uid == uid))
            if row is None:
                raise NotFoundError(f"no feedback record {uid!r}")
            keys = {row.crop_key, row.image_key} - {None}
            s.delete(row)
            s.flush()
            # Files are shared by content: remove only those no other record uses.
            unused = [k for k in keys if not s.scalar(select(func.count(FeedbackRow.id)).where(_uses(k)))]
        for key in unused:
            self.blobs.remove(key)

    # -- reading ---------------------------------------------------------------------------
    def get(self, uid: str) -> Feedback:
        with session(self.url) as s:
            row = s.scalar(select(FeedbackRow).where(FeedbackRow.uid == uid))
            if row is None:
                raise NotFoundError(f"no feedback record {uid!r}")
            return Feedback.from_row(row)

    def list(
        self, limit: int | None = 100, offset: int = 0, label: str | None = None, corrections_only: bool = False
    ) -> list[Feedback]:
        """Newest first."""
        q = select(FeedbackRow).order_by(FeedbackRow.created_at.desc(), FeedbackRow.id.desc())
        if label:
            q = q.where(FeedbackRow.label == self.check_label(label))
        if corrections_only:
            q = q.where(FeedbackRow.is_correction.is_(True))
        q = q.offset(offset).limit(limit)
        with session(self.url) as s:
            return [Feedback.from_row(r) for r in s.scalars(q)]

    def count(self, label: str | None = None, corrections_only: bool = False) -> int:
        """How many records ``list`` gives without a limit: counted by the database, none loaded."""
        q = select(func.count(FeedbackRow.id))
        if label:
            q = q.where(FeedbackRow.label == self.check_label(label))
        if corrections_only:
            q = q.where(FeedbackRow.is_correction.is_(True))
        with session(self.url) as s:
            return int(s.scalar(q) or 0)

    def stats(self) -> dict[str, Any]:
        """Totals, per true label, per (predicted → true) confusion, per source, and corrections per
        model that answered. ``holdout`` counts the records stored as held out; the held-out part
        fine-tuning uses is the feedback service's split (``FeedbackService.stats``)."""
        columns = (
            FeedbackRow.label,
            FeedbackRow.predicted,
            FeedbackRow.is_correction,
            FeedbackRow.source,
            FeedbackRow.holdout,
            FeedbackRow.model_version,
        )
        with session(self.url) as s:  # one row per distinct combination, counted by the database
            groups = s.execute(select(*columns, func.count()).group_by(*columns)).all()
        by_label: dict[str, int] = {}
        confusions: dict[str, int] = {}
        by_source: dict[str, int] = {}
        by_model: dict[str, int] = {}  # corrections per model that answered ("" when not known)
        total = corrections = holdout = 0
        for label, predicted, is_corr, source, held, model, n in groups:
            by_label[label] = by_label.get(label, 0) + n
            by_source[source] = by_source.get(source, 0) + n
            total += n
            corrections += n if is_corr else 0
            holdout += n if held else 0
            if is_corr:
                by_model[model or ""] = by_model.get(model or "", 0) + n
            if is_corr and predicted:
                key = f"{predicted} → {label}"
                confusions[key] = confusions.get(key, 0) + n
        return {
            "total": total,
            "corrections": corrections,
            "confirmations": total - corrections,
            "holdout": holdout,
            "by_label": dict(sorted(by_label.items())),
            "confusions": dict(sorted(confusions.items(), key=lambda kv: -kv[1])),
            "by_source": by_source,
            "by_model": dict(sorted(by_model.items(), key=lambda kv: -kv[1])),
        }

    def crop(self, record: Feedback | str) -> np.ndarray:
        """The stored face crop as it was given: grey (H, W) or RGB (H, W, 3) uint8."""
        from PIL import Image

        rec = self.get(record) if isinstance(record, str) else record
        with Image.open(io.BytesIO(self.blobs.get(rec.crop_key))) as im:
            return np.asarray(im)

    # -- upkeep ----------------------------------------------------------------------------
    def check(self, repair: bool = False, grace_s: float = 300.0) -> dict[str, Any]:
        """Every record's crop present and intact; with ``repair``, remove files no record uses."""
        with session(self.url) as s:
            rows = s.execute(select(FeedbackRow.uid, FeedbackRow.crop_key, FeedbackRow.image_key)).all()
        broken = [uid for uid, *keys in rows if not all(self.blobs.verify(k) for k in keys if k)]
        referenced = {k for _, *keys in rows for k in keys if k}
        orphans = self.blobs.unreferenced(referenced)
        removed = self.blobs.sweep(referenced, grace_s) if repair else []
        return {"records": len(rows), "broken": broken, "orphans": len(orphans), "removed": len(removed)}

    def clear(self) -> None:
        """Delete every record and file (tests and ``feedback clear --yes``)."""
        with session(self.url) as s:
            keys = {k for row in s.execute(select(FeedbackRow.crop_key, FeedbackRow.image_key)) for k in row if k}
            s.execute(delete(FeedbackRow))
        for key in keys:
            self.blobs.remove(key)
