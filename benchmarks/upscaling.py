"""How should a small face be enlarged to the model's crop? Interpolation methods compared.

Method: every crop of ``--data`` is shrunk to N px (`emolens.image.degrade.downscale`: OpenCV INTER_AREA, as a
camera's sensor would average it: 16, 20 and 24 px) and enlarged back to 48 px with each interpolation the alignment
could use (bilinear; bicubic, which `emolens.image.align` and `emolens.image.degrade` use; Lanczos;
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


def accuracies(model: str, label_sets: dict, px: int, method: int) -> list[float]:
    """The model's accuracy on each label set's crops seen at ``px`` and enlarged with ``method``."""
    from emolens.evaluate.core import load_members, member_probs, model_names, target_labels
    from emolens.image.degrade import downscale

    members = load_members(model_names(model))
    out = []
    for images, labels, classes in label_sets.values():
        ref, y, keep = target_labels(members[0].labels, labels, classes, drop_rows=True)
        crops = downscale(images[keep], px, method)
        probs = np.mean([member_probs(m, crops, ref) for m in members], axis=0)
        out.append(float((probs.argmax(1) == y).mean()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", help="a model name or path (repeatable); default fast, robust")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", default="upscaling", help="results file name under benchmarks/results/")
    args = ap.parse_args()

    from emolens.evaluate.ferplus import ferplus_votes_for

    label_sets = {"own labels": load_labels(args.data, False)}
    if ferplus_votes_for(args.data):
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
            cells = [
                " / ".join(f"{a:.1%}" for a in accuracies(model, label_sets, px, method)) for method in METHODS.values()
            ]
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
