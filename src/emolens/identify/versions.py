"""Recognizer versions: train one on every enrolled face, list them, restore one, rebuild one.

A version stores its faces, classifier and threshold (``recognizer_versions``), not a fitted
model: it is refitted from the stored embeddings (deterministically) on first use and kept in
memory. Its report is written to ``$EMOLENS_HOME/identity/versions/vN``. ``People``
(``emolens.identify.gallery``) is the way in: ``People().train()``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emolens.core.errors import EmoLensError, NotFoundError
from emolens.identify.enrol import enrollment_face
from emolens.image.io import iter_image_paths, load_image
from emolens.store.people import PeopleRows, VersionRow, as_utc

if TYPE_CHECKING:
    from emolens.identify.gallery import People

log = logging.getLogger("emolens.identify")


class NotTrainedError(EmoLensError):
    """Recognition was asked for before any recognizer was trained."""

    http_status = 409


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


def _info(rows: PeopleRows, row: VersionRow) -> VersionInfo:
    return VersionInfo(
        row.version,
        as_utc(row.created_at),
        rows.active_id() == row.id,
        row.kind,
        row.threshold,
        row.min_similarity,
        row.n_people,
        row.n_embeddings,
        row.embedder,
        row.metrics,
        row.report_dir,
    )


def _no_version(version) -> NotFoundError:
    return NotFoundError(f"no recognizer version {version}; see `emolens people versions`")


class Versions:
    """The recognizer versions of ``people`` (its store, embedder and ``identity/versions``)."""

    def __init__(self, people: People):
        self.people = people

    @property
    def root(self) -> Path:
        return self.people.root / "versions"

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
        """See ``People.train``."""
        from emolens.identify import recognize

        embedder = self.people.embedder
        with self.people.store.transaction() as rows:
            X, y, face_ids = rows.gallery(embedder.name, embedder.dim or 1)
            names = rows.names()
        if len(X) == 0:
            raise EmoLensError(
                f"no enrolled faces for the {embedder.name} embedder; enroll people first (emolens people enroll)"
            )
        impostors = self._stranger_vectors(strangers) if strangers else None
        analysis = recognize.analyze(
            X,
            y,
            kinds=classifier,
            min_similarity=self.people.min_similarity(),
            folds=folds,
            strangers=impostors,
            target_far=recognize.TARGET_FAR if target_far is None else target_far,
            target_accuracy=recognize.TARGET_ACCURACY if target_accuracy is None else target_accuracy,
            calibration=embedder.calibration,
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

        embedder = self.people.embedder.name
        tmp = self.root / f".pending-{uuid.uuid4().hex[:12]}"
        try:
            with self.people.store.transaction() as rows:
                number = rows.next_version()
                folder = self.root / f"v{number}"
                report = build_report(analysis, names, embedder, number, fit_seconds)
                write_report(report, tmp)
                c = analysis.chosen
                row = rows.add_version(
                    face_ids,
                    version=number,
                    embedder=embedder,
                    kind=c.kind,
                    params=c.params,
                    threshold=c.threshold,
                    min_similarity=analysis.min_similarity,
                    n_people=analysis.n_people,
                    n_embeddings=analysis.n_faces,
                    metrics=report["summary"],
                    report_dir=str(folder),
                )
                if activate:
                    rows.activate(row.id)
                info = _info(rows, row)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if folder.exists():  # left by an attempt whose transaction failed
            shutil.rmtree(folder)
        tmp.rename(folder)
        return TrainResult(info, report, folder)

    def _stranger_vectors(self, strangers: Iterable[str | Path]) -> np.ndarray:
        vecs = []
        for p in iter_image_paths(list(strangers)):
            try:
                pixels = load_image(p)
                face, _ = enrollment_face(pixels, self.people.detector)
                vecs.append(self.people.embedder.embed(pixels, [face])[0])
            except EmoLensError:
                continue  # a stranger photo without a usable face simply adds no probe
        return np.array(vecs, np.float32) if vecs else np.zeros((0, 1), np.float32)

    def versions(self) -> list[VersionInfo]:
        with self.people.store.transaction() as rows:
            return [_info(rows, r) for r in rows.versions()]

    def active_version(self) -> VersionInfo | None:
        with self.people.store.transaction() as rows:
            vid = rows.active_id()
            return None if vid is None else _info(rows, rows.version_by_id(vid))

    def restore(self, version: int) -> VersionInfo:
        """See ``People.restore``."""
        if not 0 < int(version) < 2**63:  # beyond a database integer: no such version, not an overflow
            raise _no_version(version)
        with self.people.store.transaction() as rows:
            row = rows.version(int(version))
            if row is None:
                raise _no_version(version)
            rows.activate(row.id)
            info = _info(rows, row)
        log.info("restored recognizer version %d", info.version)
        return info

    def recognizer(self, version: int | None = None):
        """See ``People.recognizer``."""
        from emolens.identify.recognize import Recognizer

        embedder = self.people.embedder
        with self.people.store.transaction() as rows:
            if version is None:
                vid = rows.active_id()
                if vid is None:
                    raise NotTrainedError("no trained recognizer yet: enroll people, then run `emolens people train`")
                row = rows.version_by_id(vid)
            else:
                row = rows.version(int(version))
                if row is None:
                    raise _no_version(version)
            if row.embedder != embedder.name:
                raise EmoLensError(
                    f"recognizer version {row.version} was trained with the {row.embedder} embedder, but "
                    f"{embedder.name} is configured; set EMOLENS_EMBEDDER back or enroll and train again"
                )
            face_ids = rows.version_face_ids(row.id, embedder.name)
            info = _info(rows, row)
            people = rows.names()
        if not face_ids:
            raise NotTrainedError(
                f"recognizer version {info.version} has no enrolled faces left; enroll people and train again"
            )
        key = self._cache_key(info, face_ids)

        def build() -> Recognizer:
            with self.people.store.transaction() as rows:
                X, y, _ = rows.gallery(embedder.name, embedder.dim or 1, version_id=row.id)
            return Recognizer(info.kind, row.params or {}, info.threshold, info.min_similarity).fit(X, y)

        rec = _cached_recognizer(key, build)
        return rec, info, people

    def _cache_key(self, info: VersionInfo, face_ids: Sequence[int]) -> tuple:
        # The faces are part of the key: removing a person changes what the version is refitted on.
        db = self.people.store.database()
        return db, info.version, info.created_at, hashlib.sha1(str(sorted(face_ids)).encode()).hexdigest()
