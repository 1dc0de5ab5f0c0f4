"""The feedback service: what users said about faces, made ready for models to learn from.

It makes the crops (one policy for every way in: see ``emolens.feedback.crops``), puts each
record in the training or the held-out part (``emolens.feedback.split``), imports the earlier
Streamlit app's log, and gives the feedback back as datasets and exports. The rows and files
are kept by the store below it, ``emolens.store.feedback.FeedbackStore``.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from emolens.classify.modelfile import UNCERTAIN
from emolens.core.errors import BadLabelError, EmoLensError, NotFoundError
from emolens.data.schemas import canonical
from emolens.feedback.crops import analysis_crop, crop_phash, stored_crop
from emolens.feedback.split import FeedbackSplit, is_current_hash, side_of_new, split_records
from emolens.feedback.streamlit import ImportReport, import_streamlit
from emolens.store.blobs import BlobStore
from emolens.store.feedback import Feedback, FeedbackStore, group_key


class FeedbackService:
    """Feedback on faces: add it, split it, learn from it, move it in and out.

    ``store``: where the rows and files go (``Workspace.feedback`` is the service of a home's
    store; without one, the process's workspace's store).

    >>> feedback = FeedbackService()
    >>> results = Analyzer()("photo.jpg")
    >>> feedback.add_from_results(results, face=0, label="sad")
    >>> feedback.add(crop, "sad", predicted="happy", person="ana", origin="clip-07.mp4")  # a crop of your own
    """

    def __init__(self, store: FeedbackStore | None = None):
        if store is None:  # the convenience entry point: the store of the process's workspace
            from emolens.workspace import Workspace

            store = Workspace.default().feedback_store
        self.store = store

    @property
    def labels(self) -> tuple[str, ...]:
        return self.store.labels

    @property
    def blobs(self) -> BlobStore:
        return self.store.blobs

    def check_label(self, label: str) -> str:
        """The canonical name of ``label``; BadLabelError when the store does not know it."""
        return self.store.check_label(label)

    # -- ways in ---------------------------------------------------------------------------
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
        uncertain: bool = False,
    ) -> Feedback:
        """Store one statement about a face crop (uint8, grey or RGB; stored by the crop policy).

        Give the true ``label``, or ``correct=True`` to confirm the ``predicted`` one. ``person``
        (who it is), ``origin`` (the photo or video it came from) and ``upload_session`` keep
        related faces on one side of the training/held-out split; a copy of the same photo is kept
        with it by its perceptual hash even without them. A model's "uncertain" answer is stored as
        its top class (from ``probs``) with ``uncertain`` set, so such a face can be corrected too.
        """
        if predicted is not None and canonical(predicted) == UNCERTAIN:
            uncertain, predicted = True, max(probs, key=probs.get) if probs else None
        if correct:
            if predicted is None:
                raise BadLabelError("a confirmation needs the predicted label it confirms")
            label = label or predicted
        if label is None:
            raise BadLabelError("give the true label, or confirm the prediction")
        label = self.check_label(label)
        predicted = self.check_label(predicted) if predicted is not None else None
        crop = stored_crop(crop)
        # The files first, then the row: a crash in between leaves a spare file (see ``check``).
        crop_key = self.store.put_png(crop)
        image_key = self.store.put_png(image) if image is not None else None
        phash = crop_phash(crop)
        return self.store.insert(
            crop_key=crop_key,
            image_key=image_key,
            label=label,
            holdout=side_of_new(self.store, phash, person, group_key(person, origin, upload_session), crop_key),
            phash=phash,
            predicted=predicted,
            confidence=confidence,
            probs=probs,
            box=box,
            model_version=model_version,
            source=source,
            user_id=user_id,
            created_at=created_at,
            person=person,
            origin=origin,
            upload_session=upload_session,
            uncertain=uncertain,
        )

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
        from the analysed photo, and the prediction (the top class, flagged when the model answered
        "uncertain"), box and model are taken from the results. ``origin`` defaults to the photo
        (its content hash); see ``add`` for the others."""
        if results.image is None:
            raise EmoLensError("these results do not hold their image; analyse again to give feedback")
        if not 0 <= face < len(results):
            raise NotFoundError(f"no face {face}: the analysis found {len(results)} face(s)")
        f = results[face]
        # The photo itself ties its faces together (a face corrected twice, or re-encoded copies).
        origin = origin or "photo:" + BlobStore.key_of(np.ascontiguousarray(results.image).tobytes(), "")[:32]
        return self.add(
            analysis_crop(results.image, f),
            label,
            correct=correct,
            predicted=f.top_label if f.uncertain else f.label,
            uncertain=f.uncertain,
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

    def add_encoded(self, data: bytes, label: str, *, max_pixels: int | None = None, **fields: Any) -> Feedback:
        """Feedback on an encoded face crop (PNG, JPEG...; aligned or not), as an upload brings
        it. The label is checked before the (costlier) decoding; ``fields``: see ``add``."""
        from emolens.image.io import load_image

        label = self.check_label(label)
        return self.add(load_image(data, max_pixels=max_pixels), label, **fields)

    def import_streamlit(self, folder: str | Path, user_id: str | None = None) -> ImportReport:
        """Import the earlier Streamlit app's ``feedback_log.csv`` and ``feedback_images/``.

        Each bad row (missing image, unreadable image, unknown label) is reported and skipped;
        rows already imported (same crop, label and time) are skipped too, so a re-run is safe."""
        return import_streamlit(self, folder, user_id)

    # -- reading (the store's) -------------------------------------------------------------
    def get(self, uid: str) -> Feedback:
        return self.store.get(uid)

    def list(
        self, limit: int | None = 100, offset: int = 0, label: str | None = None, corrections_only: bool = False
    ) -> list[Feedback]:
        """Newest first."""
        return self.store.list(limit=limit, offset=offset, label=label, corrections_only=corrections_only)

    def count(self, label: str | None = None, corrections_only: bool = False) -> int:
        return self.store.count(label=label, corrections_only=corrections_only)

    def stats(self, labels: Sequence[str] | None = None) -> dict[str, Any]:
        """Totals, per true label, per (predicted → true) confusion, per source, corrections per
        model, and the two parts of ``split(labels)``: ``holdout`` and ``holdout_groups`` are what
        fine-tuning is judged on (``labels``: the model's; default every emotion of the store)."""
        parts = self.split(labels).to_dict()
        return {**self.store.stats(), **parts, "regrouped": parts.pop("moved")}

    def crop(self, record: Feedback | str) -> np.ndarray:
        """The stored face crop: grey (H, W) or RGB (H, W, 3) uint8."""
        return self.store.crop(record)

    def delete(self, uid: str) -> None:
        self.store.delete(uid)

    def check(self, repair: bool = False, grace_s: float = 300.0) -> dict[str, Any]:
        """Every record's crop present and intact; with ``repair``, remove files no record uses."""
        return self.store.check(repair=repair, grace_s=grace_s)

    def clear(self) -> None:
        """Delete every record and file (tests and ``feedback clear --yes``)."""
        self.store.clear()

    # -- ways out --------------------------------------------------------------------------
    def split(self, labels: Sequence[str] | None = None) -> FeedbackSplit:
        """Every record in its part, by group: each group goes where its earliest record went. The
        one split: fine-tuning, ``stats`` and ``dataset`` all use it. ``labels``: keep only records
        of these emotions (a model's), grouped with all the others."""
        records = self.list(limit=None)[::-1]  # oldest first
        stale = {r.uid: crop_phash(self.crop(r)) for r in records if not is_current_hash(r.phash)}
        if stale:  # stored before hashes were kept, or with the earlier 64-bit kind
            self.store.set_phash(stale)
            for r in records:
                r.phash = stale.get(r.uid, r.phash)
        split = split_records(records)
        return split if labels is None else split.only(labels)

    def dataset(self, part: str = "all", classes: Sequence[str] | None = None):
        """The stored crops as a FaceDataset (``part``: "all", "train" or "holdout", split by
        group: see ``split``); labels the ``classes`` lack are left out."""
        if part not in ("all", "train", "holdout"):
            raise ValueError(f"part must be all, train or holdout, not {part!r}")
        records = self.list(limit=None) if part == "all" else getattr(self.split(), part)
        return self.to_dataset(records, classes, part)

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
