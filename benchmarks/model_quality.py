"""Model quality: every model on both label sets of FER2013 PublicTest, with speed and cost.

Method: FER2013 7 classes = `val.npz` labels; FER+ 8 classes = the majority of the 10 FER+
votes (`val_ferplus.npz`, the FER+ paper's rule: single votes ignored, faces whose majority is
unknown / not-a-face dropped; 3,199 of 3,589 faces). A 7-class model has no contempt output, so
on FER+ the contempt faces are not scored (the row says how many); an 8-class model on the
7-class labels has contempt left out before the argmax. One pass, no TTA. ECE over 15 bins.
Speed: ONNX Runtime, 2 intra-op threads, median of 200 (batch 1) / 30 (batch 64) timed runs
after 10 warm-up runs, all models timed side by side in one process. Parameters, MFLOPs and
training time come from each model's card (wall-clock hours of training summed over every run of its lineage).
"Own split": the 10% of Training that `emolens train` holds out (stratified, seed 0) and that the
new runs select on, scored on its FER2013 labels and on its FER+ majority labels; models trained on
all of Training have seen it, so it flatters them.

    python benchmarks/model_quality.py [--model fast --model "new fast=path.onnx" ...] [--out NAME]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

import numpy as np

from speed import median_ms, write_result  # benchmarks/ is on the path when a script here runs

ROOT = Path(__file__).resolve().parents[1]
FER = ROOT.parent / "shared" / "datasets" / "fer2013"


def training_hours(card: dict) -> float | None:
    runs = [*(r for r in card.get("lineage") or []), card.get("training") or {}]
    secs = [r.get("train_seconds") for r in runs if r.get("train_seconds")]
    return sum(secs) / 3600 if secs else None


def own_split_votes(rows: np.ndarray, folder: Path) -> tuple[Path, Path]:
    """The own split's faces and their FER+ votes as two .npz files (``evaluate_ferplus`` reads files)."""
    pairs = ((FER / "train.npz", folder / "own.npz"), (FER / "train_ferplus.npz", folder / "own_ferplus.npz"))
    for src, dst in pairs:
        with np.load(src) as z:
            n = len(z["names"])
            np.savez(dst, **{k: (z[k][rows] if z[k].shape[:1] == (n,) else z[k]) for k in z.files})
    return pairs[0][1], pairs[1][1]


def measure(name: str, images, labels, classes, own, own_votes: tuple[Path, Path]) -> dict:
    """One model's figures: PublicTest on both label sets, the own split on both, speed at batch 1 and 64."""
    from emolens.evaluate import evaluate_arrays
    from emolens.evaluate.ferplus import evaluate_ferplus
    from emolens.workspace import Workspace

    m = Workspace.default().models.load(name, 2)
    own_acc = evaluate_arrays(name, own.images, own.labels, own.classes)["accuracy"]
    return {
        "model": m,
        "name": name,
        "own": (own_acc, evaluate_ferplus(name, *own_votes)["accuracy"]),
        "fer7": evaluate_arrays(name, images, labels, classes),
        "ferp": evaluate_ferplus(name, FER / "val.npz", FER / "val_ferplus.npz"),
        "b1": median_ms(lambda: m.predict(images[:1], batch_size=1), 200, warmup=10),
        "b64": median_ms(lambda: m.predict(images[:64], batch_size=64), 30, warmup=10),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", help="a model name or LABEL=PATH (repeatable)")
    ap.add_argument("--out", default="model_quality", help="results file name under benchmarks/results/")
    args = ap.parse_args()

    from emolens.data import load_npz_dataset, split

    with np.load(FER / "val.npz") as z:
        images, labels, classes = z["images"], z["labels"], [str(c) for c in z["classes"]]
    # the split `emolens train` holds out without --val (10%, stratified, seed 0); the shipped models
    # before this split existed were trained on all of Training, so it flatters them
    full = load_npz_dataset(FER / "train.npz")
    full.paths = [Path(str(i)) for i in range(len(full))]  # row numbers ride along through the split
    own = split(full, val=0.1, seed=0)["val"]
    own_rows = np.array([int(str(p)) for p in own.paths])
    models = [m.split("=", 1) if "=" in m else (m, m) for m in (args.model or ["fast", "fast-int8", "accurate"])]
    rows = {}
    with tempfile.TemporaryDirectory(prefix="emolens-mq-") as tmp:
        own_votes = own_split_votes(own_rows, Path(tmp))
        for label, name in models:
            print(label, flush=True)
            rows[label] = measure(name, images, labels, classes, own, own_votes)

    lines = [
        f"## Model quality on FER2013 PublicTest (n = {len(labels)}): two label sets, speed, cost",
        "",
        "| model | labels | own split acc: FER2013 / FER+ | FER2013 7-class acc | macro-F1 | ECE | "
        "FER+ majority acc | macro-F1 | "
        "ECE | ms/face batch 1 | faces/s batch 64 | params | MFLOPs | training hours (wall, from the cards) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, r in rows.items():
        card, f7, fp = r["model"].card, r["fer7"], r["ferp"]
        hours = training_hours(card)
        lines.append(
            f"| `{label}` | {len(r['model'].labels)} | {r['own'][0]:.2%} / {r['own'][1]:.2%} | "
            f"{f7['accuracy']:.2%} | {f7['macro_f1']:.3f} | {f7['ece']:.3f} | "
            f"{fp['accuracy']:.2%} (n={fp['n']}) | {fp['macro_f1']:.3f} | {fp['ece']:.3f} | {r['b1']:.3f} | "
            f"{64000 / r['b64']:,.0f} | {card.get('params', 0):,} | {card.get('mflops', '?')} | "
            f"{'?' if hours is None else f'{hours:.1f}'} |"
        )
    for key, title in (("fer7", "FER2013 labels"), ("ferp", "FER+ majority labels")):
        all_classes = list(dict.fromkeys(c for r in rows.values() for c in r[key]["per_class_recall"]))
        lines += ["", f"Per-class recall, {title}:", "", "| model | " + " | ".join(all_classes) + " |"]
        lines.append("|---|" + "---|" * len(all_classes))
        for label, r in rows.items():
            rec = r[key]["per_class_recall"]
            lines.append(
                f"| `{label}` | " + " | ".join(f"{rec[c]:.3f}" if c in rec else "—" for c in all_classes) + " |"
            )
    unscored = {label: r["ferp"]["n_unscorable"] for label, r in rows.items() if r["ferp"]["n_unscorable"]}
    lines += [
        "",
        "Models: " + "; ".join(f"`{label}` = {name}" for label, name in models) + ".",
        (
            "FER+ faces whose majority is contempt, not scored for 7-class models: "
            + ", ".join(f"`{k}` {v}" for k, v in unscored.items())
            + "."
            if unscored
            else ""
        ),
        "",
        f"Method: `benchmarks/model_quality.py` (see its docstring); ONNX Runtime, 2 threads, on {platform.machine()}, "
        f"{os.cpu_count()} logical cores, load average at end {os.getloadavg()[0]:.1f} (timings on a shared machine "
        "are comparable only within this table).",
        "",
    ]
    out = ROOT / "benchmarks" / "results" / f"{args.out}.md"
    print(write_result(out, lines))


if __name__ == "__main__":
    main()
