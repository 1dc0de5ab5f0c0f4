"""The statistics behind every comparison and gate, in one place.

- ``mcnemar``: McNemar's exact test on paired right/wrong answers (``scipy.stats.binomtest``).
- ``bootstrap_figures``: percentile intervals of figures computed on the same resampled faces
  for two models (``scipy.stats.bootstrap``, ``paired=True``).
- ``paired_change``: an accuracy change with an interval from a bootstrap over whole groups
  (faces of one person or photo are not independent evidence).
- ``class_scores`` (point figures, ``sklearn.metrics``) and ``resampled_class_scores`` (the same
  figures for a stack of resampled confusion matrices at once, which the bootstrap needs).
- ``fit_temperature``: the one temperature fit, over one domain or several at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

# Temperatures tried (0.1 to 10, log-spaced): one parameter, so a grid finds the optimum exactly
# enough and keeps the constrained fit of several domains simple.
TEMPERATURES = np.exp(np.linspace(np.log(0.1), np.log(10.0), 241))


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, Any]:
    """McNemar's test on paired right/wrong answers: the exact two-sided binomial test on the
    discordant faces (exact at any count, so no continuity correction is needed)."""
    from scipy.stats import binomtest

    correct_a, correct_b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    a_only = int(np.sum(correct_a & ~correct_b))
    b_only = int(np.sum(~correct_a & correct_b))
    n = a_only + b_only
    p = 1.0 if n == 0 else float(binomtest(b_only, n, 0.5).pvalue)
    stat = 0.0 if n == 0 else (abs(a_only - b_only) - 1) ** 2 / n
    return {"a_only": a_only, "b_only": b_only, "p_value": p, "statistic": stat, "method": "exact binomial"}


def bootstrap_figures(
    data: Sequence[np.ndarray],
    figures: Callable[..., np.ndarray],
    *,
    confidence: float,
    n_boot: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile intervals of ``figures(*data, axis=-1)`` (an array of figures, first axis) over
    ``n_boot`` paired resamples of the rows of ``data``: every array is resampled with the same
    rows. Returns (low, high), each of the figures' shape; a figure undefined in a resample (NaN)
    is judged on the resamples that define it."""
    from scipy.stats import bootstrap

    if len(data[0]) < 2:  # one row: every resample is that row
        point = np.asarray(figures(*data, axis=-1), dtype=np.float64)
        return point, point
    res = bootstrap(
        tuple(data), figures, paired=True, vectorized=True, method="percentile", n_resamples=n_boot,
        batch=100, confidence_level=confidence, random_state=np.random.default_rng(seed),
    )  # fmt: skip
    dist = res.bootstrap_distribution  # (figures..., n_boot)
    tail = (1 - confidence) / 2
    return np.nanquantile(dist, tail, axis=-1), np.nanquantile(dist, 1 - tail, axis=-1)


def paired_change(
    parent_ok: np.ndarray, candidate_ok: np.ndarray, groups: np.ndarray, confidence: float, n: int, seed: int = 0
) -> dict[str, float]:
    """Accuracy change from parent to candidate on the same faces, with a percentile bootstrap
    interval that resamples whole groups: the change is the ratio of the resampled groups' summed
    differences to their summed sizes."""
    diff = np.asarray(candidate_ok, np.float64) - np.asarray(parent_ok, np.float64)
    _, which = np.unique(groups, return_inverse=True)
    sums, sizes = np.bincount(which, weights=diff), np.bincount(which).astype(np.float64)
    low, high = bootstrap_figures(
        (sums, sizes), lambda s, z, axis=-1: s.sum(axis) / z.sum(axis), confidence=confidence, n_boot=n, seed=seed
    )
    return {"change": float(diff.mean()), "low": float(low), "high": float(high), "groups": len(sizes), "n": len(diff)}


def class_scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 and support for classes 0..n_classes-1, and the confusion
    matrix (rows: truth); a class never predicted has precision 0."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = np.arange(n_classes)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return {
        "precision": p,
        "recall": r,
        "f1": f,
        "support": s,
        "confusion": confusion_matrix(y_true, y_pred, labels=labels),
    }


def resampled_class_scores(y: np.ndarray, pred: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Recall, F1 and support (each (..., k)) of stacked resamples ``y``, ``pred`` (..., n):
    ``class_scores``' figures for thousands of resamples at once, from one bincount."""
    lead = y.shape[:-1]
    m = int(np.prod(lead))
    codes = y.reshape(m, -1) * k + pred.reshape(m, -1) + (np.arange(m) * k * k)[:, None]
    cm = np.bincount(codes.ravel(), minlength=m * k * k).reshape(*lead, k, k)
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(float)
    support, predicted = cm.sum(-1), cm.sum(-2)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return recall, f1, support


def _nll(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean negative log-likelihood of ``softmax(log p / T)`` for every T of ``TEMPERATURES``."""
    logp = np.log(np.clip(np.asarray(probs, np.float64), 1e-12, None))
    out = []
    for ts in np.array_split(TEMPERATURES, 16):  # (T, n, k) a chunk at a time: memory stays small
        z = logp[None] / ts[:, None, None]
        z -= z.max(-1, keepdims=True)
        log_softmax = z - np.log(np.exp(z).sum(-1, keepdims=True))
        out.append(-log_softmax[:, np.arange(len(y)), y].mean(1))
    return np.concatenate(out)


def fit_temperature(probs: np.ndarray, y: np.ndarray, *others: tuple[np.ndarray, np.ndarray]) -> float:
    """The temperature T (0.1 to 10) of ``softmax(log p / T)`` for ``probs`` with true classes
    ``y``, and for ``others`` domains (each ``(probs, y)``) at once: it minimises the domains' mean
    negative log-likelihood, each domain weighing the same whatever its size, among the
    temperatures that move no domain past its own best one, going from T = 1 towards it: so no
    domain gets worse than leaving its probabilities as they are (when two domains pull opposite
    ways, T stays 1). With one domain that is simply its best T."""
    domains = [(probs, y), *others]
    nll = np.stack([_nll(p, np.asarray(t)) for p, t in domains])  # (domains, T)
    log_t, best = np.log(TEMPERATURES), np.log(TEMPERATURES[nll.argmin(1)])
    # between 1 and each domain's best (log T of the same sign, no further out)
    allowed = ((log_t[None] * best[:, None] >= 0) & (np.abs(log_t)[None] <= np.abs(best)[:, None] + 1e-12)).all(0)
    allowed[np.argmin(np.abs(log_t))] = True  # T = 1 always
    joint = np.where(allowed, nll.mean(0), np.inf)
    return float(TEMPERATURES[int(np.argmin(joint))])


def cross_fitted_ece(probs: np.ndarray, y: np.ndarray, groups: np.ndarray, fit, seed: int = 0) -> float:
    """ECE of ``probs`` scaled by a temperature fitted on one half of the groups and applied to the
    other, both ways, so the temperature is not judged on its own data. ``fit(probs, y)`` gives
    the temperature of a half (so a fit that also uses other domains can be crossed the same way)."""
    from emolens.classify.emotion import scale_probabilities
    from emolens.evaluate.calibrate import expected_calibration_error

    uniq = np.unique(groups)
    half = np.isin(groups, np.random.default_rng(seed).permutation(uniq)[: len(uniq) // 2])
    crossed = np.empty_like(np.asarray(probs, np.float64))
    for fit_on in (half, ~half):
        if not (~fit_on).any():
            continue
        source = fit_on if fit_on.any() else ~fit_on  # one group only: nothing to cross with
        crossed[~fit_on] = scale_probabilities(probs[~fit_on], "probabilities", fit(probs[source], y[source]))
    return expected_calibration_error(crossed, y)
