"""Explanation methods: time per face and faithfulness (deletion ↓ / insertion ↑ AUC).

Method: the first --n crops of the FER2013 PublicTest split (``../shared/datasets/fer2013/val.npz``),
the shipped ``fast`` model's PyTorch weights (``fast.pt``), target = the predicted class. Per
method (every method ``emolens explain`` offers, LIME and SHAP included when their extras are
installed): the first call (imports and set-up included: what one face costs the first time), then
the median of one explanation of one 48x48 crop, as wall time and as the process's CPU time (torch
and ONNX Runtime limited to --threads threads; CPU time is what a busy machine does not inflate),
and the mean deletion and insertion AUC (16 steps; deletion to mid-grey, insertion into a
Gaussian-blurred crop, sigma 5 px). ``random`` is a uniform random pixel map, averaged over 3 seeds
per face. The ``-onnx`` methods run on ``fast.onnx`` with ONNX Runtime.

    python benchmarks/explain.py [--n 40] [--threads 1]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "fer2013" / "val.npz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "explain.md")
    args = ap.parse_args()

    import torch

    from emolens.classify import EmotionModel
    from emolens.explain.blackbox import ONNX_METHODS
    from emolens.explain.faithfulness import random_map, scores, torch_predictor
    from emolens.explain.methods import METHODS, _captum, occlusion_onnx, to_tensor
    from emolens.explain.overlay import load_torch_model
    from emolens.models import ASSETS

    torch.set_num_threads(args.threads)
    crops = np.load(DATA)["images"][: args.n]
    model, state = load_torch_model(str(ASSETS / "fast.pt"))
    spec = state["input"]
    predict = torch_predictor(model, spec)
    onnx = EmotionModel(ASSETS / "fast.onnx", threads=args.threads)
    load = os.getloadavg()
    targets = predict(crops).argmax(1)

    installed = {m: importlib.util.find_spec(m) is not None for m in ("lime", "shap")}
    runners = {
        name: (lambda c, t, fn=fn: fn(model, to_tensor(c, spec), int(t)))
        for name, fn in METHODS.items()
        if installed.get(name, True)
    }
    runners["occlusion-onnx"] = lambda c, t: occlusion_onnx(onnx, c, int(t))
    for name, fn in ONNX_METHODS.items():
        if installed[name]:
            runners[f"{name}-onnx"] = lambda c, t, fn=fn: fn(onnx, c, int(t))
    rows = []
    t_start = time.perf_counter()
    for name, run in runners.items():
        t0 = time.perf_counter()
        run(crops[0], targets[0])  # the first call: imports and set-up included
        first = (time.perf_counter() - t0) * 1e3
        times, cpu, dele, ins = [], [], [], []
        for crop, target in zip(crops, targets, strict=True):
            t0, c0 = time.perf_counter(), time.process_time()
            heat = run(crop, target)
            times.append((time.perf_counter() - t0) * 1e3)
            cpu.append((time.process_time() - c0) * 1e3)
            s = scores(predict, crop, heat, target)
            dele.append(s["deletion"])
            ins.append(s["insertion"])
        rows.append((name, first, statistics.median(times), statistics.median(cpu), np.mean(dele), np.mean(ins)))
        print(f"{name}: done ({time.perf_counter() - t_start:.0f} s)", flush=True)
    dele, ins = [], []
    for crop, target in zip(crops, targets, strict=True):
        for seed in range(args.seeds):
            s = scores(predict, crop, random_map(crop.shape, seed), target)
            dele.append(s["deletion"])
            ins.append(s["insertion"])
    nan = float("nan")
    rows.append((f"random ({args.seeds} seeds)", nan, nan, nan, np.mean(dele), np.mean(ins)))

    lines = [
        "# Explanation methods: speed and faithfulness",
        "",
        f"Model `fast` (vgg-tiny, `fast.pt`), {len(crops)} FER2013 PublicTest crops (48x48), target = predicted "
        f"class. Time: the first call (imports and set-up included), then the median ms per face of one explanation, "
        f"wall and CPU time of the process; torch {torch.__version__} and ONNX Runtime with {args.threads} thread(s), "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
        f"{load[0]:.1f} at the start (wall times grow with it; CPU times much less), "
        f"captum {'used' if _captum() else 'not installed (own code)'}. "
        "Deletion: AUC of P(target) as pixels turn mid-grey, most important first (lower is better). Insertion: AUC "
        "as pixels return into a blurred crop (higher is better). 16 steps, each curve one batch. "
        "Reproduce: `python benchmarks/explain.py`.",
        "",
        "| method | first call, ms | ms / face (wall) | ms / face (CPU) | deletion AUC ↓ | insertion AUC ↑ |",
        "|---|---:|---:|---:|---:|---:|",
    ]

    def ms(v: float) -> str:
        return "–" if np.isnan(v) else f"{v:.1f}"

    for name, first, wall, cpu, d, i in rows:
        lines.append(f"| {name} | {ms(first)} | {ms(wall)} | {ms(cpu)} | {d:.3f} | {i:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
