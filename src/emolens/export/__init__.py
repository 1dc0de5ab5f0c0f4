"""Deployment formats derived from an exported EmoLens ONNX model (INT8, ...)."""

from emolens.export.quantize import quantize_int8, stratified_sample

__all__ = ["quantize_int8", "stratified_sample"]
