"""Live mode: frames arrive one at a time (a web page's camera, say) and go back with track ids
and smoothed emotions, so the labels a user sees are stable.

The serving app keeps one ``LiveSession`` per connection and feeds it each frame it receives:

>>> shared = VideoAnalyzer().analyzer        # once per app: the detector tuned for video, loaded once
>>> session = LiveSession(shared)            # per connection: its own tracks and smoothing
>>> res = session.process(jpeg_bytes)        # or an RGB array
>>> res.to_dict()["faces"][0]["track_id"], res[0].label

Any ``Analyzer`` can be shared (its detector is used as it is: the image default ``max_side`` of
1600 enlarges a 640x480 frame before detecting, which costs ~1.7x); the emotion model is the
analyzer's, run in a one-thread session of its own (see ``VideoAnalyzer.model``).

Frames from a page arrive a few times a second, far apart in motion, so by default every frame
is detected (``detect_every=1``); ids then come from box overlap alone, and optical flow only
fills in when a detection misses. The session is thread-safe (one frame at a time) and holds
no more than one previous frame.
"""

from __future__ import annotations

import threading
import time

from emolens.image.io import ImageInput, load_image
from emolens.pipeline.analyzer import Analyzer
from emolens.pipeline.results import Results
from emolens.video.pipeline import VideoAnalyzer


class LiveSession:
    """One live feed: ``process(frame) -> Results`` with ``track_id`` and smoothed ``probs``.

    ``analyzer``: an ``Analyzer`` to share (its detector and model are used as they are); None
    builds one tuned for video (the detector input capped at ``max_side``). Other options are
    ``VideoAnalyzer``'s: ``detect_every``, ``smoothing`` (EMA alpha) or ``window``, ``min_hits``...
    """

    def __init__(self, analyzer: Analyzer | None = None, *, detect_every: int = 1, **options):
        self.video = VideoAnalyzer(analyzer, detect_every=detect_every, **options)
        self.video.source_name = "live"
        self.frames = 0
        self.started: float | None = None
        self._lock = threading.Lock()

    def process(self, frame: ImageInput, timestamp: float | None = None) -> Results:
        """Analyse the next frame: encoded bytes (JPEG/PNG/WebP from the page), an RGB array, a
        PIL image or a path. ``timestamp`` (seconds) defaults to the time since the first frame.
        Boxes are in the pixels of the frame as sent. Raises ``BadImageError`` for a frame that
        does not decode; the session carries on with the next."""
        image = load_image(frame, self.video.analyzer.max_pixels)
        with self._lock:
            now = time.monotonic()
            if self.started is None:
                self.started = now
            ts = now - self.started if timestamp is None else float(timestamp)
            res = self.video.process(image, self.frames, ts)
            self.frames += 1
            return res

    __call__ = process

    def reset(self) -> None:
        """Start over: new ids, no smoothing memory (the page switched cameras, say)."""
        with self._lock:
            self.video.reset()
            self.frames, self.started = 0, None

    close = reset  # nothing to release but memory

    @property
    def labels(self) -> list[str]:
        return self.video.labels
