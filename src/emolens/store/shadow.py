"""What a shadow model said beside the active one: one row per face it classified in serving.

Every compared face is a row (so agreement and the confusion between the two models can be
counted); a disagreement also keeps the face crop, made by the shadow runner exactly as feedback
makes it (``emolens.feedback.crops``: RGB, PNG, named by its SHA-256), in ``$EMOLENS_HOME/shadow``, apart from the
feedback crops so that feedback upkeep (``feedback check --repair``) never removes them. Because
the names match, a later correction of that face (``POST /api/v1/feedback`` on the analysis, or
``emolens feedback add`` on the photo) is found by the crop's key: the report then says which of
the two models the user agreed with. A face is stored once per shadow model (a unique key).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Integer, String, UniqueConstraint, delete, func, select
from sqlalchemy.orm import Mapped, mapped_column

from emolens.store.blobs import BlobStore
from emolens.store.db import Base, session
from emolens.store.feedback import FeedbackRow, _png


class ShadowRow(Base):
    __tablename__ = "shadow_results"
    __table_args__ = (UniqueConstraint("analysis_id", "face", "shadow_model", name="uq_shadow_results_face"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    analysis_id: Mapped[str] = mapped_column(String(64))
    face: Mapped[int] = mapped_column(Integer)
    active_model: Mapped[str] = mapped_column(String(256))
    shadow_model: Mapped[str] = mapped_column(String(256))
    active_label: Mapped[str | None] = mapped_column(String(32))
    shadow_label: Mapped[str | None] = mapped_column(String(32))
    agree: Mapped[bool] = mapped_column(Boolean)
    active_probs: Mapped[dict | None] = mapped_column(JSON)
    shadow_probs: Mapped[dict | None] = mapped_column(JSON)
    crop_key: Mapped[str | None] = mapped_column(String(128))


@dataclass
class Disagreement:
    analysis_id: str
    face: int
    created_at: str
    active_model: str
    shadow_model: str
    active_label: str | None
    shadow_label: str | None
    crop_key: str | None
    corrected: str | None  # the label a user gave this face later, if any


def _probs(p: dict[str, float]) -> dict[str, float]:
    return {k: round(float(v), 5) for k, v in p.items()}


class ShadowStore:
    """The rows in the database at ``url`` and the
    crops of disagreements in ``blobs`` (``$EMOLENS_HOME/shadow``); without ``blobs`` a store
    reads and reports, but records and clears nothing."""

    def __init__(self, url: str, blobs: str | Path | None = None):
        self.url = url
        self.blobs = BlobStore(blobs) if blobs is not None else None

    def _blobs(self) -> BlobStore:
        if self.blobs is None:
            raise ValueError("this ShadowStore was made without a crop folder (blobs): it can only read")
        return self.blobs

    def record(
        self,
        analysis_id: str,
        active_faces: Sequence,
        shadow_faces: Sequence,
        active_model: str,
        shadow_model: str,
        crops: dict[int, Any],
    ) -> int:
        """Store the comparison of every face both models classified; returns how many were stored.
        ``crops``: the face crop of each disagreement by face number, as feedback stores it
        (``emolens.feedback.crops.analysis_crop``); they are written (atomically) before the rows
        are committed."""
        rows = []
        for i, (a, s) in enumerate(zip(active_faces, shadow_faces, strict=True)):
            if not (a.probs and s.probs):  # a face one of them could not classify: nothing to compare
                continue
            agree = a.label == s.label
            key = None
            if not agree:
                key = self._blobs().put(_png(crops[i]))
            rows.append(
                ShadowRow(
                    created_at=datetime.now(UTC),
                    analysis_id=analysis_id,
                    face=i,
                    active_model=active_model,
                    shadow_model=shadow_model,
                    active_label=a.label,
                    shadow_label=s.label,
                    agree=agree,
                    active_probs=_probs(a.probs),
                    shadow_probs=_probs(s.probs),
                    crop_key=key,
                )
            )
        if rows:
            with session(self.url) as s:
                s.add_all(rows)
        return len(rows)

    def pairs(self) -> list[dict[str, Any]]:
        """Every (active, shadow) pair with its number of compared faces, newest first."""
        q = (
            select(ShadowRow.active_model, ShadowRow.shadow_model, func.count(), func.max(ShadowRow.created_at))
            .group_by(ShadowRow.active_model, ShadowRow.shadow_model)
            .order_by(func.max(ShadowRow.created_at).desc())
        )
        with session(self.url) as s:
            return [{"active": a, "shadow": b, "faces": n, "last": str(t)} for a, b, n, t in s.execute(q)]

    def count(self) -> int:
        with session(self.url) as s:
            return int(s.scalar(select(func.count(ShadowRow.id))) or 0)

    def disagreements(self, active: str, shadow: str, limit: int | None = 50) -> list[Disagreement]:
        """The pair's disagreements, newest first, each with the label a user later gave the face."""
        q = (
            select(ShadowRow)
            .where(ShadowRow.active_model == active, ShadowRow.shadow_model == shadow, ShadowRow.agree.is_(False))
            .order_by(ShadowRow.created_at.desc(), ShadowRow.id.desc())
            .limit(limit)
        )
        with session(self.url) as s:
            rows = list(s.scalars(q))
            truth = self._corrections(s, [r.crop_key for r in rows if r.crop_key])
        return [
            Disagreement(
                analysis_id=r.analysis_id,
                face=r.face,
                created_at=r.created_at.isoformat(),
                active_model=r.active_model,
                shadow_model=r.shadow_model,
                active_label=r.active_label,
                shadow_label=r.shadow_label,
                crop_key=r.crop_key,
                corrected=truth.get(r.crop_key or ""),
            )
            for r in rows
        ]

    @staticmethod
    def _corrections(s, keys: list[str]) -> dict[str, str]:
        """The newest label users gave each crop (feedback rows share the crop's key)."""
        out: dict[str, str] = {}
        for start in range(0, len(keys), 500):  # bounded IN lists
            q = (
                select(FeedbackRow.crop_key, FeedbackRow.label)
                .where(FeedbackRow.crop_key.in_(keys[start : start + 500]))
                .order_by(FeedbackRow.created_at, FeedbackRow.id)
            )
            out.update(dict(s.execute(q).all()))  # later rows win
        return out

    def report(self, active: str | None = None, shadow: str | None = None) -> dict[str, Any]:
        """Agreement, the confusion between the two (rows: the active model's answer, columns:
        the shadow's) and, where users corrected faces they disagreed on, which model was right
        (each distinct face once). Without names, the pair compared most recently."""
        pairs = self.pairs()
        if active is None or shadow is None:
            recent = next((p for p in pairs if (active in (None, p["active"]) and shadow in (None, p["shadow"]))), None)
            if recent is None:
                return {"active": active, "shadow": shadow, "faces": 0, "pairs": pairs}
            active, shadow = recent["active"], recent["shadow"]
        where = (ShadowRow.active_model == active, ShadowRow.shadow_model == shadow)
        with session(self.url) as s:
            groups = s.execute(
                select(ShadowRow.active_label, ShadowRow.shadow_label, func.count())
                .where(*where)
                .group_by(ShadowRow.active_label, ShadowRow.shadow_label)
            ).all()
            analyses = s.scalar(select(func.count(func.distinct(ShadowRow.analysis_id))).where(*where)) or 0
            disagreements = s.execute(
                select(ShadowRow.crop_key, ShadowRow.active_label, ShadowRow.shadow_label).where(
                    *where, ShadowRow.agree.is_(False)
                )
            ).all()
            truth = self._corrections(s, [k for k, _, _ in disagreements if k])
        confusion: dict[str, dict[str, int]] = {}
        faces = agree = 0
        for a, b, n in groups:
            confusion.setdefault(a or "none", {})[b or "none"] = n
            faces += n
            agree += n if a == b else 0
        tally = {"corrected": 0, "active_right": 0, "shadow_right": 0, "neither_right": 0}
        for key, a, b in set(disagreements):  # a face sent several times (same crop) counts once
            label = truth.get(key or "")
            if label is None:
                continue
            tally["corrected"] += 1
            tally["active_right" if label == a else "shadow_right" if label == b else "neither_right"] += 1
        better = None
        if tally["active_right"] != tally["shadow_right"]:
            better = "active" if tally["active_right"] > tally["shadow_right"] else "shadow"
        return {
            "active": active,
            "shadow": shadow,
            "faces": faces,
            "analyses": int(analyses),
            "agree": agree,
            "agreement": agree / faces if faces else None,
            "disagreements": faces - agree,
            "confusion": confusion,
            "corrections": {**tally, "more_often_right": better},
            "pairs": pairs,
        }

    def clear(self) -> None:
        blobs = self._blobs()
        with session(self.url) as s:
            keys = {k for (k,) in s.execute(select(ShadowRow.crop_key).where(ShadowRow.crop_key.is_not(None)))}
            s.execute(delete(ShadowRow))
        for key in keys:
            blobs.remove(key)
