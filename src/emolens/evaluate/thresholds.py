"""Per-class confidence thresholds: below the threshold of its predicted class a face is "uncertain".

Chosen on labelled data either for a target precision (per predicted class, the smallest
threshold whose answers reach it) or for a target coverage (each predicted class keeps that
share of its most confident answers).
"""

from __future__ import annotations

import math

import numpy as np

from emolens.classify.modelfile import UNCERTAIN
from emolens.core.errors import EmoLensError


def choose_thresholds(
    probs: np.ndarray,
    y_true: np.ndarray,
    labels: list[str],
    target_precision: float | None = None,
    target_coverage: float | None = None,
    min_count: int = 10,
) -> tuple[dict[str, float], list[str]]:
    """``({label: threshold}, unreachable labels)``.

    Target precision: for each predicted class, rank its answers by confidence and take the largest
    set of the most confident (at least ``min_count`` of them) whose precision reaches the target; the
    threshold is the lowest confidence in that set (0 when all answers pass). A class that never
    reaches it (or is never predicted) gets 1.0, so it is answered "uncertain", and is listed as
    unreachable. Target coverage: each predicted class keeps the ``target_coverage`` share of its
    most confident answers.
    """
    if (target_precision is None) == (target_coverage is None):
        raise EmoLensError("give exactly one of a target precision or a target coverage")
    target = target_precision if target_precision is not None else target_coverage
    if not 0.0 < target <= 1.0:
        raise EmoLensError(f"a target precision or coverage is in (0, 1], not {target}")
    pred, conf = probs.argmax(1), probs.max(1).astype(float)
    thresholds, unreachable = {}, []
    for c, label in enumerate(labels):
        mine = pred == c
        order = np.argsort(-conf[mine], kind="stable")
        ranked, hits = conf[mine][order], (y_true[mine] == c)[order]
        n = len(ranked)
        # a threshold answers every face at or above it: only cut where the confidence drops (ties stay together)
        cuts = np.flatnonzero(np.r_[ranked[1:] < ranked[:-1], True]) + 1 if n else np.zeros(0, int)
        if target_coverage is not None:
            if n == 0:
                thresholds[label] = 0.0
                continue
            k = cuts[np.searchsorted(cuts, math.ceil(target_coverage * n - 1e-9))]
            thresholds[label] = 0.0 if k == n else float(ranked[k - 1])
            continue
        precision = np.cumsum(hits)[cuts - 1] / cuts if n else np.zeros(0)
        ok = (precision >= target_precision - 1e-12) & (cuts >= min(min_count, n))
        if n == 0 or not ok.any():
            thresholds[label] = 1.0
            unreachable.append(label)
            continue
        k = cuts[np.flatnonzero(ok)[-1]]
        thresholds[label] = 0.0 if k == n else float(ranked[k - 1])
    return thresholds, unreachable


def apply_thresholds(probs: np.ndarray, labels: list[str], thresholds: dict[str, float]) -> np.ndarray:
    """The predicted class index per row, or -1 ("uncertain") below that class's threshold."""
    pred = probs.argmax(1)
    limits = np.array([thresholds.get(label, 0.0) for label in labels])
    return np.where(probs.max(1) < limits[pred], -1, pred)


def measure_thresholds(probs: np.ndarray, y_true: np.ndarray, labels: list[str], thresholds: dict[str, float]) -> dict:
    """Coverage (share answered), accuracy on the answered faces and, per predicted class, the
    threshold, the answers kept and their precision."""
    pred = apply_thresholds(probs, labels, thresholds)
    answered = pred >= 0
    per_class = {}
    for c, label in enumerate(labels):
        mine = pred == c
        per_class[label] = {
            "threshold": thresholds.get(label, 0.0),
            "predicted": int((probs.argmax(1) == c).sum()),
            "answered": int(mine.sum()),
            "precision": float((y_true[mine] == c).mean()) if mine.any() else None,
        }
    n = len(y_true)
    return {
        "n": n,
        "answered": int(answered.sum()),
        UNCERTAIN: int(n - answered.sum()),
        "coverage": float(answered.mean()) if n else 0.0,
        "accuracy": float((pred[answered] == y_true[answered]).mean()) if answered.any() else None,
        "per_class": per_class,
    }


def threshold_report(
    probs: np.ndarray,
    y_true: np.ndarray,
    labels: list[str],
    target_precision: float | None = None,
    target_coverage: float | None = None,
    min_count: int = 10,
    seed: int = 0,
) -> dict:
    """Thresholds chosen on all the data and measured on it, plus a cross-fitted estimate: chosen on
    one random half and measured on the other (both ways, averaged), since the in-sample figures flatter."""
    kw = {"target_precision": target_precision, "target_coverage": target_coverage, "min_count": min_count}
    thresholds, unreachable = choose_thresholds(probs, y_true, labels, **kw)
    report = {
        "rule": "precision" if target_precision is not None else "coverage",
        "target": target_precision if target_precision is not None else target_coverage,
        "min_count": min_count,
        "thresholds": thresholds,
        "unreachable": unreachable,
        **measure_thresholds(probs, y_true, labels, thresholds),
    }
    halves = np.array_split(np.random.default_rng(seed).permutation(len(y_true)), 2)
    if min(len(h) for h in halves) > 0:
        folds = []
        for a, b in (halves, halves[::-1]):
            t, _ = choose_thresholds(probs[a], y_true[a], labels, **kw)
            folds.append(measure_thresholds(probs[b], y_true[b], labels, t))
        accs = [f["accuracy"] for f in folds if f["accuracy"] is not None]
        report["cross_fit"] = {
            "coverage": float(np.mean([f["coverage"] for f in folds])),
            "accuracy": float(np.mean(accs)) if accs else None,
        }
    return report
