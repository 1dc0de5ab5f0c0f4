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

This is the facade: enrolment is in ``emolens.identify.enrol``, recognizer versions in
``emolens.identify.versions``, the rows in ``emolens.store.people``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emolens.detect import Detector, Face
from emolens.identify.embed import Embedder, settings_embedder
from emolens.identify.enrol import EnrollReport, Enrolment, Progress
from emolens.identify.versions import TrainResult, VersionInfo, Versions, clear_cache
from emolens.image.io import ImageInput, load_image
from emolens.store.people import PeopleStore, as_utc

if TYPE_CHECKING:
    from emolens.core.settings import Settings
    from emolens.workspace import Workspace

log = logging.getLogger("emolens.identify")


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


class People:
    """Enrolled people and the recognizer trained on them.

    ``workspace`` (``emolens.workspace``) gives the database, the home, the settings and the
    factories of embedders and detectors; without one, a workspace of ``settings`` (default: the
    process's) is made. ``url``: another database; ``embedder``/``detector``: a name or an
    instance (default: the settings'); ``home``: where crops and reports go (default: the
    workspace's home). Heavy models load on first use.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        embedder: str | Embedder | None = None,
        detector: str | Detector | None = None,
        home: str | Path | None = None,
        store_crops: bool = True,
        settings: Settings | None = None,
        workspace: Workspace | None = None,
    ):
        if workspace is None:  # the convenience entry point: ``People()`` builds its own root
            from emolens.workspace import Workspace

            workspace = Workspace(settings) if settings is not None else Workspace.default()
        self.workspace = workspace
        self.settings = workspace.settings
        self.store = PeopleStore(url or workspace.db_url)
        self.url = self.store.url
        self.home = Path(home) if home else workspace.home
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
            self._embedder = settings_embedder(self.settings, self._embedder_name)
        return self._embedder

    @property
    def detector(self) -> Detector:
        if self._detector is None:
            self._detector = self.workspace.detector(self._detector_name)
        return self._detector

    @property
    def blobs(self):
        from emolens.store.blobs import BlobStore

        return BlobStore(self.root / "faces")

    # -- people

    def get(self, key: str) -> Person:
        with self.store.transaction() as rows:
            row, _ = rows.person(key)
            return Person(row.key, row.name, rows.face_count(row.id, self.embedder.name), as_utc(row.created_at))

    def list(self) -> list[Person]:
        with self.store.transaction() as rows:
            counts = rows.face_counts(self.embedder.name)
            return [Person(r.key, r.name, counts.get(r.id, 0), as_utc(r.created_at)) for r in rows.people()]

    def remove(self, key: str) -> dict[str, int]:
        """Erase a person: their embeddings, stored face crops, attendance rows, and their name in
        every training report. Returns what was deleted. Recognizer versions trained on them no
        longer include them (restoring one refits it without them)."""
        with self.store.transaction() as rows:
            row, _ = rows.person(key)
            label = (row.key, row.name)
            counts, unused = rows.delete_person(row)
        self.store.checkpoint()
        files = 0
        for k in unused:
            if self.blobs.path(k).exists():
                self.blobs.remove(k)
                files += 1
        from emolens.identify.report import redact_reports

        counts["face_crop_files"] = files
        counts["reports_redacted"] = redact_reports(self.root / "versions", *label)
        clear_cache()
        log.info("removed one person: %d embeddings, %d crop files", counts["face_embeddings"], files)
        return counts

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

    # -- enrollment (emolens.identify.enrol)

    def enroll_image(
        self, image: ImageInput, key: str, name: str | None = None, source: str | None = None
    ) -> EnrollReport:
        """Enroll the largest face of one image as person ``key`` (created if new). An image
        without a usable face is reported in ``skipped`` with the reason, not raised."""
        return Enrolment(self).enroll_image(image, key, name, source)

    def enroll_images(
        self, images: Iterable[str | Path], key: str, name: str | None = None, progress: Progress | None = None
    ) -> EnrollReport:
        """Enroll several photos of one person (files, folders or globs)."""
        return Enrolment(self).enroll_images(images, key, name, progress)

    def enroll_folder(self, folder: str | Path, progress: Progress | None = None) -> EnrollReport:
        """Enroll a folder of people: one subfolder per person (``STU001_Jane_Doe`` or any name),
        photos inside (subfolders of those included). Files directly in ``folder`` are skipped."""
        return Enrolment(self).enroll_folder(folder, progress)

    # -- training and versions (emolens.identify.versions)

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
        return Versions(self).train(classifier, strangers, folds, target_far, target_accuracy, activate, progress)

    def min_similarity(self) -> float:
        m = self.settings.identity_min_similarity
        return float(self.embedder.default_min_similarity if m is None else m)

    def versions(self) -> list[VersionInfo]:
        return Versions(self).versions()

    def active_version(self) -> VersionInfo | None:
        return Versions(self).active_version()

    def restore(self, version: int) -> VersionInfo:
        """Make an earlier version active again (it is rebuilt from its stored faces; people removed
        since then are no longer in it)."""
        return Versions(self).restore(version)

    def recognizer(self, version: int | None = None):
        """The fitted recognizer of ``version`` (default: the active one), with its version info
        and the people by row id.

        A version stores its faces, classifier and threshold, not a fitted model: it is refitted
        from the stored embeddings (deterministically) on first use and kept in memory."""
        return Versions(self).recognizer(version)

    # -- recognition

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
        rec, _info, people = self.recognizer()
        t = threshold if threshold is not None else self.settings.identity_threshold
        m = min_similarity if min_similarity is not None else self.settings.identity_min_similarity
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
