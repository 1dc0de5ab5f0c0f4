"""Video sources: a file, a camera index or a stream URL, read frame by frame without crashing.

OpenCV reports a frame it cannot decode as one failed ``read()`` and carries on with the next,
so a failure is only the end when failures keep coming: a file's container says how many frames
it holds, and frames it announced but never gave are counted as undecodable; a camera or stream
that keeps failing is reopened a few times, then reported as dropped. Either way iteration simply
stops and ``stats`` says why, so the frames already analysed are kept.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emolens.core.errors import EmoLensError

# FFmpeg prints every concealed decoding error to stderr; a garbled file would bury the progress
# display. Quiet unless the user asked for a level (read by OpenCV once, at its first capture).
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")


class VideoSourceError(EmoLensError):
    """The video cannot be opened or holds no decodable frame."""

    http_status = 422


@dataclass
class Frame:
    index: int  # position in the source from 0, undecodable frames included, so times stay true
    timestamp: float  # seconds from the start of the source
    image: np.ndarray  # RGB uint8 (H, W, 3)


@dataclass
class SourceStats:
    frames_read: int = 0
    undecodable: int = 0  # frames that failed to decode (skipped), plus those a file announced but never gave
    skipped_late: int = 0  # live sources: frames replaced by a newer one before they could be analysed
    reconnects: int = 0
    ended_early: str | None = None  # why reading stopped before the end (stream dropped, file truncated)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def parse_source(source: str | int | Path) -> tuple[str | int, str]:
    """``(what to give OpenCV, kind)`` with kind ``camera``, ``stream`` or ``file``."""
    if isinstance(source, int) or (isinstance(source, str) and source.strip().isdigit() and not Path(source).exists()):
        return int(source), "camera"
    text = str(source)
    if text.lower().startswith(STREAM_SCHEMES):
        return text, "stream"
    return text, "file"


def source_name(source: str | int | Path) -> str:
    """A short name for outputs: the file's stem, ``camera0``, or the stream's last path part."""
    target, kind = parse_source(source)
    if kind == "camera":
        return f"camera{target}"
    stem = Path(str(target).split("?")[0].rstrip("/")).stem
    return stem or "stream"


def open_capture(target: str | int, kind: str, timeout_s: float = 10.0):
    """A ``cv2.VideoCapture``; streams get open and read timeouts, so a stalled one fails, not hangs."""
    import cv2

    if kind == "stream":
        ms = int(timeout_s * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        return cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
    return cv2.VideoCapture(target)


class VideoSource:
    """Frames of a video file, a camera or a stream, as RGB arrays.

    >>> with VideoSource("clip.mp4") as src:
    ...     for frame in src:
    ...         ...
    >>> src.stats.undecodable, src.stats.ended_early

    Live sources (camera, stream) are read by a background thread that keeps only the newest
    frame, so a slow analysis shows the present, not an ever-growing backlog; frames it replaced
    are counted in ``stats.skipped_late``. ``latest_only=False`` analyses every frame instead.
    """

    def __init__(
        self,
        source: str | int | Path,
        *,
        reconnects: int = 3,
        retry_delay: float = 0.5,
        max_failures: int = 50,
        latest_only: bool | None = None,
        timeout_s: float = 10.0,
        capture_factory: Callable[[str | int, str], object] | None = None,
    ):
        self.target, self.kind = parse_source(source)
        self.name = source_name(source)
        self.live = self.kind != "file"
        self.reconnects = reconnects
        self.retry_delay = retry_delay
        # Consecutive failed reads before a file is taken as ended; a live source then reconnects.
        self.max_failures = max_failures if not self.live else min(max_failures, 10)
        self.latest_only = self.live if latest_only is None else latest_only
        self.timeout_s = timeout_s
        self._factory = capture_factory or (lambda t, k: open_capture(t, k, timeout_s))
        self.stats = SourceStats()
        self._closed = False
        self._reader: threading.Thread | None = None
        self._check_file()
        self._cap = self._open()
        self._describe()

    # -- opening ---------------------------------------------------------------------------
    def _check_file(self) -> None:
        if self.kind != "file":
            return
        path = Path(str(self.target))
        if not path.exists():
            raise VideoSourceError(f"{path}: no such file")
        if path.is_dir():
            raise VideoSourceError(f"{path}: is a folder, not a video")
        if path.stat().st_size == 0:
            raise VideoSourceError(f"{path}: empty file (0 bytes)")

    def _open(self):
        try:
            cap = self._factory(self.target, self.kind)
        except Exception as exc:  # OpenCV raises its own cv2.error for some malformed names
            raise VideoSourceError(f"{self._open_failure()} ({exc})") from None
        if cap is None or not cap.isOpened():
            raise VideoSourceError(self._open_failure())
        return cap

    def _open_failure(self) -> str:
        if self.kind == "camera":
            return f"camera {self.target} cannot be opened: no such camera, or it is in use or not permitted"
        if self.kind == "stream":
            return f"{self.target}: the stream cannot be opened (unreachable, refused, or not a video stream)"
        return f"{self.target}: not a video OpenCV can read: corrupt, truncated, or an unsupported format or codec"

    def _describe(self) -> None:
        import cv2

        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0.5 < fps < 1000 else None  # cameras and streams often report 0 or nonsense
        n = self._cap.get(cv2.CAP_PROP_FRAME_COUNT)
        # Streams report 0, -1 or -2**63; only a file's count is a promise the container makes.
        self.frame_count = int(n) if self.kind == "file" and 0 < n < 1e9 else None
        self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0) or None
        self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0) or None

    # -- reading ---------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Frame]:
        frames = self._latest_frames() if self.latest_only else self._frames()
        return frames

    def _frames(self) -> Iterator[Frame]:
        """Every decodable frame in order; failures are counted, then ended on or reconnected."""
        import cv2

        index, failures, start = 0, 0, time.monotonic()
        while not self._closed and self._cap is not None:
            ok, bgr = self._cap.read()
            if ok and bgr is not None and bgr.ndim in (2, 3) and bgr.size:
                self.stats.undecodable += failures  # failures followed by a frame were bad frames
                index += failures
                failures = 0
                ts = index / self.fps if (self.fps and not self.live) else time.monotonic() - start
                self.stats.frames_read += 1
                code = cv2.COLOR_GRAY2RGB if bgr.ndim == 2 else cv2.COLOR_BGR2RGB
                yield Frame(index, ts, cv2.cvtColor(bgr, code))
                index += 1
                continue
            failures += 1
            if self.frame_count is not None and index + failures > self.frame_count:
                self._stopped(index)  # past the announced end: a clean end, or a truncated file
                return
            if failures < self.max_failures:
                continue
            if self.live and self._reconnect():
                failures = 0
                continue
            self._stopped(index)
            return

    def _stopped(self, index: int) -> None:
        """Reading failed for good: say how, and count what a file announced but did not give."""
        if self.stats.frames_read == 0:
            what = "no frame could be decoded" if not self.live else "the source gave no frame"
            raise VideoSourceError(f"{self.target}: {what} (corrupt, unsupported codec, or no signal)")
        if self.live:
            self.stats.ended_early = (
                f"the {self.kind} dropped after {self.stats.frames_read} frames "
                f"and could not be reopened ({self.stats.reconnects} reconnect(s))"
            )
        elif self.frame_count is not None and self.frame_count - index > 1:
            # Some containers estimate their count from the duration: one frame short is not damage.
            self.stats.undecodable += self.frame_count - index
            self.stats.ended_early = (
                f"the file could not be read past frame {index} of {self.frame_count} (truncated or corrupt)"
            )

    def _reconnect(self) -> bool:
        """Reopen a dropped camera or stream, waiting longer each time; True when it is back."""
        for attempt in range(self.reconnects):
            if self._closed:
                return False
            time.sleep(self.retry_delay * 2**attempt)
            self._cap.release()
            try:
                cap = self._factory(self.target, self.kind)
            except Exception:  # a backend error on reopen is one more failed attempt
                cap = None
            if cap is not None and cap.isOpened():
                self._cap = cap
                self.stats.reconnects += 1
                return True
        return False

    def _latest_frames(self) -> Iterator[Frame]:
        """``_frames`` on a thread that keeps only the newest frame (live sources)."""
        slot: list[Frame | BaseException | None] = []
        cond = threading.Condition()
        done = object()

        def reader() -> None:
            try:
                for frame in self._frames():
                    with cond:
                        if slot:
                            self.stats.skipped_late += 1
                        slot[:] = [frame]
                        cond.notify()
                item: object = done
            except BaseException as exc:  # handed to the consumer, which raises it there
                item = exc
            with cond:
                slot.append(item)  # after any pending frame, so it is still delivered
                cond.notify()

        thread = self._reader = threading.Thread(target=reader, name=f"emolens-video-{self.name}", daemon=True)
        thread.start()
        try:
            while True:
                with cond:
                    cond.wait_for(lambda: bool(slot))
                    item = slot.pop(0)
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._closed = True
            thread.join(timeout=self.timeout_s + 1)

    # -- closing ---------------------------------------------------------------------------
    def close(self) -> None:
        self._closed = True
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout=self.timeout_s + 1)
            if self._reader.is_alive():  # stuck in a read: releasing under it could crash OpenCV
                return
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        size = f"{self.width}x{self.height}" if self.width else "?"
        return f"VideoSource({self.target!r}, {self.kind}, {size}, fps={self.fps}, frames={self.frame_count})"
