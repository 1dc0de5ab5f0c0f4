"""How should a small face be enlarged to the model's crop? Interpolation methods compared.

Method: every crop of ``--data`` is shrunk to N px (OpenCV INTER_AREA, as a camera's sensor would
average it: 16, 20 and 24 px) and enlarged back to 48 px with each interpolation the alignment
could use (bilinear, which `emolens.align` and `emolens.degrade` use today; bicubic; Lanczos;
nearest). Each model runs once per crop (no TTA); accuracy on the file's own labels and, with the
votes file beside ``--data``, on the FER+ majority labels (contempt faces not scored for 7-class
models). Choose on your own split (``--data``), not on PublicTest.

    python benchmarks/upscaling.py --data own.npz [--model fast --model robust] [--out upscaling]
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import cv2
import numpy as np

from robustness import DATA, ROOT, load_labels  # benchmarks/ is on the path when a script here runs
from speed import write_result

METHODS = {
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "Lanczos": cv2.INTER_LANCZOS4,
    "nearest": cv2.INTER_NEAREST,
}
SIZES = (16, 20, 24)


def shrink_and_enlarge(images: np.ndarray, px: int, method: int) -> np.ndarray:
    h, w = images.shape[1:3]
    return np.stack(
        [
            cv2.resize(cv2.resize(im, (px, px), interpolation=cv2.INTER_AREA), (w, h), interpolation=method)
            for im in images
        ]
    )


def accuracy(model: str, images: np.ndarray, labels: np.ndarray, classes: list[str]) -> float:
    from emolens.evaluate.core import load_members, member_probs, model_names, target_labels

    members = load_members(model_names(model))
    ref, y, keep = target_labels(members[0].labels, labels, classes, drop_rows=True)
    probs = np.mean([member_probs(m, images[keep], ref) for m in members], axis=0)
    return float((probs.argmax(1) == y).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", help="a model name or path (repeatable); default fast, robust")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", default="upscaling", help="results file name under benchmarks/results/")
    args = ap.parse_args()

    label_sets = {"own labels": load_labels(args.data, False)}
    votes = args.data.with_name(f"{args.data.stem}_ferplus.npz")
    if votes.is_file():
        label_sets["FER+ majority"] = load_labels(args.data, True)
    models = args.model or ["fast", "robust"]
    lines = [
        f"## Enlarging small faces: {args.data.name}, accuracy by interpolation (own labels / FER+ majority)",
        "",
        "| model | face seen at | " + " | ".join(METHODS) + " |",
        "|---|---|" + "---|" * len(METHODS),
    ]
    for model in models:
        for px in SIZES:
            cells = []
            for method in METHODS.values():
                accs = [
                    accuracy(model, shrink_and_enlarge(images, px, method), labels, classes)
                    for images, labels, classes in label_sets.values()
                ]
                cells.append(" / ".join(f"{a:.1%}" for a in accs))
            lines.append(f"| `{model}` | {px} px | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    lines += [
        "",
        f"Method: `benchmarks/upscaling.py` (see its docstring); label sets: {', '.join(label_sets)}; "
        f"ONNX Runtime on {platform.machine()}, {os.cpu_count()} logical cores.",
        "",
    ]
    print(write_result(ROOT / "benchmarks" / "results" / f"{args.out}.md", lines))


if __name__ == "__main__":
    main()
