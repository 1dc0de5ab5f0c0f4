"""The annotated video: every frame with its boxes, track ids and smoothed labels.

Written under a temporary name and renamed when closed, so a file with the final name is always
a whole, playable video; a run that stops early (a dropped stream) still closes it properly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emolens.errors import EmoLensError
from emolens.results import Results

DEFAULT_FPS = 25.0  # for cameras and streams that do not say


class AnnotatedVideoWriter:
    """``write(results)`` draws and appends one frame; ``close()`` finishes the file.

    The size is fixed by the first frame; a later frame of another size (a stream that changed
    resolution) is resized to it. mp4v in an .mp4 needs no codec beyond OpenCV's own FFmpeg.
    """

    def __init__(self, path: str | Path, fps: float | None = None, fourcc: str = "mp4v"):
        self.path = Path(path)
        self.fps = float(fps) if fps and fps > 0 else DEFAULT_FPS
        self.fourcc = fourcc
        # The temporary name keeps the suffix: OpenCV picks the container from it.
        self.tmp = self.path.with_name(f".{self.path.stem}.part{self.path.suffix}")
        self.frames = 0
        self._writer = None
        self._size: tuple[int, int] | None = None

    def _open(self, width: int, height: int) -> None:
        import cv2

        self.path.parent.mkdir(parents=True, exist_ok=True)
        writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, (width, height))
        if not writer.isOpened():
            raise EmoLensError(
                f"cannot write {self.path}: OpenCV has no {self.fourcc!r} encoder for {self.path.suffix or 'this'} "
                "files here, or the folder is not writable"
            )
        self._writer, self._size = writer, (width, height)

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


def _put_overlay(bgr: np.ndarray, text: str) -> None:
    """Small white-on-black text in the top-left corner (the live FPS, say)."""
    import cv2

    scale = max(0.45, bgr.shape[1] / 1400)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(bgr, (0, 0), (tw + 8, th + base + 8), (0, 0, 0), -1)
    cv2.putText(bgr, text, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
