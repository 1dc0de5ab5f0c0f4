"""Is model B really better than model A? Paired comparison on the same labelled faces.

``compare_predictions`` works on two models' answers for the same faces: accuracy and macro-F1
of each with paired bootstrap confidence intervals (the same resampled faces for both, so the
interval of the difference is narrow where the models agree), per-class recall and its change,
and McNemar's exact test on the faces exactly one of them gets right. ``compare_models`` runs
two models (names, paths or ensembles) on arrays first; ``contact_sheet`` draws the faces where
they disagree. ``Comparison.b_better`` is what a promotion gate asks: B is better with
confidence, not by noise (the interval of the accuracy gain lies above 0 and McNemar's p is below
1 - confidence).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emolens.errors import BadLabelError, EmoLensError


@dataclass
class Comparison:
    a: str
    b: str
    n: int
    labels: list[str]
    confidence: float  # of the intervals; McNemar's p is judged against 1 - confidence
    n_boot: int
    seed: int
    accuracy: dict[str, dict[str, float]]  # "a", "b", "diff" (b - a): {"value", "low", "high"}
    macro_f1: dict[str, dict[str, float]]
    per_class_recall: dict[str, dict[str, dict[str, float]]]  # class -> "a", "b", "diff" -> {value, low, high}
    mcnemar: dict[str, Any]  # a_only, b_only (faces only that model gets right), p_value, statistic, method
    disagree: list[int] = field(default_factory=list)  # indices of the faces where the answers differ

    @property
    def alpha(self) -> float:
        return 1.0 - self.confidence

    @property
    def b_better(self) -> bool:
        """B is more accurate beyond noise: the interval of the gain is above 0 and McNemar's p < alpha."""
        return self.accuracy["diff"]["low"] > 0 and self.mcnemar["p_value"] < self.alpha

    @property
    def a_better(self) -> bool:
        return self.accuracy["diff"]["high"] < 0 and self.mcnemar["p_value"] < self.alpha

    @property
    def verdict(self) -> str:
        if self.b_better:
            return f"{self.b} is more accurate than {self.a} with {self.confidence:.0%} confidence"
        if self.a_better:
            return f"{self.a} is more accurate than {self.b} with {self.confidence:.0%} confidence"
        return f"no difference in accuracy beyond noise at {self.confidence:.0%} confidence"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(verdict=self.verdict, b_better=self.b_better, a_better=self.a_better, disagreements=len(self.disagree))
        return d

    def to_markdown(self) -> str:
        def ci(v: dict, pct: bool = True) -> str:
            f = (lambda x: f"{100 * x:.2f}") if pct else (lambda x: f"{x:.4f}")
            return f"{f(v['value'])} [{f(v['low'])}, {f(v['high'])}]"

        def signed(v: dict, pct: bool = True) -> str:
            f = (lambda x: f"{100 * x:+.2f}") if pct else (lambda x: f"{x:+.4f}")
            return f"{f(v['value'])} [{f(v['low'])}, {f(v['high'])}]"

        m = self.mcnemar
        lines = [
            f"| n = {self.n} | {self.a} | {self.b} | {self.b} − {self.a} |",
            "|---|---|---|---|",
            f"| accuracy (%) | {ci(self.accuracy['a'])} | {ci(self.accuracy['b'])} | {signed(self.accuracy['diff'])} |",
            f"| macro-F1 | {ci(self.macro_f1['a'], False)} | {ci(self.macro_f1['b'], False)} | "
            f"{signed(self.macro_f1['diff'], False)} |",
        ]
        for c, r in self.per_class_recall.items():
            lines.append(f"| recall {c} (%) | {ci(r['a'])} | {ci(r['b'])} | {signed(r['diff'])} |")
        lines += [
            "",
            f"McNemar ({m['method']}): {m['a_only']} faces only {self.a} gets right, {m['b_only']} only {self.b}; "
            f"p = {m['p_value']:.3g}. {len(self.disagree)} faces answered differently.",
            f"Intervals: {self.confidence:.0%} paired percentile bootstrap, {self.n_boot} resamples "
            f"(seed {self.seed}).",
            f"Verdict: {self.verdict}.",
        ]
        return "\n".join(lines)


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, Any]:
    """McNemar's test on paired right/wrong answers: exact two-sided binomial test on the
    discordant faces (exact at any count, so no continuity correction is needed)."""
    a_only = int(np.sum(correct_a & ~correct_b))
    b_only = int(np.sum(~correct_a & correct_b))
    n = a_only + b_only
    k = min(a_only, b_only)
    # Integer arithmetic: exact however many discordant faces there are.
    p = 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)
    stat = 0.0 if n == 0 else (abs(a_only - b_only) - 1) ** 2 / n
    return {"a_only": a_only, "b_only": b_only, "p_value": p, "statistic": stat, "method": "exact binomial"}


def _interval(point: float, samples: np.ndarray, confidence: float) -> dict[str, float]:
    lo, hi = np.quantile(samples, [(1 - confidence) / 2, (1 + confidence) / 2])
    return {"value": float(point), "low": float(lo), "high": float(hi)}


def _per_class(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Recall, F1 and support from confusion matrices (..., K, K) (rows: truth), as classification_metrics."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(float)
    support, predicted = cm.sum(-1), cm.sum(-2)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return recall, f1, support


def _confusions(y: np.ndarray, p: np.ndarray, idx: np.ndarray, k: int) -> np.ndarray:
    """Confusion matrices (B, K, K) of the resamples ``idx`` (B, n), counted in one bincount."""
    b = len(idx)
    codes = y[idx] * k + p[idx] + (np.arange(b) * k * k)[:, None]
    return np.bincount(codes.ravel(), minlength=b * k * k).reshape(b, k, k)


def compare_predictions(
    y_true: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    labels: list[str],
    *,
    names: tuple[str, str] = ("A", "B"),
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> Comparison:
    """Compare two models' answers (class indices into ``labels``) on the same faces."""
    y, pa, pb = (np.asarray(v, dtype=np.int64) for v in (y_true, pred_a, pred_b))
    if not (len(y) == len(pa) == len(pb)) or len(y) == 0:
        raise EmoLensError(f"a comparison needs the same, non-empty faces for both models ({len(pa)} vs {len(pb)})")
    if not 0.5 <= confidence < 1:
        raise EmoLensError(f"confidence must be in [0.5, 1), not {confidence}")
    n, k = len(y), len(labels)
    ca, cb = pa == y, pb == y
    rng = np.random.default_rng(seed)
    acc_a, acc_b, f1_a, f1_b, rec_a, rec_b = [], [], [], [], [], []
    for start in range(0, n_boot, 100):  # chunks keep memory to ~100 x n indices
        idx = rng.integers(0, n, size=(min(100, n_boot - start), n))
        acc_a.append(ca[idx].mean(1))
        acc_b.append(cb[idx].mean(1))
        for p, f1s, recs in ((pa, f1_a, rec_a), (pb, f1_b, rec_b)):
            recall, f1, support = _per_class(_confusions(y, p, idx, k))
            present = support > 0  # macro averages over the classes each resample holds
            f1s.append((f1 * present).sum(1) / np.maximum(present.sum(1), 1))
            recs.append(np.where(present, recall, np.nan))
    acc_a, acc_b, f1_a, f1_b = (np.concatenate(v) for v in (acc_a, acc_b, f1_a, f1_b))
    rec_a, rec_b = np.concatenate(rec_a), np.concatenate(rec_b)

    full_recall_a, full_f1_a, support = _per_class(np.bincount(y * k + pa, minlength=k * k).reshape(k, k))
    full_recall_b, full_f1_b, _ = _per_class(np.bincount(y * k + pb, minlength=k * k).reshape(k, k))
    present = support > 0
    point_f1_a, point_f1_b = float(full_f1_a[present].mean()), float(full_f1_b[present].mean())

    def iv(point: float, samples: np.ndarray) -> dict[str, float]:
        return _interval(point, samples[~np.isnan(samples)], confidence)

    per_class = {}
    for i in np.flatnonzero(present):
        per_class[labels[i]] = {
            "a": iv(full_recall_a[i], rec_a[:, i]),
            "b": iv(full_recall_b[i], rec_b[:, i]),
            "diff": iv(full_recall_b[i] - full_recall_a[i], rec_b[:, i] - rec_a[:, i]),
        }
    return Comparison(
        a=names[0],
        b=names[1],
        n=n,
        labels=list(labels),
        confidence=confidence,
        n_boot=n_boot,
        seed=seed,
        accuracy={
            "a": iv(ca.mean(), acc_a),
            "b": iv(cb.mean(), acc_b),
            "diff": iv(cb.mean() - ca.mean(), acc_b - acc_a),
        },
        macro_f1={
            "a": iv(point_f1_a, f1_a),
            "b": iv(point_f1_b, f1_b),
            "diff": iv(point_f1_b - point_f1_a, f1_b - f1_a),
        },
        per_class_recall=per_class,
        mcnemar=mcnemar(ca, cb),
        disagree=np.flatnonzero(pa != pb).tolist(),
    )


def model_probs(model, images: np.ndarray, labels: list[str], tta: bool = False) -> np.ndarray:
    """A model's (or an ensemble's, weights applied) probabilities on crops, columns in ``labels`` order.

    A model with more labels (an 8-class model read on 7) has its extra outputs dropped before the
    argmax and the rest renormalised; one that lacks some of ``labels`` cannot answer them."""
    from emolens.evaluate.core import load_members, member_probs, model_names, model_weights

    members = load_members(model_names(model))
    if not set(labels) <= set(members[0].labels):
        raise BadLabelError(f"{model} has labels {members[0].labels}, the other model {labels}")
    probs = [member_probs(m, images, labels, tta=tta) for m in members]
    return np.average(probs, axis=0, weights=model_weights(model))


def compare_models(
    a,
    b,
    images: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    *,
    tta: bool = False,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> tuple[Comparison, np.ndarray, np.ndarray]:
    """Run models ``a`` and ``b`` (names, paths or ensembles) on labelled crops and compare them.

    Returns the Comparison and each model's answers (indices into ``Comparison.labels``, the
    first model's label order). Dataset classes are matched to model labels by name."""
    from emolens.evaluate.core import load_members, model_names
    from emolens.models import model_spec

    ref = load_members(model_names(a))[0].labels
    unknown = sorted({classes[i] for i in np.unique(labels)} - set(ref))
    if unknown:
        raise BadLabelError(f"dataset classes {unknown} are not among the models' labels {ref}")
    y = np.array([ref.index(classes[i]) for i in labels], dtype=np.int64)
    pa = model_probs(a, images, ref, tta).argmax(1)
    pb = model_probs(b, images, ref, tta).argmax(1)
    names = (model_spec(a), model_spec(b))
    cmp = compare_predictions(y, pa, pb, ref, names=names, confidence=confidence, n_boot=n_boot, seed=seed)
    return cmp, pa, pb


def contact_sheet(
    crops: np.ndarray,
    comparison: Comparison,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    y_true: np.ndarray | None,
    path: str | Path,
    *,
    limit: int = 120,
    cols: int = 10,
    tile: int = 96,
) -> Path:
    """A PNG grid of the faces where the two models disagree (the first ``limit``), each captioned
    with the true label (when known) and both answers; green marks the model that is right."""
    import cv2
    from PIL import Image

    idx = comparison.disagree[:limit]
    if not idx:
        raise EmoLensError("the two models agree on every face: there is no disagreement to draw")
    labels = comparison.labels
    caption_h = 40 if y_true is not None else 28
    rows = math.ceil(len(idx) / cols)
    sheet = np.full((rows * (tile + caption_h), cols * tile, 3), 255, np.uint8)
    for j, i in enumerate(idx):
        face = crops[i]
        face = cv2.cvtColor(face, cv2.COLOR_GRAY2RGB) if face.ndim == 2 else face
        face = cv2.resize(face, (tile, tile), interpolation=cv2.INTER_CUBIC)
        r, c = divmod(j, cols)
        y0, x0 = r * (tile + caption_h), c * tile
        sheet[y0 : y0 + tile, x0 : x0 + tile] = face
        lines = [(f"A {labels[pred_a[i]]}", pred_a[i]), (f"B {labels[pred_b[i]]}", pred_b[i])]
        if y_true is not None:
            lines.insert(0, (f"true {labels[y_true[i]]}", None))
        for n, (text, guess) in enumerate(lines):
            right = y_true is not None and guess is not None and guess == y_true[i]
            color = (0, 140, 0) if right else (0, 0, 0) if guess is None or y_true is None else (190, 0, 0)
            cv2.putText(sheet, text, (x0 + 3, y0 + tile + 11 + 12 * n), cv2.FONT_HERSHEY_SIMPLEX, 0.35, color, 1)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(target)
    return target


def confidence_gate(
    parent: str | Path, candidate: str | Path, data: tuple[np.ndarray, np.ndarray, list[str]], confidence: float
) -> dict[str, dict]:
    """A promotion gate: the candidate is more accurate than the parent on ``data`` (crops, labels,
    classes) with ``confidence``. The entry has the shape of ``emolens.learn.Gates.check``'s."""
    x, y, classes = data
    cmp, _, _ = compare_models(str(parent), str(candidate), x, y, classes, confidence=confidence)
    return {
        "gain_confident": {
            "passed": cmp.b_better,
            "change": cmp.accuracy["diff"]["value"],
            "interval": [cmp.accuracy["diff"]["low"], cmp.accuracy["diff"]["high"]],
            "p_value": cmp.mcnemar["p_value"],
        }
    }
