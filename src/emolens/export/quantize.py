"""Static INT8 quantization of an EmoLens ONNX model, keeping its self-describing metadata.

The calibration data reader feeds crops through the model's own preprocessing
(``EmotionModel.preprocess``), so the activation ranges are those seen at inference time.
The result is QDQ-format ONNX (QuantizeLinear/DequantizeLinear around INT8 weights and
activations) that loads anywhere ONNX Runtime does, with the FP32 model's ``ModelMeta`` and a
card extended by ``"quantization": {...}``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from emolens.classify.emotion import EmotionModel
from emolens.classify.modelfile import ModelMeta, annotate
from emolens.core.errors import EmoLensError, require
from emolens.core.fileio import refuse_package


def stratified_sample(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of about ``n`` items with the class proportions of ``labels`` (every class at least once)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    idx = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        k = max(1, round(n * len(members) / len(labels)))
        idx.append(rng.choice(members, size=min(k, len(members)), replace=False))
    return np.sort(np.concatenate(idx))


def latency_ms_per_face(path: str | Path, crops: np.ndarray, batch: int, threads: int = 2, repeats: int = 20) -> float:
    """Median time per face of ``EmotionModel.predict`` (preprocessing included) after 3 warm-up runs."""
    model = EmotionModel(path, threads=threads)
    x = np.resize(crops, (batch, *crops.shape[1:]))
    for _ in range(3):
        model.predict(x, batch_size=batch)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        model.predict(x, batch_size=batch)
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e3 / batch


def quantize_int8(
    onnx_in: str | Path,
    onnx_out: str | Path,
    calibration_crops: np.ndarray,
    per_channel: bool = True,
    reduce_range: bool = True,
    batch_size: int = 50,
) -> dict:
    """Write a static INT8 (QDQ) copy of ``onnx_in`` to ``onnx_out``; returns the card's quantization entry.

    ``calibration_crops`` are uint8 aligned crops as the model's ``predict`` takes them (a few
    hundred, stratified over the classes, is plenty for MinMax calibration).

    ``reduce_range`` quantizes weights to 7 bits: x86 CPUs without VNNI multiply uint8 x int8
    pairs with a saturating 16-bit add (VPMADDUBSW), which with full 8-bit weights cost the
    shipped model 4.4 points of FER2013 accuracy; with 7-bit weights the loss is 0.2 points.
    """
    require("onnx", "export")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    onnx_in, onnx_out = Path(onnx_in), refuse_package(onnx_out)
    fp32 = EmotionModel(onnx_in)
    meta = fp32.meta
    if len(calibration_crops) == 0:
        raise EmoLensError("quantization needs at least one calibration crop")
    batches = [
        fp32.preprocess(calibration_crops[i : i + batch_size]) for i in range(0, len(calibration_crops), batch_size)
    ]
    input_name = fp32._session.get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {input_name: x}

        def rewind(self) -> None:
            self._it = iter(batches)

    onnx_out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prepped = Path(tmp) / "prepped.onnx"
        raw = Path(tmp) / "int8.onnx"
        quant_pre_process(str(onnx_in), str(prepped), skip_symbolic_shape=True)
        quantize_static(
            str(prepped),
            str(raw),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            reduce_range=reduce_range,
            calibrate_method=CalibrationMethod.MinMax,
        )
        import onnxruntime

        info = {
            "method": "static, ONNX Runtime quantize_static",
            "format": "QDQ",
            "weights": ("int7 (reduce_range)" if reduce_range else "int8")
            + " symmetric"
            + (", per channel" if per_channel else ", per tensor"),
            "activations": "uint8 asymmetric",
            "calibration": f"MinMax on {len(calibration_crops)} crops",
            "source": onnx_in.name,
            "onnxruntime": onnxruntime.__version__,
            "date": time.strftime("%Y-%m-%d"),
        }
        card = {**meta.card, "name": onnx_out.stem, "quantization": info}
        card.pop("metrics", None)  # FP32 metrics do not describe this model; measure it (`emolens quantize --val`)
        annotate(raw, ModelMeta(labels=meta.labels, input=meta.input, output=meta.output, card=card), onnx_out)
    return info
