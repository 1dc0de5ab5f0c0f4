"""Deployment formats of the shipped `fast` model compared: PyTorch FP32, ONNX FP32, ONNX INT8.

Method: accuracy and macro-F1 on the full FER2013 PublicTest split (val.npz, 3,589 crops), the
same preprocessing (``EmotionModel.preprocess``) for every format. Latency is the median of
--repeats timed calls in one process, the formats taking turns in 5 blocks of 5 untimed warm-up
and --repeats/5 timed calls (so load from other work hits all alike), 2 intra-op threads
(``torch.set_num_threads`` / ONNX Runtime ``intra_op_num_threads``), preprocessing included,
per face = call time / batch size, at batch 1 and batch 64. The INT8 model is made on the fly
(static QDQ, 500 stratified training crops) unless --int8 gives one. Size is the file on disk
(the .pt is a weights-only checkpoint with its config).

    python benchmarks/formats.py [--int8 PATH] [--repeats 50] [--out benchmarks/results/formats.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score

from emolens.classify.emotion import EmotionModel
from emolens.data.datasets import load_npz
from emolens.export.quantize import quantize_int8, stratified_sample
from emolens.train.export import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "src" / "emolens" / "assets"
DATA = ROOT.parent / "shared" / "datasets" / "fer2013"
THREADS = 2


def interleaved_ms_per_face(fns: list, x: np.ndarray, repeats: int, rounds: int = 5) -> list[float]:
    """Median ms per face of each fn(x), measured in ``rounds`` blocks per fn taking turns (load from
    other work hits all alike; whole blocks, as ONNX Runtime's spinning threads would slow a PyTorch
    call that ran right after one of its calls)."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for fn, ts in zip(fns, times, strict=True):
            for _ in range(5):
                fn(x)
            for _ in range(max(1, repeats // rounds)):
                t = time.perf_counter()
                fn(x)
                ts.append((time.perf_counter() - t) * 1e3)
    return [statistics.median(ts) / len(x) for ts in times]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--int8", type=Path, help="An INT8 model to measure instead of making one.")
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "formats.md")
    args = ap.parse_args()

    torch.set_num_threads(THREADS)
    images, labels, classes = load_npz(DATA / "val.npz")
    fp32 = EmotionModel(ASSETS / "fast.onnx", threads=THREADS)
    y_true = np.array([fp32.labels.index(classes[i]) for i in labels])

    net, _ = load_checkpoint(ASSETS / "fast.pt")

    def torch_predict(crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for i in range(0, len(crops), batch_size):
                out.append(torch.softmax(net(torch.from_numpy(fp32.preprocess(crops[i : i + batch_size]))), 1).numpy())
        return np.concatenate(out)

    with tempfile.TemporaryDirectory() as tmp:
        int8_path = args.int8
        made = ""
        if int8_path is None:
            train_images, train_labels, _ = load_npz(DATA / "train.npz")
            int8_path = Path(tmp) / "fast-int8.onnx"
            t = time.perf_counter()
            quantize_int8(ASSETS / "fast.onnx", int8_path, train_images[stratified_sample(train_labels, 500)])
            made = f" (made in {time.perf_counter() - t:.1f} s from 500 stratified training crops)"
        int8 = EmotionModel(int8_path, threads=THREADS)
        formats = [
            ("PyTorch FP32", "fast.pt", ASSETS / "fast.pt", torch_predict),
            ("ONNX FP32", "fast.onnx", ASSETS / "fast.onnx", fp32.predict),
            ("ONNX INT8 (QDQ)", int8_path.name, int8_path, int8.predict),
        ]
        calls = [lambda x, p=predict: p(x, batch_size=len(x)) for *_, predict in formats]
        lat = [interleaved_ms_per_face(calls, images[:b], args.repeats) for b in (1, 64)]
        rows = []
        for k, (name, fname, path, predict) in enumerate(formats):
            y_pred = predict(images, batch_size=256).argmax(1)
            acc = accuracy_score(y_true, y_pred)
            f1 = f1_score(y_true, y_pred, average="macro")
            b1, b64 = lat[0][k], lat[1][k]
            rows.append(
                f"| {name} | `{fname}` | {acc:.4f} | {f1:.4f} | {b1:.3f} (x{lat[0][0] / b1:.2f}) "
                f"| {b64:.3f} (x{lat[1][0] / b64:.2f}) | {path.stat().st_size / 1e6:.2f} |"
            )
            print(rows[-1], flush=True)

    import onnxruntime

    text = "\n".join(
        [
            "# Deployment formats of `fast`",
            "",
            f"FER2013 PublicTest (val.npz, n = {len(labels)}). Latency: ms per face, median of {args.repeats} "
            "calls, formats taking turns in 5 blocks of 5 warm-up + repeats/5 timed calls, "
            f"{THREADS} threads, preprocessing included; (xN) = speed relative to PyTorch FP32. "
            f"INT8: static quantization, ONNX Runtime QDQ, 7-bit per-channel weights, uint8 activations, "
            f"MinMax calibration{made or f' ({args.int8})'}.",
            "",
            "| format | file | accuracy | macro-F1 | batch 1 ms/face | batch 64 ms/face | size MB |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"Machine: {platform.machine()}, {os.cpu_count()} CPUs visible (shared with other work), "
            f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {time.strftime('%Y-%m-%d')}.",
            "",
        ]
    )
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
