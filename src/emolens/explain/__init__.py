"""Explanations: which pixels of each face made the model read that emotion.

>>> from emolens.explain import explain_image, overlay_photo
>>> faces = explain_image("photo.jpg", method="gradcam")
>>> faces[0]["label"], faces[0]["heatmap_crop"].shape

Methods need PyTorch weights beside the ONNX model (``fast.pt`` beside ``fast.onnx``) and the
``explain`` extra; a model without them is explained by occlusion on the ONNX model itself.
The attribution methods live in ``emolens.explain.methods`` (imports torch), the deletion and
insertion scores in ``emolens.explain.faithfulness`` (numpy only).
"""

from __future__ import annotations

from emolens.explain.overlay import (
    METHOD_NAMES,
    colorize,
    explain_crop,
    explain_image,
    overlay_crop,
    overlay_photo,
    torch_weights,
)

__all__ = [
    "METHOD_NAMES",
    "colorize",
    "explain_crop",
    "explain_image",
    "overlay_crop",
    "overlay_photo",
    "torch_weights",
]
