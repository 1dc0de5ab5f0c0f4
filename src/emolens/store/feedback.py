"""The feedback store: what users said about faces, kept safely so models can learn from it.

A record is one statement about one face: "this is sad" (a correction, when the model said
otherwise) or "that's right" (a confirmation). The face crop, and optionally the whole photo,
are stored once on disk by content hash (``$EMOLENS_HOME/blobs``); the row in the database
points at them. The file is written (atomically) before the row is committed, so a crash can
leave an unreferenced file, which ``check(repair=True)`` removes, but never a row without its
crop. Concurrent writers, in threads or processes, are serialised by the database.

Each record is put, once and for good, in the training or the held-out part: the held-out part
is what the promotion gate measures a fine-tuned model on, so a model never trains on the
feedback it is judged by. The split is by group, not by crop: records of one person (when
known), else of one source photo or video, else of one upload session, and near-duplicates
(perceptual hashes within ``NEAR_DUPLICATE_BITS``) form one group, and a group never sits on
both sides. A burst of near-identical photos or the frames of one video would otherwise put a
twin of almost every held-out face in the training part and flatter the gate. Hashes tie most
bursts but not all (a frame can stray further), so a caller that knows the person or the source
should say so.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from sqlalchemy import JSON, Boolean, DateTime, Float, Integer, String, delete, func, select
from sqlalchemy.orm import Mapped, mapped_column

from emolens.data.schemas import FERPLUS8, canonical
from emolens.errors import BadImageError, BadLabelError, EmoLensError, NotFoundError
from emolens.store.blobs import BlobStore
from emolens.store.db import Base, session

CROP_SIZE = 96  # stored crops are aligned like the models' inputs, at twice the usual 48 px
HOLDOUT_FRACTION = 0.25
# 64-bit DCT hashes of two frames of one face differ by up to ~10 bits on degraded webcam crops
# (benchmarks/feedback_loop.py); crops of different faces differ by 16 or more.
NEAR_DUPLICATE_BITS = 10


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
    phash: Mapped[str | None] = mapped_column(String(16))


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
    phash: str | None = None  # perceptual hash of the crop (hex), for near-duplicates

    @property
    def group_key(self) -> str | None:
        return group_key(self.person, self.origin, self.upload_session)

    @classmethod
    def from_row(cls, row: FeedbackRow) -> Feedback:
        return cls(**{k: getattr(row, k) for k in cls.__dataclass_fields__})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["created_at"] = self.created_at.isoformat()
        return d


@dataclass
class ImportReport:
    imported: int
    skipped: list[str]  # "row N (file): reason", one per row that was not imported

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def _is_holdout(key: str, fraction: float = HOLDOUT_FRACTION) -> bool:
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0x1_0000_0000 < fraction


def crop_phash(crop: np.ndarray) -> str:
    """The crop's 64-bit perceptual hash as 16 hex digits (grey, so colour and grey copies match)."""
    from emolens.data.eda import phash

    grey = crop if crop.ndim == 2 else cv2.cvtColor(crop[..., :3], cv2.COLOR_RGB2GRAY)
    return f"{phash(grey):016x}"


@dataclass
class FeedbackSplit:
    """The feedback in its two parts, with the group of every record."""

    train: list[Feedback]
    holdout: list[Feedback]
    group: dict[str, int]  # record uid -> group number
    moved: int  # records whose stored side their group overrode (a new record joined two groups)

    def groups(self, part: str) -> int:
        return len({self.group[r.uid] for r in getattr(self, part)})

    def to_dict(self) -> dict[str, int]:
        return {
            "train": len(self.train),
            "holdout": len(self.holdout),
            "train_groups": self.groups("train"),
            "holdout_groups": self.groups("holdout"),
            "moved": self.moved,
        }


def group_records(records: Sequence[Feedback], max_bits: int = NEAR_DUPLICATE_BITS) -> list[int]:
    """A group number per record: records sharing a person, source or session (see
    ``Feedback.group_key``) or with perceptual hashes within ``max_bits`` are joined, transitively."""
    from emolens.data.eda import near_duplicate_pairs

    parent = list(range(len(records)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(i: int, j: int) -> None:
        parent[root(i)] = root(j)

    first: dict[str, int] = {}
    for i, r in enumerate(records):
        if (key := r.group_key) is not None:
            join(i, first.setdefault(key, i))
    hashes = [int(r.phash, 16) if r.phash else None for r in records]
    for i, j, _ in near_duplicate_pairs(hashes, max_bits):
        join(i, j)
    roots = [root(i) for i in range(len(records))]
    number = {r: n for n, r in enumerate(dict.fromkeys(roots))}
    return [number[r] for r in roots]


class FeedbackStore:
    """Feedback records in the database and their crops on disk.

    >>> store = FeedbackStore()
    >>> results = Analyzer()("photo.jpg")
    >>> store.add_from_results(results, face=0, label="sad")
    >>> store.add(crop, "sad", predicted="happy", person="ana", origin="clip-07.mp4")  # a crop of your own
    """

    def __init__(self, url: str | None = None, blobs: str | Path | None = None, labels: Sequence[str] = FERPLUS8):
        from emolens.settings import get_settings

        self.url = url
        self.blobs = BlobStore(blobs or get_settings().home / "blobs")
        self.labels = tuple(labels)

    # -- writing ---------------------------------------------------------------------------
    def check_label(self, label: str) -> str:
        name = canonical(label)
        if name not in self.labels:
            raise BadLabelError(f"unknown emotion {label!r}; use one of: {', '.join(self.labels)}")
        return name

    def add(
        self,
        crop: np.ndarray,
        label: str | None = None,
        *,
        correct: bool = False,
        predicted: str | None = None,
        confidence: float | None = None,
        probs: dict[str, float] | None = None,
        box: Sequence[float] | None = None,
        model_version: str | None = None,
        image: np.ndarray | None = None,
        source: str = "python",
        user_id: str | None = None,
        created_at: datetime | None = None,
        person: str | None = None,
        origin: str | None = None,
        upload_session: str | None = None,
    ) -> Feedback:
        """Store one statement about a face crop (uint8, grey or RGB).

        Give the true ``label``, or ``correct=True`` to confirm the ``predicted`` one. ``person``
        (who it is), ``origin`` (the photo or video it came from) and ``upload_session`` keep
        related faces on one side of the training/held-out split; near-identical crops are kept
        together by their perceptual hash even without them.
        """
        if correct:
            if predicted is None:
                raise BadLabelError("a confirmation needs the predicted label it confirms")
            label = label or predicted
        if label is None:
            raise BadLabelError("give the true label, or confirm the prediction")
        label = self.check_label(label)
        predicted = self.check_label(predicted) if predicted is not None else None
        crop = np.asarray(crop)
        if crop.dtype != np.uint8 or crop.ndim not in (2, 3) or min(crop.shape[:2]) < 8:
            raise BadImageError(f"a face crop must be a uint8 image of 8x8 px or more, not {crop.dtype} {crop.shape}")
        crop_key = self.blobs.put(_png(crop))
        image_key = self.blobs.put(_png(np.asarray(image))) if image is not None else None
        phash = crop_phash(crop)
        holdout = self._side_of_group(phash, group_key(person, origin, upload_session), crop_key)
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
        )
        with session(self.url) as s:
            s.add(row)
        return Feedback.from_row(row)

    def _side_of_group(self, phash: str, key: str | None, crop_key: str) -> bool:
        """The part a new record goes to: that of the earliest record of its group, or for a new
        group a hash of what ties it (its crop when nothing does)."""
        column = {
            "person": FeedbackRow.person,
            "origin": FeedbackRow.origin,
            "upload_session": FeedbackRow.upload_session,
        }
        with session(self.url) as s:
            if key is not None:
                kind, value = key.split(":", 1)
                q = select(FeedbackRow.holdout).where(column[kind] == value).order_by(FeedbackRow.id).limit(1)
                if (side := s.scalar(q)) is not None:
                    return bool(side)
            h = int(phash, 16)
            rows = s.execute(select(FeedbackRow.phash, FeedbackRow.holdout).order_by(FeedbackRow.id)).all()
        for other, side in rows:
            if other and (int(other, 16) ^ h).bit_count() <= NEAR_DUPLICATE_BITS:
                return bool(side)
        return _is_holdout(key or crop_key)

    def add_from_results(
        self,
        results,
        face: int,
        label: str | None = None,
        *,
        correct: bool = False,
        keep_image: bool = False,
        source: str = "python",
        user_id: str | None = None,
        person: str | None = None,
        origin: str | None = None,
        upload_session: str | None = None,
    ) -> Feedback:
        """Feedback on face ``face`` of an analysis (``Analyzer()(image)``): the crop is aligned
        from the analysed photo, and the prediction, box and model are taken from the results.
        ``origin`` defaults to the photo (its content hash); see ``add`` for the others."""
        from emolens.align import align_face

        if results.image is None:
            raise EmoLensError("these results do not hold their image; analyse again to give feedback")
        if not 0 <= face < len(results):
            raise NotFoundError(f"no face {face}: the analysis found {len(results)} face(s)")
        f = results[face]
        crop = align_face(results.image, f.box, f.landmarks, CROP_SIZE, channels=3)
        # The photo itself ties its faces together (a face corrected twice, or re-encoded copies).
        origin = origin or "photo:" + BlobStore.key_of(np.ascontiguousarray(results.image).tobytes(), "")[:32]
        return self.add(
            crop,
            label,
            correct=correct,
            predicted=f.label,
            confidence=f.confidence,
            probs=f.probs,
            box=f.box,
            model_version=results.model,
            image=results.image if keep_image else None,
            source=source,
            user_id=user_id,
            person=person,
            origin=origin,
            upload_session=upload_session,
        )

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

    def count(self, corrections_only: bool = False) -> int:
        q = select(func.count(FeedbackRow.id))
        if corrections_only:
            q = q.where(FeedbackRow.is_correction.is_(True))
        with session(self.url) as s:
            return int(s.scalar(q) or 0)

    def stats(self) -> dict[str, Any]:
        """Totals, per true label, per (predicted → true) confusion, and per source."""
        columns = (
            FeedbackRow.label,
            FeedbackRow.predicted,
            FeedbackRow.is_correction,
            FeedbackRow.source,
            FeedbackRow.holdout,
        )
        with session(self.url) as s:  # one row per distinct combination, counted by the database
            groups = s.execute(select(*columns, func.count()).group_by(*columns)).all()
        by_label: dict[str, int] = {}
        confusions: dict[str, int] = {}
        by_source: dict[str, int] = {}
        total = corrections = holdout = 0
        for label, predicted, is_corr, source, held, n in groups:
            by_label[label] = by_label.get(label, 0) + n
            by_source[source] = by_source.get(source, 0) + n
            total += n
            corrections += n if is_corr else 0
            holdout += n if held else 0
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
        }

    def crop(self, record: Feedback | str) -> np.ndarray:
        """The stored face crop as it was given: grey (H, W) or RGB (H, W, 3) uint8."""
        from PIL import Image

        rec = self.get(record) if isinstance(record, str) else record
        with Image.open(io.BytesIO(self.blobs.get(rec.crop_key))) as im:
            return np.asarray(im)

    def dataset(self, part: str = "all", classes: Sequence[str] | None = None):
        """The stored crops as a FaceDataset (``part``: "all", "train" or "holdout", split by
        group: see ``split``); labels the ``classes`` lack are left out."""
        if part not in ("all", "train", "holdout"):
            raise ValueError(f"part must be all, train or holdout, not {part!r}")
        records = self.list(limit=None) if part == "all" else getattr(self.split(), part)
        return self.to_dataset(records, classes, part)

    def split(self) -> FeedbackSplit:
        """Every record in its part, by group: each group goes where its earliest record went."""
        records = self.list(limit=None)[::-1]  # oldest first
        for r in records:
            if r.phash is None:  # stored before hashes were kept
                r.phash = crop_phash(self.crop(r))
        groups = group_records(records)
        side: dict[int, bool] = {}
        for r, g in zip(records, groups, strict=True):
            side.setdefault(g, r.holdout)
        moved = sum(side[g] != r.holdout for r, g in zip(records, groups, strict=True))
        return FeedbackSplit(
            train=[r for r, g in zip(records, groups, strict=True) if not side[g]],
            holdout=[r for r, g in zip(records, groups, strict=True) if side[g]],
            group={r.uid: g for r, g in zip(records, groups, strict=True)},
            moved=moved,
        )

    def to_dataset(self, records: Sequence[Feedback], classes: Sequence[str] | None = None, part: str = "all"):
        """Records as a FaceDataset of their crops; labels the ``classes`` lack are left out."""
        from emolens.data.datasets import FaceDataset

        classes = list(classes or self.labels)
        records = [r for r in records if r.label in classes]
        paths = [self.blobs.path(r.crop_key) for r in records]
        return FaceDataset(
            classes=classes,
            labels=np.array([classes.index(r.label) for r in records], dtype=np.int64),
            paths=paths,
            source=f"feedback:{part}",
        )

    # -- moving data in and out --------------------------------------------------------------
    def export(self, folder: str | Path) -> Path:
        """Crops as ``folder/images/<label>/<uid>.png`` (an image-folder dataset) plus
        ``folder/feedback.csv`` with every field; returns the CSV path."""
        folder = Path(folder)
        records = self.list(limit=None)
        fields = [f for f in Feedback.__dataclass_fields__ if f not in ("crop_key", "image_key", "probs")]
        (folder / "images").mkdir(parents=True, exist_ok=True)
        out = folder / "feedback.csv"
        tmp = out.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow([*fields, "file"])
            for r in records:
                rel = Path("images") / r.label / f"{r.uid}.png"
                (folder / rel).parent.mkdir(exist_ok=True)
                (folder / rel).write_bytes(self.blobs.get(r.crop_key))
                d = r.to_dict()
                w.writerow([*(d[k] if d[k] is not None else "" for k in fields), rel.as_posix()])
        tmp.replace(out)
        return out

    def import_streamlit(self, folder: str | Path, user_id: str | None = None) -> ImportReport:
        """Import the earlier Streamlit app's ``feedback_log.csv`` and ``feedback_images/``.

        Each bad row (missing image, unreadable image, unknown label) is reported and skipped;
        rows already imported (same crop, label and time) are skipped too, so a re-run is safe.
        """
        from emolens.io import load_image

        folder = Path(folder)
        log = folder / "feedback_log.csv"
        if not log.is_file():
            raise NotFoundError(f"{folder}: no feedback_log.csv (expected it beside a feedback_images/ folder)")
        images = folder / "feedback_images"
        inside = images.resolve()
        seen = {(r.crop_key, r.label, r.created_at.replace(tzinfo=None)) for r in self.list(limit=None)}
        imported, skipped = 0, []
        with log.open(newline="", encoding="utf-8-sig") as f:
            for n, row in enumerate(csv.DictReader(f), start=2):  # row 1 is the header
                name = re.split(r"[\\/]", (row.get("image_path") or "").strip())[-1]
                where = f"row {n} ({name or 'no image_path'})"
                try:
                    true = self.check_label(row.get("corrected_emotion") or "")
                    predicted = row.get("predicted_emotion") or None
                    predicted = self.check_label(predicted) if predicted else None
                except BadLabelError as exc:
                    skipped.append(f"{where}: {exc}")
                    continue
                path = images / name
                if not name or not path.is_file():
                    skipped.append(f"{where}: image not found in {images}")
                    continue
                if not path.resolve().is_relative_to(inside):  # a link must not import a file from elsewhere
                    skipped.append(f"{where}: a link to a file outside {images}; copy the image in instead")
                    continue
                try:
                    crop = load_image(path)
                except EmoLensError as exc:
                    skipped.append(f"{where}: {exc}")
                    continue
                if crop.ndim == 3 and np.ptp(crop.astype(np.int16), axis=2).max() == 0:
                    crop = crop[..., 0]  # the app saved grey faces; keep them grey
                created = _parse_time(row.get("timestamp"))
                key = BlobStore.key_of(_png(crop))
                if (key, true, created.replace(tzinfo=None)) in seen:
                    skipped.append(f"{where}: already imported")
                    continue
                self.add(
                    crop,
                    true,
                    predicted=predicted,
                    confidence=_float(row.get("confidence")),
                    source="import:streamlit",
                    user_id=user_id,
                    created_at=created,
                )
                seen.add((key, true, created.replace(tzinfo=None)))
                imported += 1
        return ImportReport(imported=imported, skipped=skipped)

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


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def _parse_time(text: str | None) -> datetime:
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y%m%d_%H%M%S"):
        try:
            return datetime.strptime((text or "").strip(), fmt).replace(tzinfo=UTC)
        except ValueError:
            pass
    try:
        return datetime.fromisoformat((text or "").strip())
    except ValueError:
        return datetime.now(UTC)
