"""The annotated video: every frame with its boxes, track ids and smoothed labels.

Written under a temporary name and renamed when closed, so a file with the final name is always
a whole, playable video; a run that stops early (a dropped stream) still closes it properly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emolens.core.errors import EmoLensError
from emolens.pipeline.results import Results

DEFAULT_FPS = 25.0  # for cameras and streams that do not say


class AnnotatedVideoWriter:
    """``write(results)`` draws and appends one frame; ``close()`` finishes the file.

    The size is fixed by the first frame; a later frame of another size (a stream that changed
    resolution) is resized to it. ``codec="auto"`` writes H.264 through PyAV (the ``video``
    extra) when its FFmpeg has an H.264 encoder, which browsers play; otherwise MPEG-4 Part 2
    (``mp4v``) through OpenCV's own FFmpeg, which needs nothing more but which browsers do not
    play. ``codec`` names what was used, once the first frame is written.
    """

    def __init__(self, path: str | Path, fps: float | None = None, fourcc: str = "auto"):
        self.path = Path(path)
        self.fps = float(fps) if fps and fps > 0 else DEFAULT_FPS
        self.fourcc = fourcc  # "auto" (H.264 when PyAV offers it), or an OpenCV fourcc such as "mp4v"
        # The temporary name keeps the suffix: the container follows it.
        self.tmp = self.path.with_name(f".{self.path.stem}.part{self.path.suffix}")
        self.frames = 0
        self.codec: str | None = None
        self._writer = None
        self._size: tuple[int, int] | None = None

    def _open(self, width: int, height: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.fourcc == "auto":
            writer = _PyAVWriter.open(self.tmp, self.fps, width, height)
            if writer is not None:
                self._writer, self._size, self.codec = writer, (width, height), "H.264 (PyAV)"
                return
        import cv2

        fourcc = "mp4v" if self.fourcc == "auto" else self.fourcc
        writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*fourcc), self.fps, (width, height))
        if not writer.isOpened():
            raise EmoLensError(
                f"cannot write {self.path}: OpenCV has no {fourcc!r} encoder for {self.path.suffix or 'this'} "
                "files here, or the folder is not writable"
            )
        self._writer, self._size = writer, (width, height)
        self.codec = "MPEG-4 Part 2 (mp4v, OpenCV)" if fourcc == "mp4v" else f"{fourcc} (OpenCV)"

    def write(self, results: Results, overlay: str | None = None) -> None:
        """Append the annotated frame of ``results`` (which must still hold its image)."""
        self.write_image(results.plot(), overlay)

    def write_image(self, rgb: np.ndarray, overlay: str | None = None) -> None:
        import cv2

        h, w = rgb.shape[:2]
        if self._writer is None:
            self._open(w, h)
        if (w, h) != self._size:
            rgb = cv2.resize(rgb, self._size, interpolation=cv2.INTER_AREA)
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        if overlay:
            _put_overlay(bgr, overlay)
        self._writer.write(bgr)
        self.frames += 1

    def close(self) -> Path | None:
        """Finish the file and give it its name; None when no frame was written."""
        writer, self._writer = self._writer, None
        if writer is None:
            self.tmp.unlink(missing_ok=True)
            return None
        writer.release()
        self.tmp.replace(self.path)
        return self.path

    def abort(self) -> None:
        """Drop the file being written."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.release()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> AnnotatedVideoWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        # Even after an error the frames so far are worth keeping: the user sees where it stopped.
        self.close()


class _PyAVWriter:
    """H.264 in the container the suffix names, through PyAV: the same write/release as OpenCV's."""

    ENCODERS = ("libx264", "h264", "libopenh264")

    def __init__(self, container, stream):
        self.container, self.stream = container, stream

    @classmethod
    def open(cls, path: Path, fps: float, width: int, height: int) -> _PyAVWriter | None:
        """A writer, or None when PyAV or an H.264 encoder is missing (the caller falls back)."""
        try:
            import av
        except ImportError:
            return None
        from fractions import Fraction

        for name in cls.ENCODERS:
            try:
                av.codec.Codec(name, "w")
            except Exception:  # PyAV raises its own "unknown codec" types
                continue
            container = av.open(str(path), mode="w")
            try:
                stream = container.add_stream(name, rate=Fraction(fps).limit_denominator(1001))
                # H.264 in yuv420p needs even sides: an odd side loses its last pixel row or column.
                stream.width, stream.height = width - width % 2, height - height % 2
                stream.pix_fmt = "yuv420p"
                return cls(container, stream)
            except Exception:
                container.close()
                path.unlink(missing_ok=True)
        return None

    def write(self, bgr: np.ndarray) -> None:
        import av

        if bgr.shape[1] != self.stream.width or bgr.shape[0] != self.stream.height:
            bgr = bgr[: self.stream.height, : self.stream.width]
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(bgr), format="bgr24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def release(self) -> None:
        for packet in self.stream.encode():  # flush the encoder's delayed frames
            self.container.mux(packet)
        self.container.close()


def _put_overlay(bgr: np.ndarray, text: str) -> None:
    """Small white-on-black text in the top-left corner (the live FPS, say)."""
    import cv2

    scale = max(0.45, bgr.shape[1] / 1400)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(bgr, (0, 0), (tw + 8, th + base + 8), (0, 0, 0), -1)
    cv2.putText(bgr, text, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
