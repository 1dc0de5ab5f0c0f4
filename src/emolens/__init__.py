"""EmoLens: offline facial emotion recognition.

>>> from emolens import Analyzer
>>> Analyzer()("photo.jpg").summary()

Attributes are imported lazily so ``import emolens`` stays fast and loads no model.
"""

from __future__ import annotations

__version__ = "0.1.0"

import os as _os
import sys as _sys

# Nothing leaves the machine: ONNX Runtime would otherwise write a device id and queue telemetry
# events under ~/.cache/Microsoft/DeveloperTools/ from the moment it is imported. The variable must
# be set before that import; when the caller imported it first, its events are switched off.
_os.environ["ORT_DISABLE_TELEMETRY"] = "1"
if "onnxruntime" in _sys.modules:
    _sys.modules["onnxruntime"].disable_telemetry_events()

from emolens.core.lazy import lazy_exports  # noqa: E402

_LAZY = {
    "Analyzer": "emolens.pipeline.analyzer",
    "analyze": "emolens.pipeline.analyzer",
    "Results": "emolens.pipeline.results",
    "FaceResult": "emolens.pipeline.results",
    "EmotionModel": "emolens.classify",
    "create_detector": "emolens.detect",
    "list_detectors": "emolens.detect",
    "load_image": "emolens.image.io",
    "EmoLensError": "emolens.core.errors",
}

__getattr__, __all__ = lazy_exports(__name__, _LAZY)
