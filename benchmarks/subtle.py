"""Subtle expressions and clear ones: every model on the faces where the two label sets part ways.

Method (printed with the results):
- Two sets of faces, each scored once per model, one pass, no TTA: the own split (the 10% of FER2013
  Training that `emolens train` holds out, stratified, seed 0; 2,871 faces) and FER2013 PublicTest
  (`val.npz`, 3,589 faces). Models trained on all of Training (run (1) of `fast`, ...) have seen the own
  split, so its figures flatter them; PublicTest is the record.
- FER+ majority: the FER+ paper's rule on the 10 votes (single votes ignored, more than half of the rest,
  not unknown / not-a-face); faces FER+ has no row for or calls not a face are left out of every FER+ figure.
- **Subtle**: faces whose FER2013 label is an emotion (not neutral) while the FER+ majority says neutral.
  Scored on the FER2013 label ("emotion seen"), with the share read as neutral, and the recall of angry and
  fear among them (the posed anger and fear that crowd annotators call neutral).
- **Clear**: faces where at least 8 of the 10 FER+ annotators chose the same emotion; scored on that
  emotion. A 7-class model cannot answer contempt: such faces are not scored for it (the count is shown).
- Angry and fear recall on all faces, FER2013 labels. FER2013 and FER+ accuracy on all faces for context.
- An 8-class model is read on the FER2013 labels with contempt dropped before the argmax (its 7-class
  answer), and on FER+ with all 8.

    python benchmarks/subtle.py [--model fast --model "candidate=path.onnx" ...] [--out subtle]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from speed import write_result  # benchmarks/ is on the path when a script here runs

ROOT = Path(__file__).resolve().parents[1]
FER = Path(os.environ.get("FER2013_DIR", ROOT.parent / "shared" / "datasets" / "fer2013"))  # or a worktree's
SHIPPED = ["fast", "accurate", "robust", "adaptive", "fast-int8"]


def own_split_rows(train_npz: Path) -> np.ndarray:
    """Row numbers of the faces `emolens train` holds out of ``train_npz`` (10%, stratified, seed 0)."""
    from emolens.data import load_npz_dataset, split

    full = load_npz_dataset(train_npz)
    full.paths = [Path(str(i)) for i in range(len(full))]  # row numbers ride along through the split
    return np.array([int(str(p)) for p in split(full, val=0.1, seed=0)["val"].paths])


def face_set(images_npz: Path, rows: np.ndarray | None = None) -> dict:
    """Images, FER2013 labels (FER7 order) and FER+ majority / agreement for one set of faces."""
    from emolens.data.ferplus import DROPPED_STATUS, VOTE_COLUMNS, _column_of, majority
    from emolens.data.schemas import FER7, FERPLUS8

    with np.load(images_npz) as z:
        images, labels, classes = z["images"], z["labels"], [str(c) for c in z["classes"]]
    with np.load(images_npz.with_name(images_npz.stem + "_ferplus.npz")) as z:
        votes, status = z["votes"], z["status"]
    if rows is not None:
        images, labels, votes, status = images[rows], labels[rows], votes[rows], status[rows]
    y13 = np.array([FER7.index(classes[i]) for i in labels])
    top, ok = majority(votes)
    ok &= ~np.isin(status, DROPPED_STATUS)
    to8 = {VOTE_COLUMNS.index(_column_of(c)): i for i, c in enumerate(FERPLUS8)}
    yp = np.array([to8.get(int(t), -1) for t in top])
    emo = votes[:, :8]
    clear = ok & (emo.max(1) >= 8)
    neutral = FERPLUS8.index("neutral")
    subtle = ok & (yp == neutral) & (y13 != FER7.index("neutral"))
    return {"images": images, "y13": y13, "yp": np.where(ok, yp, -1), "ok": ok, "clear": clear, "subtle": subtle}


def figures(probs8: np.ndarray, labels: list[str], s: dict) -> dict:
    """The table's figures from a model's probabilities (columns in the model's ``labels`` order)."""
    from emolens.data.schemas import FER7, FERPLUS8

    p7 = probs8[:, [labels.index(c) for c in FER7]]
    pred7 = p7.argmax(1)
    has = [c for c in FERPLUS8 if c in labels]
    predp = np.array([FERPLUS8.index(has[i]) for i in probs8[:, [labels.index(c) for c in has]].argmax(1)])
    scorable = s["ok"] & np.isin(s["yp"], [FERPLUS8.index(c) for c in has])
    clear = s["clear"] & scorable
    sub = s["subtle"]
    a, f, n = FER7.index("angry"), FER7.index("fear"), FER7.index("neutral")

    def recall(mask: np.ndarray, cls: int) -> tuple[float, int]:
        m = mask & (s["y13"] == cls)
        return (float((pred7[m] == cls).mean()) if m.any() else float("nan")), int(m.sum())

    return {
        "fer2013": float((pred7 == s["y13"]).mean()),
        "ferplus": float((predp[scorable] == s["yp"][scorable]).mean()),
        "n_ferplus": int(scorable.sum()),
        "subtle": float((pred7[sub] == s["y13"][sub]).mean()),
        "subtle_neutral": float((pred7[sub] == n).mean()),
        "n_subtle": int(sub.sum()),
        "subtle_angry": recall(sub, a),
        "subtle_fear": recall(sub, f),
        "clear": float((predp[clear] == s["yp"][clear]).mean()),
        "n_clear": int(clear.sum()),
        "n_clear_unscored": int((s["clear"] & ~scorable).sum()),
        "angry": recall(np.ones(len(pred7), bool), a),
        "fear": recall(np.ones(len(pred7), bool), f),
    }


def model_probs(name: str, images: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """A model's probabilities on crops as it ships (its metadata's post-processing applied)."""
    from emolens.evaluate.core import fit_crops
    from emolens.workspace import Workspace

    m = Workspace.default().models.load(name, 1)
    spec = m.meta.input
    return m.predict(fit_crops(images, spec.size, spec.channels), batch_size=256), list(m.labels)


def table(title: str, rows: dict[str, dict]) -> list[str]:
    first = next(iter(rows.values()))
    out = [
        f"### {title}",
        "",
        f"| model | FER+ acc (n={first['n_ferplus']}) | FER2013 acc | subtle: emotion seen (n={first['n_subtle']}) "
        "| subtle read neutral | subtle angry recall | subtle fear recall | "
        f"clear ≥8/10: FER+ acc (n={first['n_clear']}) | angry recall | fear recall |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, r in rows.items():
        unscored = f" ({r['n_clear_unscored']} contempt unscored)" if r["n_clear_unscored"] else ""
        n_clear = f" (n={r['n_clear']})" if r["n_clear"] != first["n_clear"] else ""
        n_plus = f" (n={r['n_ferplus']})" if r["n_ferplus"] != first["n_ferplus"] else ""
        out.append(
            f"| `{label}` | {r['ferplus']:.2%}{n_plus} | {r['fer2013']:.2%} | {r['subtle']:.2%} | "
            f"{r['subtle_neutral']:.2%} | {r['subtle_angry'][0]:.3f} (n={r['subtle_angry'][1]}) | "
            f"{r['subtle_fear'][0]:.3f} (n={r['subtle_fear'][1]}) | {r['clear']:.2%}{n_clear}{unscored} | "
            f"{r['angry'][0]:.3f} | {r['fear'][0]:.3f} |"
        )
    return out + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", help="a model name or LABEL=PATH (repeatable)")
    ap.add_argument("--out", default="subtle", help="results file name under benchmarks/results/")
    args = ap.parse_args()
    print(__doc__.split("\n\n    python")[0], flush=True)
    sets = {
        "own split (held-out 10% of Training, seed 0)": face_set(FER / "train.npz", own_split_rows(FER / "train.npz")),
        "FER2013 PublicTest": face_set(FER / "val.npz"),
    }
    models = [m.split("=", 1) if "=" in m else (m, m) for m in (args.model or SHIPPED)]
    lines = ["## Subtle and clear expressions: every model on both label sets", ""]
    for title, s in sets.items():
        rows = {}
        for label, name in models:
            probs, labels = model_probs(name, s["images"])
            rows[label] = figures(probs, labels, s)
            print(title, label, {k: v for k, v in rows[label].items()}, flush=True)
        lines += table(title, rows)
    lines += [
        "Models: " + "; ".join(f"`{label}` = {name}" for label, name in models) + ".",
        "",
        "Method: `benchmarks/subtle.py` (its docstring, printed when it runs): subtle = FER2013 label an emotion, "
        "FER+ majority neutral, scored on the FER2013 label; clear = at least 8 of 10 FER+ annotators agree, scored "
        "on FER+; one pass, no TTA, each model's own metadata (offsets, temperature) applied.",
        "",
    ]
    print(write_result(ROOT / "benchmarks" / "results" / f"{args.out}.md", lines))


if __name__ == "__main__":
    main()
