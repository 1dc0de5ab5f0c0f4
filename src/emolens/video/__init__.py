"""Emotions over time, from video files, cameras, streams and live frames.

>>> from emolens.video import analyze_video
>>> for res in analyze_video("clip.mp4"):
...     print(res.frame_index, [(f.track_id, f.label) for f in res])

Names are imported lazily: ``import emolens.video`` loads neither OpenCV nor a model.
"""

from __future__ import annotations

from emolens.core.lazy import lazy_exports

_LAZY = {
    "VideoAnalyzer": "emolens.video.pipeline",
    "VideoRun": "emolens.video.pipeline",
    "analyze_video": "emolens.video.pipeline",
    "LiveSession": "emolens.video.live",
    "VideoSource": "emolens.video.source",
    "VideoSourceError": "emolens.video.source",
    "SourceStats": "emolens.video.source",
    "Tracker": "emolens.video.track",
    "EmaSmoother": "emolens.video.smooth",
    "WindowSmoother": "emolens.video.smooth",
    "make_smoother": "emolens.video.smooth",
    "Timeline": "emolens.video.timeline",
    "AnnotatedVideoWriter": "emolens.video.writer",
}

__getattr__, __all__ = lazy_exports(__name__, _LAZY)
