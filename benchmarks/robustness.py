"""Robustness of emotion models to camera degradations, on FER2013 PublicTest.

Method: every member of the seeded family in `emolens.image.degrade.FAMILY` (down-and-up scaling to
32/24/16 px, Gaussian blur sigma 1/1.5/2 px, JPEG quality 30/15/8, Gaussian noise sigma 6/12/20
grey levels, dark (gamma 2.2 at half / 0.3 exposure), bright (gamma 0.5), contrast 60/40/25%,
and webcam / CCTV combinations) is applied to all 3,589 PublicTest crops with seed 0, the model
runs once on each (no TTA), and the robustness score is the mean accuracy over the family. The
issue-15 goal is checked on the single degradations it names (24 and 16 px, blur 1.5, JPEG 15,
noise 12, dark, contrast 40%: each at most 8 points below clean) and on the two combinations
(at most 15 points below clean). With ``--ferplus`` the same faces are scored on their FER+
majority labels (the votes file beside ``--data``; a 7-class model does not score contempt faces),
which separates a model's fragility from FER2013's label noise.

    python benchmarks/robustness.py [--model fast --model accurate --model "new fast=runs/x.onnx"] [--out NAME]
                                    [--ferplus --out robustness_ferplus]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import numpy as np

from speed import write_result  # benchmarks/ is on the path when a script here runs

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "fer2013" / "val.npz"
WITH_FERPLUS = " with the FER+ majority labels"
GOAL_SINGLES = ("scale-24px", "scale-16px", "blur-1.5", "jpeg-15", "noise-12", "dark", "contrast-0.4")


def load_labels(path: Path, ferplus: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Crops, labels and class names: the file's own labels, or the FER+ majority (8 classes)."""
    if not ferplus:
        with np.load(path) as z:
            return z["images"], z["labels"], [str(c) for c in z["classes"]]
    from emolens.data.ferplus import load_ferplus

    data = load_ferplus(path)
    return data.images, data.labels, data.classes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", help="a model name or LABEL=PATH (repeatable); default fast, accurate")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", default="robustness", help="results file name under benchmarks/results/")
    ap.add_argument("--cache", type=Path, help="folder keeping each model's figures as JSON, reused when present")
    ap.add_argument("--ferplus", action="store_true", help="score the FER+ majority labels of the same faces")
    args = ap.parse_args()

    from emolens.evaluate.robustness import robustness
    from emolens.image.degrade import COMBINATIONS, FAMILY

    images, labels, classes = load_labels(args.data, args.ferplus)
    models = [m.split("=", 1) if "=" in m else (m, m) for m in (args.model or ["fast", "accurate"])]
    results = {}
    for label, model in models:
        cached = args.cache / f"{label.replace('/', '_')}.json" if args.cache else None
        if cached and cached.is_file():
            results[label] = json.loads(cached.read_text())
            continue
        print(f"{label}: {model}", flush=True)
        results[label] = robustness(
            model, images, labels, classes, drop_rows=args.ferplus, progress=lambda n: print(" ", n, flush=True)
        )
        if cached:
            cached.parent.mkdir(parents=True, exist_ok=True)
            cached.write_text(json.dumps(results[label]))

    names = list(results)
    where = "FER2013 PublicTest" if args.data == DATA else args.data.name
    lines = [
        f"## Robustness to camera degradations: {where}{WITH_FERPLUS if args.ferplus else ''}"
        f" (n = {next(iter(results.values()))['n']}), accuracy (macro-F1)",
        "",
        "| degradation | " + " | ".join(f"`{n}`" for n in names) + " |",
        "|---|" + "---|" * len(names),
        "| none | "
        + " | ".join(f"{r['clean']['accuracy']:.1%} ({r['clean']['macro_f1']:.3f})" for r in results.values())
        + " |",
    ]
    for i, name in enumerate(FAMILY):
        cells = []
        for r in results.values():
            row = r["degradations"][i]
            cells.append(f"{row['accuracy']:.1%} ({row['macro_f1']:.3f}), {-row['drop_points']:+.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append(
        "| **robustness score** (mean accuracy over the family) | "
        + " | ".join(f"**{r['score']:.1%}**" for r in results.values())
        + " |"
    )
    for title, keys, limit in (
        ("worst drop of the goal's single degradations (goal ≤ 8 points)", GOAL_SINGLES, 8),
        ("worst drop of webcam / CCTV (goal ≤ 15 points)", COMBINATIONS, 15),
    ):
        cells = []
        for r in results.values():
            worst = max(row["drop_points"] for row in r["degradations"] if row["degradation"] in keys)
            cells.append(f"{worst:.1f} ({'met' if worst <= limit else 'not met'})")
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Cells: accuracy (macro-F1), then the change in accuracy points from clean. Models: "
        + "; ".join(f"`{label}` = {model}" for label, model in models)
        + ".",
        "",
        f"Method: `benchmarks/robustness.py` (see its docstring); seed 0; ONNX Runtime on {platform.machine()}, "
        f"{os.cpu_count()} logical cores, load average at end {os.getloadavg()[0]:.1f}.",
        "",
    ]
    out = ROOT / "benchmarks" / "results" / f"{args.out}.md"
    print(write_result(out, lines))


if __name__ == "__main__":
    main()
