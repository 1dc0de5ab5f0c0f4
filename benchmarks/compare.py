"""Every shipped model against every other on FER2013 PublicTest: is the difference real?

Method: each model (and the `fast+accurate` ensemble, and `accurate` with mirror TTA, as extra
rows) answers the 3,589 PublicTest crops once (argmax of its probabilities; ONNX Runtime, CPU).
For each pair A, B, `emolens.evaluate.compare_predictions` gives accuracy and macro-F1 with 95%
paired percentile bootstrap intervals (the same resampled faces for both; 2,000 resamples, seed 0),
the interval of the difference B - A, per-class recall differences, and McNemar's exact test on the
faces exactly one of them gets right. "Better with confidence" means the interval of the accuracy
gain lies above 0 and McNemar's p < 0.05: the promotion gate's rule.

    python benchmarks/compare.py [--data ../shared/datasets/fer2013/val.npz] [--boot 2000]

Writes benchmarks/results/compare.md.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets" / "fer2013" / "val.npz")
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "compare.md")
    args = ap.parse_args()

    from emolens.data.datasets import load_npz
    from emolens.evaluate.compare import compare_predictions, model_probs
    from emolens.evaluate.core import load_members
    from emolens.models import shipped_models

    images, labels, classes = load_npz(args.data)
    ref = load_members(["fast"])[0].labels
    y = np.array([ref.index(classes[i]) for i in labels])
    shipped = list(shipped_models())
    extra = {"fast+accurate": ("fast+accurate", False), "accurate (TTA)": ("accurate", True)}
    t0 = time.perf_counter()
    preds = {name: model_probs(name, images, ref).argmax(1) for name in shipped}
    preds.update({name: model_probs(spec, images, ref, tta).argmax(1) for name, (spec, tta) in extra.items()})
    t_pred = time.perf_counter() - t0
    # Least accurate first, so that B - A reads as the gain of the better-looking model.
    shipped.sort(key=lambda name: float(np.mean(preds[name] == y)))
    pairs = list(itertools.combinations(shipped, 2)) + [("accurate", name) for name in extra]

    rows, details = [], []
    t0 = time.perf_counter()
    for a, b in pairs:
        c = compare_predictions(y, preds[a], preds[b], ref, names=(a, b), n_boot=args.boot)
        acc, f1, m = c.accuracy, c.macro_f1, c.mcnemar

        def iv(v: dict, pct: bool = True) -> str:
            s = 100 if pct else 1
            f = ".2f" if pct else ".3f"
            return f"{s * v['value']:+{f}} [{s * v['low']:+{f}}, {s * v['high']:+{f}}]"

        winner = f"**{b}**" if c.b_better else f"**{a}**" if c.a_better else "no"
        rows.append(
            f"| {a} | {b} | {100 * acc['a']['value']:.2f} | {100 * acc['b']['value']:.2f} | {iv(acc['diff'])} | "
            f"{f1['a']['value']:.3f} | {f1['b']['value']:.3f} | {iv(f1['diff'], False)} | "
            f"{m['a_only']} / {m['b_only']} | {m['p_value']:.3g} | {winner} |"
        )
        details += [f"### {b} − {a}", "", c.to_markdown(), ""]
        print(f"{a} vs {b}: {c.verdict} (p = {m['p_value']:.3g})", flush=True)
    t_boot = time.perf_counter() - t0

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    text = "\n".join(
        [
            "# Shipped models compared on FER2013 PublicTest",
            "",
            f"`python benchmarks/compare.py --boot {args.boot}` on {args.data.name} (n = {len(y)}), "
            f"{platform.machine()} with {os.cpu_count()} cores, load average {load:.1f} at the end. "
            f"Predictions took {t_pred:.0f} s, the bootstraps {t_boot:.0f} s.",
            "",
            "Each model answers every crop once (argmax). Intervals: 95% paired percentile bootstrap, "
            f"{args.boot} resamples (seed 0); the difference is B − A, in accuracy points and macro-F1. "
            "McNemar: faces only A / only B gets right, exact two-sided binomial p. Better with confidence: "
            "the interval of the accuracy gain excludes 0 and p < 0.05.",
            "",
            "| A | B | acc. A (%) | acc. B (%) | B − A (points, 95% CI) | macro-F1 A | macro-F1 B | B − A (95% CI) "
            "| McNemar only A / only B | p | better with confidence |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            "## Per-class recall, each pair",
            "",
            *details,
        ]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
