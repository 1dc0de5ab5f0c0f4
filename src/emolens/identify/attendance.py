"""Attendance: a session that records who was present, when first seen, and how they looked.

>>> session = AttendanceSession.start("Maths, Monday")
>>> session.add_image("door_cam_0001.jpg")
>>> session.add_video("lecture.mp4", every=15)     # or a camera: add_video(0, max_frames=300)
>>> session.stop()
>>> session.export_csv("maths_monday.csv")

Each enrolled person is marked present once per session, at the first frame they are recognised
in, with that frame's confidence; later sightings update the last-seen time, the best confidence
and the person's emotion tally (the emotion model runs on the same detected faces). Faces that are
not recognised are only counted: nothing about unknown people is stored.
"""

from __future__ import annotations

import csv
import io
import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from emolens.core.errors import EmoLensError, RefusedError
from emolens.identify.gallery import Match, People
from emolens.image.io import ImageInput, iter_image_paths, load_image
from emolens.store.people import PeopleRows, PersonRow, RecordRow, SessionRow, as_utc

log = logging.getLogger("emolens.identify")

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}
MAX_GRAB_FAILURES = 25  # consecutive unreadable frames after which a video is taken to have ended


@dataclass
class FrameResult:
    """What one image or video frame added to the session."""

    source: str
    matches: list[Match]
    emotions: list[dict[str, float]]  # per face, in the order of ``matches`` ({} when not classified)
    newly_present: list[str]  # keys of people marked present by this frame

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "faces": [m.to_dict() | {"emotions": e} for m, e in zip(self.matches, self.emotions, strict=True)],
            "newly_present": self.newly_present,
        }


@dataclass
class VideoSummary:
    source: str
    frames_read: int = 0  # frames decoded from the stream (sampled or not)
    frames_used: int = 0  # sampled frames that were analysed
    undecodable: int = 0  # frames the decoder could not read
    newly_present: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AttendanceRow:
    key: str
    name: str
    present: bool
    first_seen: datetime | None = None
    first_seen_source: str | None = None
    confidence: float | None = None  # at the first sighting
    best_confidence: float | None = None
    last_seen: datetime | None = None
    sightings: int = 0
    emotion: str | None = None  # highest mean probability over the sightings
    emotion_shares: dict[str, float] = field(default_factory=dict)  # share of sightings per top emotion
    mean_probs: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("first_seen", "last_seen"):
            d[k] = d[k].isoformat() if d[k] else None
        return d


@dataclass
class AttendanceReport:
    uid: str
    name: str
    started_at: datetime
    stopped_at: datetime | None
    version: int | None
    threshold: float | None
    frames: int
    undecodable: int
    faces: int
    unknown_faces: int
    rows: list[AttendanceRow]

    @property
    def present(self) -> list[AttendanceRow]:
        return [r for r in self.rows if r.present]

    @property
    def absent(self) -> list[AttendanceRow]:
        return [r for r in self.rows if not r.present]

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "rows"}
        d["started_at"] = self.started_at.isoformat()
        d["stopped_at"] = self.stopped_at.isoformat() if self.stopped_at else None
        return d | {"present": len(self.present), "absent": len(self.absent), "rows": [r.to_dict() for r in self.rows]}

    def to_csv(self) -> str:
        """One row per enrolled person (present first, then absent), emotion shares as columns."""
        labels = sorted({k for r in self.rows for k in r.mean_probs})
        fields = [
            "key",
            "name",
            "present",
            "first_seen",
            "first_seen_source",
            "confidence",
            "best_confidence",
            "last_seen",
            "sightings",
            "emotion",
            *[f"share_{k}" for k in labels],
        ]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for r in self.rows:
            d = r.to_dict()
            d["present"] = "yes" if r.present else "no"
            for k in ("confidence", "best_confidence"):
                d[k] = "" if d[k] is None else f"{d[k]:.4f}"
            d |= {f"share_{k}": f"{r.emotion_shares.get(k, 0.0):.3f}" if r.sightings else "" for k in labels}
            writer.writerow({k: ("" if v is None else v) for k, v in d.items()})
        return buf.getvalue()


class AttendanceSession:
    """A started (or reopened) attendance session. Use ``start`` or ``open``, not the constructor."""

    def __init__(self, uid: str, people: People | None = None, emotions: bool = True):
        self.uid = uid
        self.people = people or People()
        self.emotions = emotions
        self._analyzer = None

    # -- life cycle

    @classmethod
    def start(cls, name: str | None = None, people: People | None = None, emotions: bool = True) -> AttendanceSession:
        """Start a session with the active recognizer version (which must exist)."""
        people = people or People()
        _rec, info, _ = people.recognizer()  # fails now, not on the first frame, when nothing is trained
        now = datetime.now(UTC)
        uid = uuid.uuid4().hex[:12]
        with people.store.transaction() as rows:
            rows.add_session(
                uid=uid,
                name=(name or f"session {now:%Y-%m-%d %H:%M}")[:256],
                started_at=now,
                version=info.version,
                threshold=info.threshold,
            )
        log.info("attendance session %s started", uid)
        return cls(uid, people, emotions)

    @classmethod
    def open(cls, uid: str | None = None, people: People | None = None, emotions: bool = True) -> AttendanceSession:
        """Reopen a session by id (a unique prefix is enough); None: the most recent open session."""
        people = people or People()
        return cls(people.store.find_session(uid, open_only=uid is None).uid, people, emotions)

    @classmethod
    def latest(cls, people: People | None = None, emotions: bool = True) -> AttendanceSession:
        """Reopen the most recent session, open or stopped (NotFoundError when there is none)."""
        people = people or People()
        return cls(people.store.find_session(None).uid, people, emotions)

    def _row(self, rows: PeopleRows) -> SessionRow:
        return rows.find_session(self.uid)

    @property
    def is_open(self) -> bool:
        with self.people.store.transaction() as rows:
            return self._row(rows).stopped_at is None

    def stop(self) -> AttendanceReport:
        """Close the session (idempotent) and return its report."""
        with self.people.store.transaction() as rows:
            row = self._row(rows)
            if row.stopped_at is None:
                row.stopped_at = datetime.now(UTC)
        log.info("attendance session %s stopped", self.uid)
        return self.report()

    # -- feeding

    @property
    def analyzer(self):
        if self._analyzer is None:
            from emolens.pipeline.analyzer import Analyzer

            self._analyzer = Analyzer(detector=self.people.detector, workspace=self.people.workspace)
        return self._analyzer

    def add_image(self, image: ImageInput, at: datetime | None = None, source: str | None = None) -> FrameResult:
        """Recognise every face of one image and record who is present (``at``: when it was taken;
        default now). Raises BadImageError for an unreadable image."""
        src = source or (Path(image).name if isinstance(image, (str, Path)) else "image")
        self.check_open()
        return self._process(load_image(image), at or datetime.now(UTC), src)

    def add_images(
        self, inputs: Iterable[str | Path], progress: Callable[[int, int], None] | None = None
    ) -> tuple[list[FrameResult], list[tuple[str, str]]]:
        """Add many images (files, folders, globs); returns the results and (file, reason) failures."""
        paths = iter_image_paths(list(inputs))
        results, failed = [], []
        for i, p in enumerate(paths):
            try:
                results.append(self.add_image(p))
            except EmoLensError as exc:
                failed.append((p.name, str(exc).replace(str(p), p.name)))
                self._count(undecodable=1)
            if progress:
                progress(i + 1, len(paths))
        return results, failed

    def add_video(
        self,
        source: str | Path | int,
        every: int = 15,
        max_frames: int | None = None,
        start_time: datetime | None = None,
        progress: Callable[[int, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> VideoSummary:
        """Analyse every ``every``-th frame of a video file or camera (an int index, or a string of
        digits). For a file, a frame's time is ``start_time`` plus its position in the video
        (default: the processing time); for a camera, the time it was read. Unreadable frames are
        counted and skipped. A camera runs until ``max_frames`` frames were read or ``should_stop``
        returns True."""
        import cv2

        self.check_open()
        camera = isinstance(source, int) or (isinstance(source, str) and source.isdigit())
        if not camera and not Path(source).is_file():
            raise EmoLensError(f"{source}: no such video file")
        cap = cv2.VideoCapture(int(source) if camera else str(source))
        label = f"camera {int(source)}" if camera else Path(source).name
        if not cap.isOpened():
            raise EmoLensError(
                f"{label}: cannot be opened as a video" + (" (camera busy or absent?)" if camera else "")
            )
        summary = VideoSummary(label)
        try:
            for index, total, frame, pos in _sampled_frames(
                cap, camera, max(1, int(every)), max_frames, summary, should_stop
            ):
                at = (start_time + timedelta(seconds=pos)) if start_time and not camera else datetime.now(UTC)
                where = f"{label} frame {index}" + ("" if camera else f" ({pos:.1f} s)")
                result = self._process(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), at, where)
                summary.frames_used += 1
                summary.newly_present += result.newly_present
                if progress:
                    progress(index + 1, total)
            if progress:  # the frames after the last sampled one were read too: the bar ends full
                passed = summary.frames_read + summary.undecodable
                progress(passed, passed)
        finally:
            cap.release()
        if summary.undecodable:
            self._count(undecodable=summary.undecodable)
        return summary

    def check_open(self) -> None:
        """RefusedError when the session is stopped: a caller can refuse before any work."""
        with self.people.store.transaction() as rows:
            if self._row(rows).stopped_at is not None:
                raise RefusedError(f"attendance session {self.uid} is stopped; start a new one")

    def _count(self, **inc: int) -> None:
        with self.people.store.transaction() as rows:
            row = self._row(rows)
            for k, v in inc.items():
                setattr(row, k, getattr(row, k) + v)

    def _process(self, image: np.ndarray, at: datetime, source: str) -> FrameResult:
        faces = self.people.detector(image)
        matches = self.people.identify_faces(image, faces)
        emotions: list[dict[str, float]] = [{} for _ in faces]
        if self.emotions and faces:
            for i, r in enumerate(self.analyzer.classify_faces(image, faces)):
                emotions[i] = r.probs
        newly = self._record(matches, emotions, at, source)
        return FrameResult(source, matches, emotions, newly)

    def _record(self, matches: list[Match], emotions: list[dict], at: datetime, source: str) -> list[str]:
        """Update the session and its records in one transaction; returns newly present keys."""
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        newly = []
        with self.people.store.transaction() as rows:
            row = self._row(rows)
            if row.stopped_at is not None:
                raise RefusedError(f"attendance session {self.uid} is stopped; start a new one")
            row.frames += 1
            row.faces += len(matches)
            row.unknown_faces += sum(1 for m in matches if not m.known)
            for m, probs in zip(matches, emotions, strict=True):
                if not m.known:
                    continue
                person = rows.person_or_none(m.key)
                if person is None:  # removed while the session ran
                    continue
                rec = rows.record(row.id, person.id)
                if rec is None:
                    rec = rows.add_record(
                        session_id=row.id,
                        person_id=person.id,
                        first_seen=at,
                        first_seen_source=source[:512],
                        confidence=m.confidence,
                        best_confidence=m.confidence,
                        last_seen=at,
                        sightings=0,
                        emotions={"n": 0, "top": {}, "sum": {}},
                    )
                    newly.append(m.key)
                rec.sightings += 1
                rec.best_confidence = max(rec.best_confidence, m.confidence)
                rec.last_seen = max(as_utc(rec.last_seen), at)
                if probs:
                    rec.emotions = _tally(rec.emotions, probs)
        return newly

    # -- results

    def report(self) -> AttendanceReport:
        with self.people.store.transaction() as db:
            row = self._row(db)
            records = db.records(row.id)
            rows = [_attendance_row(p, records.get(p.id)) for p in db.people()]
            rows.sort(key=lambda r: (not r.present, r.first_seen or datetime.max.replace(tzinfo=UTC), r.key))
            return AttendanceReport(
                row.uid,
                row.name,
                as_utc(row.started_at),
                as_utc(row.stopped_at) if row.stopped_at else None,
                row.version,
                row.threshold,
                row.frames,
                row.undecodable,
                row.faces,
                row.unknown_faces,
                rows,
            )

    def export_csv(self, path: str | Path) -> Path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(self.report().to_csv(), newline="")
        return target


def _sampled_frames(cap, camera: bool, every: int, max_frames: int | None, summary: VideoSummary, should_stop):
    """Yield (index, total, BGR frame, position in seconds) for every ``every``-th frame, counting
    frames read and undecodable ones in ``summary``. Only sampled frames are decoded (``grab``
    without ``retrieve`` skips the others cheaply)."""
    import cv2

    total = -1 if camera else int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or -1)
    index, failures = -1, 0
    while max_frames is None or summary.frames_read < max_frames:
        if should_stop and should_stop():
            return
        index += 1
        if 0 < total <= index:
            return
        if not cap.grab():  # a damaged frame, or the end of the stream
            failures += 1
            if total <= 0 and not camera:
                return  # a file of unknown length: this is its end
            summary.undecodable += 1
            if failures > MAX_GRAB_FAILURES:
                # The rest of what the file announced cannot be read either (truncated file).
                summary.undecodable += max(total - index - 1, 0)
                return
            continue
        failures = 0
        summary.frames_read += 1
        if index % every:
            continue
        ok, frame = cap.retrieve()
        if not ok or frame is None or frame.size == 0:
            summary.undecodable += 1
            continue
        yield index, total, frame, cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0


def list_sessions(people: People | None = None) -> list[dict[str, Any]]:
    """Every session, newest first: id, name, times, frames and how many people were present."""
    people = people or People()
    with people.store.transaction() as rows:
        out = []
        for r, n in rows.sessions():
            out.append(
                {
                    "uid": r.uid,
                    "name": r.name,
                    "started_at": as_utc(r.started_at).isoformat(),
                    "stopped_at": as_utc(r.stopped_at).isoformat() if r.stopped_at else None,
                    "frames": r.frames,
                    "present": n,
                }
            )
        return out


def _tally(tally: dict, probs: dict[str, float]) -> dict:
    """Add one sighting's emotion probabilities to a person's tally (a new dict: JSON columns
    are only saved when reassigned)."""
    top = max(probs, key=probs.get)
    counts = dict(tally.get("top", {}))
    counts[top] = counts.get(top, 0) + 1
    sums = dict(tally.get("sum", {}))
    for k, v in probs.items():
        sums[k] = sums.get(k, 0.0) + float(v)
    return {"n": int(tally.get("n", 0)) + 1, "top": counts, "sum": sums}


def _attendance_row(person: PersonRow, rec: RecordRow | None) -> AttendanceRow:
    if rec is None:
        return AttendanceRow(person.key, person.name, False)
    e = rec.emotions or {}
    n = int(e.get("n", 0))
    mean = {k: round(v / n, 4) for k, v in e.get("sum", {}).items()} if n else {}
    shares = {k: round(v / n, 4) for k, v in e.get("top", {}).items()} if n else {}
    return AttendanceRow(
        person.key,
        person.name,
        True,
        as_utc(rec.first_seen),
        rec.first_seen_source,
        round(rec.confidence, 4),
        round(rec.best_confidence, 4),
        as_utc(rec.last_seen),
        rec.sightings,
        max(mean, key=mean.get) if mean else None,
        shares,
        mean,
    )
