"""People: enrollment, training, versions, recognition and erasure, over the EmoLens database.

>>> people = People()
>>> report = people.enroll_folder("class/")    # subfolders STU001_Jane_Doe/, Bob/, ...
>>> people.train()                             # a new recognizer version, with its report
>>> [m.label for m in people.identify("photo.jpg")]
['STU001', 'unknown']

Embeddings live in the database (``face_embeddings``), the aligned face crops in
``$EMOLENS_HOME/identity/faces`` (content-addressed), reports in
``$EMOLENS_HOME/identity/versions/vN``. Nothing about a person (name, key, file name, vector)
is ever written to the log; ``remove`` deletes every row and file about them.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select

from emolens.detect import Detector, DetectorOptions, Face, create_detector
from emolens.errors import BadImageError, EmoLensError, MissingExtraError, NotFoundError
from emolens.identify.embed import Embedder, create_embedder
from emolens.io import ImageInput, iter_image_paths, load_image
from emolens.store.db import get_engine, session
from emolens.store.people import (
    ActiveRow,
    FaceRow,
    PersonRow,
    VersionFaceRow,
    VersionRow,
    checkpoint,
    delete_person_rows,
)

log = logging.getLogger("emolens.identify")

ENROLL_MIN_FACE = 40  # px, shorter box side: smaller faces give embeddings too poor to enroll
ACTIVE_SLOT = "default"
Progress = Callable[[int, int], None]  # (done, total)

# "STU001_Jane_Doe" -> ("STU001", "Jane Doe"): a first token holding a digit is an id.
_ID_NAME = re.compile(r"^([A-Za-z]*\d[A-Za-z0-9\-]*)[_\s]+(.+)$")


class NoUsableFaceError(BadImageError):
    """An enrollment image has no face that can be enrolled (none, or too small)."""


class NotTrainedError(EmoLensError):
    """Recognition was asked for before any recognizer was trained."""

    http_status = 409


def parse_person_folder(name: str) -> tuple[str, str]:
    """(key, display name) from a folder name: ``STU001_Jane_Doe`` -> ("STU001", "Jane Doe");
    any other name is its own key, with underscores read as spaces for display."""
    name = name.strip()
    m = _ID_NAME.match(name)
    if m:
        return m.group(1), m.group(2).replace("_", " ").strip()
    return name, name.replace("_", " ").strip()


class InvalidPersonError(EmoLensError):
    """A person id that cannot be stored (empty, too long, or with a slash)."""

    http_status = 422


def _check_key(key: str) -> str:
    key = str(key).strip()
    if not key or len(key) > 128 or "/" in key or "\\" in key:
        raise InvalidPersonError(f"person id {key[:40]!r} is not valid: 1-128 characters, no slashes")
    return key


def default_detector(name: str | None = None) -> Detector:
    """The detector ``name`` (default: the configured one) with the configured options, as the
    Analyzer makes it."""
    from emolens.settings import get_settings

    s = get_settings()
    options = DetectorOptions(
        min_face_size=s.min_face_size,
        score_threshold=s.detection_threshold,
        max_faces=s.max_faces,
        max_side=s.max_side,
        threads=s.threads,
    )
    return create_detector(name or s.detector, options)


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


# ---------------------------------------------------------------- public records


@dataclass
class Person:
    key: str
    name: str
    faces: int  # enrolled faces for the current embedder
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "created_at": self.created_at.isoformat()}


@dataclass
class Match:
    """One face found in an image, and who it is (``key`` None: unknown)."""

    box: list[float]
    score: float  # detection score
    key: str | None
    name: str | None
    confidence: float | None  # classifier confidence for the best candidate (None: face not embeddable)
    similarity: float | None  # cosine similarity to that candidate's nearest enrolled face
    error: str | None = None

    @property
    def known(self) -> bool:
        return self.key is not None

    @property
    def label(self) -> str:
        return self.key if self.key is not None else "unknown"

    def to_dict(self) -> dict[str, Any]:
        d = {
            "box": [round(float(v), 1) for v in self.box],
            "score": round(self.score, 4),
            "label": self.label,
            "key": self.key,
            "name": self.name,
            "confidence": None if self.confidence is None else round(self.confidence, 4),
            "similarity": None if self.similarity is None else round(self.similarity, 4),
        }
        return d | ({"error": self.error} if self.error else {})


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


@dataclass
class VersionInfo:
    version: int
    created_at: datetime
    active: bool
    kind: str
    threshold: float
    min_similarity: float
    n_people: int
    n_embeddings: int
    embedder: str
    metrics: dict
    report_dir: str | None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "created_at": self.created_at.isoformat()}


@dataclass
class TrainResult:
    version: VersionInfo
    report: dict  # what report.json holds
    report_dir: Path


# ---------------------------------------------------------------- recognizer cache

_CACHE: OrderedDict[tuple, Any] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 4


def _cached_recognizer(key: tuple, build: Callable[[], Any]):
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    rec = build()
    _cache_put(key, rec)
    return rec


def _cache_put(key: tuple, recognizer: Any) -> None:
    with _CACHE_LOCK:
        _CACHE[key] = recognizer
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()


# ---------------------------------------------------------------- the facade


class People:
    """Enrolled people and the recognizer trained on them.

    ``url``: a database URL (default: the configured one). ``embedder``/``detector``: a name or an
    instance (default: the settings). Heavy models load on first use.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        embedder: str | Embedder | None = None,
        detector: str | Detector | None = None,
        home: str | Path | None = None,
        store_crops: bool = True,
    ):
        from emolens.settings import get_settings

        s = get_settings()
        self.url = url
        self.home = Path(home) if home else s.home
        self.root = self.home / "identity"
        self.store_crops = store_crops
        self._embedder = embedder if isinstance(embedder, Embedder) else None
        self._embedder_name = None if isinstance(embedder, Embedder) else embedder
        self._detector = detector if isinstance(detector, Detector) else None
        self._detector_name = None if isinstance(detector, Detector) else detector

    # -- lazily built parts

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = create_embedder(self._embedder_name)
        return self._embedder

    @property
    def detector(self) -> Detector:
        if self._detector is None:
            self._detector = default_detector(self._detector_name)
        return self._detector

    @property
    def blobs(self):
        from emolens.store.blobs import BlobStore

        return BlobStore(self.root / "faces")

    # -- people

    def add_person(self, key: str, name: str | None = None) -> Person:
        """Create a person (or return the existing one with this key; a new ``name`` renames them)."""
        key = _check_key(key)
        with session(self.url) as s:
            row, _ = self._person_row(s, key, create=True, name=name)
            return self._person(s, row)

    def get(self, key: str) -> Person:
        with session(self.url) as s:
            return self._person(s, self._person_row(s, key)[0])

    def list(self) -> list[Person]:
        with session(self.url) as s:
            counts = dict(
                s.execute(
                    select(FaceRow.person_id, func.count())
                    .where(FaceRow.embedder == self.embedder.name)
                    .group_by(FaceRow.person_id)
                ).all()
            )
            rows = s.scalars(select(PersonRow).order_by(PersonRow.key)).all()
            return [Person(r.key, r.name, counts.get(r.id, 0), as_utc(r.created_at)) for r in rows]

    def remove(self, key: str) -> dict[str, int]:
        """Erase a person: their embeddings, stored face crops, attendance rows, and their name in
        every training report. Returns what was deleted. Recognizer versions trained on them no
        longer include them (restoring one refits it without them)."""
        with session(self.url) as s:
            row, _ = self._person_row(s, key)
            keys = set(s.scalars(select(FaceRow.image_key).where(FaceRow.person_id == row.id)).all()) - {None}
            label = (row.key, row.name)
            counts = delete_person_rows(s, row.id)
            # Crops shared with another person's face (the same photo enrolled twice) stay.
            still_used = set(s.scalars(select(FaceRow.image_key).where(FaceRow.image_key.in_(keys))).all())
        checkpoint(get_engine(self.url))
        files = 0
        for k in keys - still_used:
            if self.blobs.path(k).exists():
                self.blobs.remove(k)
                files += 1
        from emolens.identify.report import redact_reports

        counts["face_crop_files"] = files
        counts["reports_redacted"] = redact_reports(self.root / "versions", *label)
        clear_cache()
        log.info("removed one person: %d embeddings, %d crop files", counts["face_embeddings"], files)
        return counts

    def _person_row(self, s, key: str, create: bool = False, name: str | None = None) -> tuple[PersonRow, bool]:
        """The person with ``key`` and whether this call created them (``create``) or NotFoundError."""
        key = _check_key(key)
        row = s.scalars(select(PersonRow).where(PersonRow.key == key)).first()
        if row is None:
            if not create:
                raise NotFoundError(f"no enrolled person with id {key!r}; see `emolens people list`")
            row = PersonRow(
                uid=uuid.uuid4().hex, key=key, name=(name or key).strip() or key, created_at=datetime.now(UTC)
            )
            s.add(row)
            s.flush()
            return row, True
        if name and name.strip() and name.strip() != row.name:
            row.name = name.strip()
        return row, False

    def _person(self, s, row: PersonRow) -> Person:
        n = s.scalar(
            select(func.count())
            .select_from(FaceRow)
            .where(FaceRow.person_id == row.id, FaceRow.embedder == self.embedder.name)
        )
        return Person(row.key, row.name, int(n or 0), as_utc(row.created_at))

    # -- enrollment

    def enroll_image(
        self, image: ImageInput, key: str, name: str | None = None, source: str | None = None
    ) -> EnrollReport:
        """Enroll the largest face of one image as person ``key`` (created if new). An image
        without a usable face is reported in ``skipped`` with the reason, not raised."""
        key = _check_key(key)
        src = source or (Path(image).name if isinstance(image, (str, Path)) else "image")
        report = EnrollReport()
        try:
            pixels = load_image(image)
            face, n_faces = enrollment_face(pixels, self.detector)
            chip = self.embedder.align(pixels, face)
            vector = self.embedder.embed_chips([chip])[0]
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
        crop_key = self.blobs.put(_jpeg(chip), ".jpg") if self.store_crops else None
        with session(self.url) as s:
            row, created = self._person_row(s, key, create=True, name=name)
            if created:
                report.people_added.append(key)
            dup = s.scalar(
                select(FaceRow.id).where(
                    FaceRow.person_id == row.id, FaceRow.embedder == self.embedder.name, FaceRow.image_sha256 == digest
                )
            )
            if dup is not None:
                report.skipped.append((src, "already enrolled for this person"))
                report.person_of[src] = key
                return
            s.add(
                FaceRow(
                    person_id=row.id,
                    embedder=self.embedder.name,
                    dim=int(vector.shape[0]),
                    vector=np.asarray(vector, dtype=np.float32).tobytes(),
                    image_sha256=digest,
                    image_key=crop_key,
                    source=src[:256],
                    box=[round(float(v), 1) for v in face.box],
                    created_at=datetime.now(UTC),
                )
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

    def short_of_photos(self, keys: Iterable[str]) -> list[tuple[Person, int, int]]:
        """Those of ``keys`` left with fewer enrolled photos than most people have:
        (person, their photos, the median over everyone). A person with fewer photos is
        recognised less reliably, so enrolment warns about them."""
        everyone = self.list()
        if len(everyone) < 2:
            return []
        typical = int(np.median([p.faces for p in everyone]))
        wanted = set(keys)
        return [(p, p.faces, typical) for p in everyone if p.key in wanted and p.faces < typical]

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

    # -- training and versions

    def _gallery(self, s, version_id: int | None = None) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """(vectors, person ids, face ids) of the current embedder: all, or those of one version."""
        q = select(FaceRow.id, FaceRow.person_id, FaceRow.vector, FaceRow.dim).where(
            FaceRow.embedder == self.embedder.name
        )
        if version_id is not None:
            q = q.where(FaceRow.id.in_(select(VersionFaceRow.face_id).where(VersionFaceRow.version_id == version_id)))
        rows = s.execute(q.order_by(FaceRow.id)).all()
        if not rows:
            return np.zeros((0, self.embedder.dim or 1), np.float32), np.zeros(0, int), []
        X = np.stack([np.frombuffer(r.vector, np.float32, count=r.dim) for r in rows])
        return X, np.array([r.person_id for r in rows]), [r.id for r in rows]

    def train(
        self,
        classifier: str = "auto",
        strangers: Iterable[str | Path] | None = None,
        folds: int = 5,
        target_far: float | None = None,
        target_accuracy: float | None = None,
        activate: bool = True,
        progress: Callable[[str], None] | None = None,
    ) -> TrainResult:
        """Train a new recognizer version on every enrolled face: choose the classifier by
        cross-validation (``auto``) or use the one named, measure the threshold table, write the
        report to ``identity/versions/vN`` and (``activate``) make it the active version.

        ``strangers``: photos of people who will never be enrolled, probed as impostors in
        addition to the enrolled people held out in turn."""
        from emolens.identify import recognize

        with session(self.url) as s:
            X, y, face_ids = self._gallery(s)
            names = {r.id: (r.key, r.name) for r in s.scalars(select(PersonRow)).all()}
        if len(X) == 0:
            raise EmoLensError(
                f"no enrolled faces for the {self.embedder.name} embedder; enroll people first (emolens people enroll)"
            )
        impostors = self._stranger_vectors(strangers) if strangers else None
        analysis = recognize.analyze(
            X,
            y,
            kinds=classifier,
            min_similarity=self.min_similarity(),
            folds=folds,
            strangers=impostors,
            target_far=recognize.TARGET_FAR if target_far is None else target_far,
            target_accuracy=recognize.TARGET_ACCURACY if target_accuracy is None else target_accuracy,
            calibration=self.embedder.calibration,
            progress=progress,
        )
        c = analysis.chosen
        final = recognize.Recognizer(c.kind, c.params, c.threshold, analysis.min_similarity).fit(X, y)
        result = self._save_version(analysis, names, face_ids, final.fit_seconds, activate)
        _cache_put(self._cache_key(result.version, face_ids), final)  # the first identify needs no refit
        log.info("trained recognizer version %d (%s, %d faces)", result.version.version, c.kind, len(X))
        return result

    def _save_version(self, analysis, names: dict, face_ids: list[int], fit_seconds: float, activate: bool):
        """Write the report, then record the version, its faces and (``activate``) the pointer in one
        transaction. The report is written to a hidden folder and renamed once the row exists."""
        import shutil

        from emolens.identify.report import build_report, write_report

        versions = self.root / "versions"
        tmp = versions / f".pending-{uuid.uuid4().hex[:12]}"
        try:
            with session(self.url) as s:
                number = (s.scalar(select(func.max(VersionRow.version))) or 0) + 1
                folder = versions / f"v{number}"
                report = build_report(analysis, names, self.embedder.name, number, fit_seconds)
                write_report(report, tmp)
                c = analysis.chosen
                row = VersionRow(
                    version=number,
                    created_at=datetime.now(UTC),
                    embedder=self.embedder.name,
                    kind=c.kind,
                    params=c.params,
                    threshold=c.threshold,
                    min_similarity=analysis.min_similarity,
                    n_people=analysis.n_people,
                    n_embeddings=analysis.n_faces,
                    metrics=report["summary"],
                    report_dir=str(folder),
                )
                s.add(row)
                s.flush()
                s.add_all(VersionFaceRow(version_id=row.id, face_id=f) for f in face_ids)
                if activate:
                    self._activate(s, row.id)
                info = self._info(s, row)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if folder.exists():  # left by an attempt whose transaction failed
            shutil.rmtree(folder)
        tmp.rename(folder)
        return TrainResult(info, report, folder)

    def min_similarity(self) -> float:
        from emolens.settings import get_settings

        m = get_settings().identity_min_similarity
        return float(self.embedder.default_min_similarity if m is None else m)

    def _stranger_vectors(self, strangers: Iterable[str | Path]) -> np.ndarray:
        vecs = []
        for p in iter_image_paths(list(strangers)):
            try:
                pixels = load_image(p)
                face, _ = enrollment_face(pixels, self.detector)
                vecs.append(self.embedder.embed(pixels, [face])[0])
            except EmoLensError:
                continue  # a stranger photo without a usable face simply adds no probe
        return np.array(vecs, np.float32) if vecs else np.zeros((0, 1), np.float32)

    def _activate(self, s, version_id: int) -> None:
        # One row, updated inside the caller's transaction: readers see the old or the new pointer.
        row = s.get(ActiveRow, ACTIVE_SLOT)
        if row is None:
            s.add(ActiveRow(slot=ACTIVE_SLOT, version_id=version_id, switched_at=datetime.now(UTC)))
        else:
            row.version_id, row.switched_at = version_id, datetime.now(UTC)

    def _active_id(self, s) -> int | None:
        row = s.get(ActiveRow, ACTIVE_SLOT)
        return None if row is None else row.version_id

    def _info(self, s, row: VersionRow) -> VersionInfo:
        return VersionInfo(
            row.version,
            as_utc(row.created_at),
            self._active_id(s) == row.id,
            row.kind,
            row.threshold,
            row.min_similarity,
            row.n_people,
            row.n_embeddings,
            row.embedder,
            row.metrics,
            row.report_dir,
        )

    def versions(self) -> list[VersionInfo]:
        with session(self.url) as s:
            return [self._info(s, r) for r in s.scalars(select(VersionRow).order_by(VersionRow.version)).all()]

    def active_version(self) -> VersionInfo | None:
        with session(self.url) as s:
            vid = self._active_id(s)
            return None if vid is None else self._info(s, s.get(VersionRow, vid))

    def restore(self, version: int) -> VersionInfo:
        """Make an earlier version active again (it is rebuilt from its stored faces; people removed
        since then are no longer in it)."""
        if not 0 < int(version) < 2**63:  # beyond a database integer: no such version, not an overflow
            raise NotFoundError(f"no recognizer version {version}; see `emolens people versions`")
        with session(self.url) as s:
            row = s.scalars(select(VersionRow).where(VersionRow.version == int(version))).first()
            if row is None:
                raise NotFoundError(f"no recognizer version {version}; see `emolens people versions`")
            self._activate(s, row.id)
            info = self._info(s, row)
        log.info("restored recognizer version %d", info.version)
        return info

    # -- recognition

    def recognizer(self, version: int | None = None):
        """The fitted recognizer of ``version`` (default: the active one), with its version info.

        A version stores its faces, classifier and threshold, not a fitted model: it is refitted
        from the stored embeddings (deterministically) on first use and kept in memory."""
        from emolens.identify.recognize import Recognizer

        with session(self.url) as s:
            if version is None:
                vid = self._active_id(s)
                if vid is None:
                    raise NotTrainedError("no trained recognizer yet: enroll people, then run `emolens people train`")
                row = s.get(VersionRow, vid)
            else:
                row = s.scalars(select(VersionRow).where(VersionRow.version == int(version))).first()
                if row is None:
                    raise NotFoundError(f"no recognizer version {version}; see `emolens people versions`")
            if row.embedder != self.embedder.name:
                raise EmoLensError(
                    f"recognizer version {row.version} was trained with the {row.embedder} embedder, but "
                    f"{self.embedder.name} is configured; set EMOLENS_EMBEDDER back or enroll and train again"
                )
            face_ids = s.scalars(
                select(VersionFaceRow.face_id)
                .join(FaceRow, FaceRow.id == VersionFaceRow.face_id)
                .where(VersionFaceRow.version_id == row.id, FaceRow.embedder == self.embedder.name)
                .order_by(VersionFaceRow.face_id)
            ).all()
            info = self._info(s, row)
            people = {r.id: (r.key, r.name) for r in s.scalars(select(PersonRow)).all()}
        if not face_ids:
            raise NotTrainedError(
                f"recognizer version {info.version} has no enrolled faces left; enroll people and train again"
            )
        key = self._cache_key(info, face_ids)

        def build() -> Recognizer:
            with session(self.url) as s:
                X, y, _ = self._gallery(s, version_id=row.id)
            return Recognizer(info.kind, row.params or {}, info.threshold, info.min_similarity).fit(X, y)

        rec = _cached_recognizer(key, build)
        return rec, info, people

    def _cache_key(self, info: VersionInfo, face_ids: Sequence[int]) -> tuple:
        # The faces are part of the key: removing a person changes what the version is refitted on.
        db = get_engine(self.url).url.render_as_string(hide_password=True)
        return db, info.version, info.created_at, hashlib.sha1(str(sorted(face_ids)).encode()).hexdigest()

    def identify(
        self, image: ImageInput, threshold: float | None = None, min_similarity: float | None = None
    ) -> list[Match]:
        """Every face in ``image`` and who it is: an enrolled person, or ``unknown``."""
        pixels = load_image(image)
        return self.identify_faces(pixels, self.detector(pixels), threshold, min_similarity)

    def identify_faces(
        self,
        image: np.ndarray,
        faces: Sequence[Face],
        threshold: float | None = None,
        min_similarity: float | None = None,
    ) -> list[Match]:
        """Recognise faces already detected in an RGB image (so a caller can share the detection)."""
        from emolens.settings import get_settings

        rec, _info, people = self.recognizer()
        s = get_settings()
        t = threshold if threshold is not None else s.identity_threshold
        m = min_similarity if min_similarity is not None else s.identity_min_similarity
        matches, ok, chips = [], [], []
        for i, f in enumerate(faces):
            matches.append(Match([float(v) for v in f.box], float(f.score), None, None, None, None))
            try:
                chips.append(self.embedder.align(image, f))
                ok.append(i)
            except Exception as exc:  # one face that cannot be aligned never aborts the image
                matches[i].error = f"alignment failed: {exc}"
        if not chips:
            return matches
        pred = rec.predict(self.embedder.embed_chips(chips), t, m)
        for j, i in enumerate(ok):
            matches[i].confidence = float(pred.confidence[j])
            matches[i].similarity = float(pred.similarity[j])
            if pred.accepted[j]:
                matches[i].key, matches[i].name = people.get(int(pred.label[j]), (None, None))
        return matches


# ---------------------------------------------------------------- helpers


def as_utc(t: datetime) -> datetime:
    """SQLite hands back naive datetimes: they were stored as UTC."""
    return t if t.tzinfo else t.replace(tzinfo=UTC)


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
