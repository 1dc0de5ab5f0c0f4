"""Import of the earlier Streamlit app's feedback: ``feedback_log.csv`` beside ``feedback_images/``."""

from __future__ import annotations

import csv
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emolens.core.errors import BadLabelError, EmoLensError, NotFoundError
from emolens.feedback.crops import stored_crop

if TYPE_CHECKING:
    from emolens.feedback.service import FeedbackService


@dataclass
class ImportReport:
    imported: int
    skipped: list[str]  # "row N (file): reason", one per row that was not imported

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def import_streamlit(feedback: FeedbackService, folder: str | Path, user_id: str | None = None) -> ImportReport:
    """Import the earlier Streamlit app's ``feedback_log.csv`` and ``feedback_images/``.

    Each bad row (missing image, unreadable image, unknown label) is reported and skipped;
    rows already imported (same crop, label and time) are skipped too, so a re-run is safe.
    """
    from emolens.image.io import load_image

    folder = Path(folder)
    log = folder / "feedback_log.csv"
    if not log.is_file():
        raise NotFoundError(f"{folder}: no feedback_log.csv (expected it beside a feedback_images/ folder)")
    images = folder / "feedback_images"
    inside = images.resolve()
    seen = {(r.crop_key, r.label, r.created_at.replace(tzinfo=None)) for r in feedback.list(limit=None)}
    imported, skipped = 0, []
    with log.open(newline="", encoding="utf-8-sig") as f:
        for n, row in enumerate(csv.DictReader(f), start=2):  # row 1 is the header
            name = re.split(r"[\\/]", (row.get("image_path") or "").strip())[-1]
            where = f"row {n} ({name or 'no image_path'})"
            try:
                true = feedback.check_label(row.get("corrected_emotion") or "")
                predicted = row.get("predicted_emotion") or None
                predicted = feedback.check_label(predicted) if predicted else None
            except BadLabelError as exc:
                skipped.append(f"{where}: {exc}")
                continue
            confidence = _float(row.get("confidence"))
            if confidence is not None and not 0.0 <= confidence <= 1.0:  # inf and nan too
                skipped.append(f"{where}: confidence {row.get('confidence')!r} is not a number from 0 to 1")
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
            crop = stored_crop(crop)  # as it will be stored: its key is that of the stored file
            created = _parse_time(row.get("timestamp"))
            key = feedback.store.png_key(crop)
            if (key, true, created.replace(tzinfo=None)) in seen:
                skipped.append(f"{where}: already imported")
                continue
            feedback.add(
                crop,
                true,
                predicted=predicted,
                confidence=confidence,
                source="import:streamlit",
                user_id=user_id,
                created_at=created,
            )
            seen.add((key, true, created.replace(tzinfo=None)))
            imported += 1
    return ImportReport(imported=imported, skipped=skipped)


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
