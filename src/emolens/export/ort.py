"""ONNX Runtime's mobile format (``.ort``): the same model, metadata and all, for ONNX Runtime Mobile
in Android (Kotlin/Java), iOS (Swift/Objective-C) and Flutter apps.

The conversion is the converter that ships with onnxruntime (``python -m
onnxruntime.tools.convert_onnx_models_to_ort``), with the "Runtime" optimization style: the file
holds the graph optimized only in ways every platform supports, plus the extra optimizations
recorded for the platforms that can use them. The ``emolens.*`` metadata travels inside the file.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from emolens.core.errors import EmoLensError


def to_ort(model: str | Path, out: str | Path) -> dict:
    """Convert an EmoLens ONNX model to ``out`` (.ort), then check that the .ort file loads in ONNX
    Runtime, keeps the metadata and gives the same probabilities. Returns what was checked."""
    from emolens.classify.emotion import EmotionModel
    from emolens.core.errors import require

    require("onnx", "export")  # the converter's helpers import it
    src, out = Path(model), Path(out)
    if out.suffix != ".ort":
        raise EmoLensError(f"{out}: the ONNX Runtime mobile format needs an .ort file name")
    if out.resolve() == src.resolve():
        raise EmoLensError(f"{out}: give an output path other than the input")
    reference = EmotionModel(src)  # a model without EmoLens metadata fails here, before converting
    meta = reference.meta
    with tempfile.TemporaryDirectory(prefix="emolens-ort-") as tmp:
        work = Path(tmp) / "model.onnx"
        work.write_bytes(src.read_bytes())
        cmd = [sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", str(work)]
        cmd += ["--output_dir", str(Path(tmp) / "out"), "--optimization_style", "Runtime"]
        run = subprocess.run(cmd, capture_output=True, text=True)
        made = sorted((Path(tmp) / "out").glob("*.ort"))
        if run.returncode != 0 or len(made) != 1:
            tail = (run.stderr or run.stdout).strip().splitlines()[-3:]
            raise EmoLensError(f"the ONNX Runtime converter failed on {src}: {' / '.join(tail) or 'no output'}")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = out.with_name(f".{out.stem}.tmp.ort")  # ONNX Runtime tells the format by the suffix
        tmp_out.write_bytes(made[0].read_bytes())
    converted = EmotionModel(tmp_out)
    try:
        if converted.meta.to_props() != meta.to_props():
            raise EmoLensError(f"{out}: the converted model lost its EmoLens metadata")
        shape = (8, meta.input.size, meta.input.size) + ((meta.input.channels,) if meta.input.channels == 3 else ())
        crops = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        diff = float(np.abs(converted.predict(crops) - reference.predict(crops)).max())
        if diff > parity_tolerance(meta.card):
            raise EmoLensError(f"{out}: the converted model disagrees with {src} (max |dp| = {diff:.1e})")
    except BaseException:
        tmp_out.unlink(missing_ok=True)
        raise
    tmp_out.replace(out)  # atomic: only a checked file takes the name
    return {"path": str(out), "bytes": out.stat().st_size, "onnx_bytes": src.stat().st_size, "max_abs_diff": diff}


def parity_tolerance(card: dict) -> float:
    """How far the .ort file's probabilities may stray from the ONNX model's. A float model's must
    match; an INT8 (QDQ) one runs on different kernels: ONNX Runtime fuses its quantized pairs into
    integer convolutions for the .onnx file but keeps them apart in the mobile format's portable graph,
    so one activation rounding to the next 8-bit step moves a probability by up to about 0.01."""
    return 2e-2 if card.get("quantization") else 1e-4
