"""Emotion classification: the self-describing ONNX model format and its runtime."""

from emolens.classify.emotion import EmotionModel
from emolens.classify.modelfile import InputSpec, ModelMeta

__all__ = ["EmotionModel", "InputSpec", "ModelMeta"]
