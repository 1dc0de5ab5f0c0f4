"""EmoLens: offline facial emotion recognition.

>>> from emolens import Analyzer
>>> Analyzer()("photo.jpg").summary()

Attributes are imported lazily so ``import emolens`` stays fast and loads no model.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "Analyzer": "emolens.analyzer",
    "analyze": "emolens.analyzer",
    "Results": "emolens.results",
    "FaceResult": "emolens.results",
    "EmotionModel": "emolens.classify",
    "create_detector": "emolens.detect",
    "list_detectors": "emolens.detect",
    "load_image": "emolens.io",
    "EmoLensError": "emolens.errors",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'emolens' has no attribute {name!r}")
