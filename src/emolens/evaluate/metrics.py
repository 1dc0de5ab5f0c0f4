"""Classification metrics and accuracy against coverage, from labels and probabilities."""

from __future__ import annotations

import numpy as np

COVERAGE_LEVELS = (1.0, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5)
CONFIDENCE_LEVELS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, macro-F1 and per-class precision, recall, F1 and support, in ``labels`` order.

    Per-class figures and the macro averages cover the classes present in ``y_true`` (a class the
    data lack has no recall to speak of); a class never predicted has precision 0. The confusion
    matrix covers every label.
    """
    from emolens.evaluate.stats import class_scores

    scores = class_scores(np.asarray(y_true), np.asarray(y_pred), len(labels))
    cm, support = scores["confusion"], scores["support"]
    precision, recall, f1 = scores["precision"], scores["recall"], scores["f1"]
    tp = np.diag(cm)
    present = [i for i in range(len(labels)) if support[i] > 0]
    n = int(cm.sum())
    return {
        "n": n,
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "macro_f1": float(f1[present].mean()) if present else 0.0,
        "balanced_accuracy": float(recall[present].mean()) if present else 0.0,
        "per_class_precision": {labels[i]: float(precision[i]) for i in present},
        "per_class_recall": {labels[i]: float(recall[i]) for i in present},
        "per_class_f1": {labels[i]: float(f1[i]) for i in present},
        "support": {labels[i]: int(support[i]) for i in present},
        "labels": list(labels),
        "confusion": cm.tolist(),
    }


def _ranked(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-confidence, kind="stable")
    return confidence[order], correct[order].astype(float)


def accuracy_at_coverage(confidence: np.ndarray, correct: np.ndarray, coverage: float) -> float:
    """Accuracy on the ``coverage`` share of faces the model is most confident about (it abstains on the rest)."""
    conf, hit = _ranked(np.asarray(confidence), np.asarray(correct))
    k = min(len(hit), max(1, int(round(coverage * len(hit)))))
    return float(hit[:k].mean())


def selective(confidence: np.ndarray, correct: np.ndarray, points: int = 101) -> dict:
    """Accuracy against coverage when the model may abstain below a confidence threshold.

    ``by_coverage``: answering the most confident share, the accuracy and the threshold it takes;
    ``by_threshold``: abstaining below fixed confidences, the coverage and accuracy that result;
    ``curve``: the whole trade-off (``points`` samples) for plotting; ``aurc``: the area under the
    risk (error) against coverage curve, lower is better.
    """
    conf, hit = _ranked(np.asarray(confidence, dtype=float), np.asarray(correct))
    n = len(hit)
    if n == 0:
        return {"by_coverage": [], "by_threshold": [], "curve": {"coverage": [], "accuracy": []}, "aurc": None}
    cum = np.cumsum(hit) / np.arange(1, n + 1)
    by_cov = []
    for c in COVERAGE_LEVELS:
        k = min(n, max(1, int(round(c * n))))
        by_cov.append({"coverage": c, "accuracy": float(cum[k - 1]), "threshold": float(conf[k - 1]), "answered": k})
    by_thr = []
    for t in CONFIDENCE_LEVELS:
        k = int((conf >= t).sum())
        by_thr.append({"threshold": t, "coverage": k / n, "accuracy": float(cum[k - 1]) if k else None, "answered": k})
    ks = np.unique(np.linspace(1, n, min(points, n)).round().astype(int))
    return {
        "by_coverage": by_cov,
        "by_threshold": by_thr,
        "curve": {"coverage": (ks / n).round(5).tolist(), "accuracy": cum[ks - 1].round(5).tolist()},
        "aurc": float((1 - cum).mean()),
    }
