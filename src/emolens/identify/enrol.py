"""Enrolment: the faces of people, from photos, into the people store.

A photo's largest face is detected, aligned and embedded; its embedding goes into the database
(``face_embeddings``) and its aligned crop into ``$EMOLENS_HOME/identity/faces``
(content-addressed). A photo without a usable face is reported with the reason, never raised.
``People`` (``emolens.identify.gallery``) is the way in: ``People().enroll_folder("class/")``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emolens.core.errors import BadImageError, EmoLensError, MissingExtraError
from emolens.detect import Detector, Face
from emolens.image.io import ImageInput, iter_image_paths, load_image
from emolens.store.people import check_key

if TYPE_CHECKING:
    from emolens.identify.gallery import People

log = logging.getLogger("emolens.identify")

ENROLL_MIN_FACE = 40  # px, shorter box side: smaller faces give embeddings too poor to enroll
Progress = Callable[[int, int], None]  # (done, total)

# "STU001_Jane_Doe" -> ("STU001", "Jane Doe"): a first token holding a digit is an id.
_ID_NAME = re.compile(r"^([A-Za-z]*\d[A-Za-z0-9\-]*)[_\s]+(.+)$")


class NoUsableFaceError(BadImageError):
    """An enrollment image has no face that can be enrolled (none, or too small)."""


def parse_person_folder(name: str) -> tuple[str, str]:
    """(key, display name) from a folder name: ``STU001_Jane_Doe`` -> ("STU001", "Jane Doe");
    any other name is its own key, with underscores read as spaces for display."""
    name = name.strip()
    m = _ID_NAME.match(name)
    if m:
        return m.group(1), m.group(2).replace("_", " ").strip()
    return name, name.replace("_", " ").strip()


def largest_face(faces: Sequence[Face]) -> Face:
    return max(faces, key=lambda f: f.width * f.height)


def enrollment_face(image: np.ndarray, detector: Detector, min_size: int = ENROLL_MIN_FACE) -> tuple[Face, int]:
    """The face to enroll from a photo: the largest one. Raises NoUsableFaceError with the reason."""
    faces = detector(image)
    if not faces:
        raise NoUsableFaceError("no face found")
    face = largest_face(faces)
    side = min(face.width, face.height)
    if side < min_size:
        raise NoUsableFaceError(f"face too small ({side:.0f} px, at least {min_size} px needed)")
    return face, len(faces)


@dataclass
class EnrollReport:
    enrolled: list[tuple[str, str]] = field(default_factory=list)  # (person key, source)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)
    people_added: list[str] = field(default_factory=list)  # keys of people created by this call
    notes: list[tuple[str, str]] = field(default_factory=list)  # (source, note), e.g. several faces
    person_of: dict[str, str] = field(default_factory=dict)  # skipped source -> the person it was for

    def merge(self, other: EnrollReport) -> EnrollReport:
        for k in ("enrolled", "skipped", "people_added", "notes"):
            getattr(self, k).extend(getattr(other, k))
        self.person_of.update(other.person_of)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "enrolled": [{"key": k, "source": s} for k, s in self.enrolled],
            "skipped": [{"source": s, "reason": r, "person": self.person_of.get(s)} for s, r in self.skipped],
            "people_added": self.people_added,
            "notes": [{"source": s, "note": n} for s, n in self.notes],
        }


class Enrolment:
    """The enrolment of ``people``'s faces (its store, embedder, detector and crop folder; the
    models load when the first photo needs them)."""

    def __init__(self, people: People):
        self.people = people

    def enroll_image(
        self, image: ImageInput, key: str, name: str | None = None, source: str | None = None
    ) -> EnrollReport:
        """Enroll the largest face of one image as person ``key`` (created if new). An image
        without a usable face is reported in ``skipped`` with the reason, not raised."""
        key = check_key(key)
        src = source or (Path(image).name if isinstance(image, (str, Path)) else "image")
        report = EnrollReport()
        try:
            pixels = load_image(image)
            face, n_faces = enrollment_face(pixels, self.people.detector)
            chip = self.people.embedder.align(pixels, face)
            vector = self.people.embedder.embed_chips([chip])[0]
        except MissingExtraError:  # no image can be enrolled: stop, do not skip them one by one
            raise
        except EmoLensError as exc:
            report.skipped.append((src, _reason(exc, image)))
            report.person_of[src] = key
            return report
        if n_faces > 1:
            report.notes.append((src, f"{n_faces} faces: enrolled the largest"))
        digest = hashlib.sha256(np.ascontiguousarray(pixels).tobytes() + str(pixels.shape).encode()).hexdigest()
        self._store_face(report, key, name, src, digest, face, chip, vector)
        return report

    def _store_face(
        self,
        report: EnrollReport,
        key: str,
        name: str | None,
        src: str,
        digest: str,
        face: Face,
        chip: np.ndarray,
        vector: np.ndarray,
    ) -> None:
        """The crop on disk first, then the row (a crash leaves a spare file, never a row without
        its crop); a photo already enrolled for this person is reported, not stored twice."""
        people = self.people
        crop_key = people.blobs.put(_jpeg(chip), ".jpg") if people.store_crops else None
        embedder = people.embedder.name
        with people.store.transaction() as rows:
            row, created = rows.person(key, create=True, name=name)
            if created:
                report.people_added.append(key)
            if rows.has_face(row.id, embedder, digest):
                report.skipped.append((src, "already enrolled for this person"))
                report.person_of[src] = key
                return
            rows.add_face(
                row.id,
                embedder,
                vector,
                image_sha256=digest,
                image_key=crop_key,
                source=src[:256],
                box=[round(float(v), 1) for v in face.box],
            )
        report.enrolled.append((key, src))

    def enroll_images(
        self, images: Iterable[str | Path], key: str, name: str | None = None, progress: Progress | None = None
    ) -> EnrollReport:
        """Enroll several photos of one person (files, folders or globs)."""
        paths = iter_image_paths(list(images))
        return self._enroll_many([(p, key, name) for p in paths], progress)

    def enroll_folder(self, folder: str | Path, progress: Progress | None = None) -> EnrollReport:
        """Enroll a folder of people: one subfolder per person (``STU001_Jane_Doe`` or any name),
        photos inside (subfolders of those included). Files directly in ``folder`` are skipped."""
        root = Path(folder)
        if not root.is_dir():
            raise EmoLensError(f"{root}: not a folder; expected one subfolder of photos per person")
        jobs, report, seen = [], EnrollReport(), {}
        for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            key, name = parse_person_folder(sub.name)
            if key in seen:  # STU001_Jane and STU001_Janet: never merge two folders into one person
                report.skipped.append((sub.name + "/", f"person id {key} is already used by folder {seen[key]}"))
                continue
            seen[key] = sub.name
            jobs += [(p, key, name) for p in iter_image_paths([sub])]
        for p in sorted(q for q in root.iterdir() if q.is_file()):
            report.skipped.append((p.name, "not in a person's subfolder"))
        if not jobs:
            raise EmoLensError(f"{root}: no photos found in person subfolders (e.g. {root}/STU001_Jane_Doe/1.jpg)")
        return report.merge(self._enroll_many(jobs, progress))

    def _enroll_many(self, jobs: list[tuple[Path, str, str | None]], progress: Progress | None) -> EnrollReport:
        report = EnrollReport()
        for i, (path, key, name) in enumerate(jobs):
            report.merge(self.enroll_image(path, key, name, source=_source_name(path)))
            if progress:
                progress(i + 1, len(jobs))
        log.info(
            "enrollment: %d faces enrolled, %d images skipped, %d people added",
            len(report.enrolled),
            len(report.skipped),
            len(report.people_added),
        )
        return report


def _source_name(path: Path) -> str:
    """The file name as stored: the photo's name, never its folder (which may hold a name)."""
    return path.name


def _reason(exc: EmoLensError, image: ImageInput) -> str:
    """A skip reason without the full path (the folder often is the person's name)."""
    text = str(exc)
    if isinstance(image, (str, Path)):
        name = Path(image).name
        text = text.replace(str(image), name).removeprefix(f"{name}: ")  # the caller names the file
    return text


def _jpeg(chip: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(chip).save(buf, format="JPEG", quality=92)
    return buf.getvalue()
