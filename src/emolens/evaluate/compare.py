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

from emolens.core.errors import BadLabelError, EmoLensError
from emolens.evaluate.stats import bootstrap_figures, class_scores, mcnemar, resampled_class_scores


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
    not_scored: dict[str, int] = field(default_factory=dict)  # faces per dataset class the models lack

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
        if self.not_scored:
            lines.append(f"Not scored (classes the models do not have): {count_phrase(self.not_scored)}.")
        return "\n".join(lines)


def count_phrase(per_class: dict[str, int]) -> str:
    return ", ".join(f"{n} {c}" for c, n in per_class.items())


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

    def figures(y, pa, pb, axis=-1):
        """Accuracy, macro-F1 (over the classes a resample holds) and per-class recall (NaN where a
        resample lacks the class) of both models and their differences, for a stack of resamples."""
        acc_a, acc_b = (pa == y).mean(axis), (pb == y).mean(axis)
        (rec_a, f1_a, support), (rec_b, f1_b, _) = (resampled_class_scores(y, p, k) for p in (pa, pb))
        present = support > 0
        f1_a, f1_b = ((f * present).sum(-1) / np.maximum(present.sum(-1), 1) for f in (f1_a, f1_b))
        rec_a, rec_b = (np.where(present, r, np.nan) for r in (rec_a, rec_b))
        scalars = np.stack([acc_a, acc_b, acc_b - acc_a, f1_a, f1_b, f1_b - f1_a])
        recalls = np.moveaxis(np.stack([rec_a, rec_b, rec_b - rec_a], -1), (-2, -1), (0, 1))  # (k, 3, ...)
        return np.concatenate([scalars, recalls.reshape(3 * k, *scalars.shape[1:])])

    low, high = bootstrap_figures((y, pa, pb), figures, confidence=confidence, n_boot=n_boot, seed=seed)
    sa, sb = class_scores(y, pa, k), class_scores(y, pb, k)
    present = sa["support"] > 0
    f1_a, f1_b = float(sa["f1"][present].mean()), float(sb["f1"][present].mean())
    points = [ca.mean(), cb.mean(), cb.mean() - ca.mean(), f1_a, f1_b, f1_b - f1_a]
    for i in range(k):
        points += [sa["recall"][i], sb["recall"][i], sb["recall"][i] - sa["recall"][i]]

    def iv(j: int) -> dict[str, float]:
        return {"value": float(points[j]), "low": float(low[j]), "high": float(high[j])}

    per_class = {
        labels[i]: {"a": iv(6 + 3 * i), "b": iv(7 + 3 * i), "diff": iv(8 + 3 * i)} for i in np.flatnonzero(present)
    }
    return Comparison(
        a=names[0],
        b=names[1],
        n=n,
        labels=list(labels),
        confidence=confidence,
        n_boot=n_boot,
        seed=seed,
        accuracy={"a": iv(0), "b": iv(1), "diff": iv(2)},
        macro_f1={"a": iv(3), "b": iv(4), "diff": iv(5)},
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
    first model's label order). Dataset classes are matched to model labels by name; faces of a
    class the models do not have (``contempt`` for 7-class models) are not scored: they are
    counted in ``Comparison.not_scored``, and the answers cover the scored faces only, in order."""
    from emolens.evaluate.core import load_members, model_names
    from emolens.models import ModelSpec

    ref = load_members(model_names(a))[0].labels
    scored = np.isin(labels, [i for i, c in enumerate(classes) if c in ref])
    not_scored = {classes[i]: int(n) for i, n in zip(*np.unique(labels[~scored], return_counts=True), strict=True)}
    if not scored.any():
        raise BadLabelError(f"none of the dataset classes {sorted(set(classes))} is among the models' labels {ref}")
    images, labels = images[scored], labels[scored]
    y = np.array([ref.index(classes[i]) for i in labels], dtype=np.int64)
    pa = model_probs(a, images, ref, tta).argmax(1)
    pb = model_probs(b, images, ref, tta).argmax(1)
    names = (str(ModelSpec.parse(a)), str(ModelSpec.parse(b)))
    cmp = compare_predictions(y, pa, pb, ref, names=names, confidence=confidence, n_boot=n_boot, seed=seed)
    cmp.not_scored = not_scored
    return cmp, pa, pb


SHEET_HEADER = 22  # pixels above the grid: which models, and how many of their disagreements are shown


def _fit_text(canvas: np.ndarray, text: str, x: int, y: int, width: int, scale: float, color) -> None:
    """Draw ``text`` within ``width`` pixels: a smaller font first, then the text cut with '..'."""
    import cv2

    font = cv2.FONT_HERSHEY_SIMPLEX
    while scale > 0.3 and cv2.getTextSize(text, font, scale, 1)[0][0] > width:
        scale -= 0.025
    while len(text) > 3 and cv2.getTextSize(text, font, scale, 1)[0][0] > width:
        text = text[:-3] + ".."
    cv2.putText(canvas, text, (x, y), font, scale, color, 1, cv2.LINE_AA)


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
    with the true label (when known) and both answers under the models' names; green marks the
    model that is right. A line above the grid says how many of the disagreements it shows."""
    import cv2
    from PIL import Image

    idx = comparison.disagree[:limit]
    if not idx:
        raise EmoLensError("the two models agree on every face: there is no disagreement to draw")
    labels = comparison.labels
    caption_h = 40 if y_true is not None else 28
    rows = math.ceil(len(idx) / cols)
    sheet = np.full((SHEET_HEADER + rows * (tile + caption_h), cols * tile, 3), 255, np.uint8)
    total = len(comparison.disagree)
    header = f"{comparison.a} vs {comparison.b}: {len(idx)} of {total} disagreements shown"
    if y_true is not None:
        header += " (green: right, red: wrong)"
    _fit_text(sheet, header, 4, SHEET_HEADER - 7, cols * tile - 8, 0.45, (0, 0, 0))
    for j, i in enumerate(idx):
        face = crops[i]
        face = cv2.cvtColor(face, cv2.COLOR_GRAY2RGB) if face.ndim == 2 else face
        face = cv2.resize(face, (tile, tile), interpolation=cv2.INTER_CUBIC)
        r, c = divmod(j, cols)
        y0, x0 = SHEET_HEADER + r * (tile + caption_h), c * tile
        sheet[y0 : y0 + tile, x0 : x0 + tile] = face
        lines = [
            (f"{comparison.a}: {labels[pred_a[i]]}", pred_a[i]),
            (f"{comparison.b}: {labels[pred_b[i]]}", pred_b[i]),
        ]
        if y_true is not None:
            lines.insert(0, (f"true {labels[y_true[i]]}", None))
        for n, (text, guess) in enumerate(lines):
            right = y_true is not None and guess is not None and guess == y_true[i]
            color = (0, 140, 0) if right else (0, 0, 0) if guess is None or y_true is None else (190, 0, 0)
            _fit_text(sheet, text, x0 + 3, y0 + tile + 11 + 12 * n, tile - 5, 0.35, color)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(target)
    return target


def confidence_gate(
    parent: str | Path, candidate: str | Path, data: tuple[np.ndarray, np.ndarray, list[str]], confidence: float
) -> dict[str, dict]:
    """A promotion gate: the candidate is more accurate than the parent on ``data`` (crops, labels,
    classes) with ``confidence``. The entry has the shape of ``emolens.feedback.learn.Gates.check``'s."""
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
