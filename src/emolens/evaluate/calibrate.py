"""Calibration: expected calibration error over equal-width confidence bins, NLL and Brier score."""

from __future__ import annotations

import numpy as np

N_BINS = 15


def calibration(probs: np.ndarray, y_true: np.ndarray, n_bins: int = N_BINS) -> dict:
    """ECE (and the maximum gap, MCE) of the top-class confidence over ``n_bins`` equal-width bins.

    Bin ``b`` holds confidences in ``(b/n_bins, (b+1)/n_bins]`` (the first also holds 0);
    ECE = sum over bins of (faces in bin / all faces) * |accuracy in bin - mean confidence in bin|.
    ``bins`` lists every bin (count 0 for empty ones) for a reliability diagram.
    """
    probs = np.asarray(probs, dtype=np.float64)
    y_true = np.asarray(y_true)
    n = len(y_true)
    conf = probs.max(1)
    correct = probs.argmax(1) == y_true
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.searchsorted(edges[1:-1], conf, side="left")  # edges[b] < conf <= edges[b + 1]
    bins, ece, mce = [], 0.0, 0.0
    for b in range(n_bins):
        inside = which == b
        k = int(inside.sum())
        acc = float(correct[inside].mean()) if k else None
        mean_conf = float(conf[inside].mean()) if k else None
        if k:
            gap = abs(acc - mean_conf)
            ece += k / n * gap
            mce = max(mce, gap)
        bins.append(
            {"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": k, "accuracy": acc, "confidence": mean_conf}
        )
    p_true = probs[np.arange(n), y_true] if n else np.zeros(0)
    onehot = np.eye(probs.shape[1])[y_true] if n else np.zeros_like(probs)
    return {
        "n_bins": n_bins,
        "ece": float(ece),
        "mce": float(mce),
        "nll": float(-np.log(np.clip(p_true, 1e-12, None)).mean()) if n else None,
        "brier": float(((probs - onehot) ** 2).sum(1).mean()) if n else None,
        "mean_confidence": float(conf.mean()) if n else None,
        "bins": bins,
    }


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, n_bins: int = N_BINS) -> float:
    return calibration(probs, y_true, n_bins)["ece"]
