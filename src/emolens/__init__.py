"""EmoLens: offline facial emotion recognition.

>>> from emolens import Analyzer
>>> Analyzer()("photo.jpg").summary()

Attributes are imported lazily so ``import emolens`` stays fast and loads no model.
"""

from __future__ import annotations

__version__ = "0.1.0"

from emolens._lazy import lazy_exports

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

__getattr__, __all__ = lazy_exports(__name__, _LAZY)
