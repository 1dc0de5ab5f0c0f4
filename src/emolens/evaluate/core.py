"""Evaluation of one model or an ensemble on labelled, already-aligned face crops."""

from __future__ import annotations

import numpy as np

from emolens.core.errors import BadLabelError
from emolens.data.datasets import fit_crops
from emolens.evaluate.calibrate import calibration
from emolens.evaluate.metrics import accuracy_at_coverage, classification_metrics, selective
from emolens.evaluate.thresholds import threshold_report
from emolens.evaluate.tta import predict_tta

HEADLINE_COVERAGE = (0.9, 0.8)


def model_names(model) -> list[str]:
    """``"fast+accurate"``, ``"fast+fast-int8"``, a path, or a list of either → the list of model
    names/paths (``emolens.models.ModelSpec``: weights, if any, are left out).

    A string that names an existing file is one model even if it holds a comma."""
    from emolens.models import ModelSpec

    return ModelSpec.parse(model).names


def model_weights(model) -> list[float]:
    """The members' weights (``accurate*3+fast``), normalised to sum to 1."""
    from emolens.models import ModelSpec

    return ModelSpec.parse(model).weights


def default_resolver():
    """The resolver of the process's workspace, for callers that pass none (scripts, notebooks)."""
    from emolens.workspace import Workspace

    return Workspace.default().models


def load_members(names: list[str], resolver=None) -> list:
    """The EmotionModels of an ensemble, resolved by ``resolver`` (``Workspace.models``; default:
    the process's); all must have the same labels (in any order)."""
    resolver = resolver or default_resolver()
    members = [resolver.load(n) for n in names]
    ref = members[0].labels
    for name, m in zip(names[1:], members[1:], strict=True):
        if sorted(m.labels) != sorted(ref):
            raise BadLabelError(f"an ensemble's models must share labels: {names[0]} has {ref}, {name} has {m.labels}")
    return members


def member_probs(model, images: np.ndarray, labels: list[str], tta: bool = False, shift: int = 0) -> np.ndarray:
    """One model's probabilities on ``images`` (fitted to its input), columns in ``labels`` order."""
    spec = model.meta.input
    crops = fit_crops(images, spec.size, spec.channels)
    probs = predict_tta(model, crops, flip=True, shift=shift) if tta else model.predict(crops, batch_size=256)
    order = [model.labels.index(label) for label in labels]
    if len(order) == probs.shape[1]:
        return probs[:, order]
    kept = probs[:, order]  # outputs the data cannot have are dropped: renormalise over the rest
    return kept / np.maximum(kept.sum(1, keepdims=True), 1e-12)


def summarize(probs: np.ndarray, y_true: np.ndarray, labels: list[str]) -> dict:
    """Every figure that follows from probabilities and true classes: classification metrics,
    calibration (ECE over 15 bins), and accuracy against coverage."""
    y_true = np.asarray(y_true)
    pred, conf = probs.argmax(1), probs.max(1)
    out = classification_metrics(y_true, pred, labels)
    cal = calibration(probs, y_true)
    out["ece"] = cal["ece"]
    out["calibration"] = cal
    out["selective"] = selective(conf, pred == y_true)
    out["accuracy_at_coverage"] = {str(c): accuracy_at_coverage(conf, pred == y_true, c) for c in HEADLINE_COVERAGE}
    return out


def headline(metrics: dict) -> dict:
    """The few figures that compare variants."""
    return {
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "ece": metrics["ece"],
        "nll": metrics["calibration"]["nll"],
        **{f"accuracy_at_{c}": v for c, v in metrics["accuracy_at_coverage"].items()},
    }


def target_labels(
    model_labels: list[str], labels: np.ndarray, classes: list[str], drop_rows: bool = False
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Match a dataset's classes to a model's labels by name: ``(labels scored, y_true, kept rows)``.

    A model label the dataset's schema lacks (``contempt`` of an 8-class model on FER2013's 7
    classes) is dropped before the argmax, since no face could be right to carry it. A class the
    model lacks is an error, unless it is one of those ``classes`` no row uses, or ``drop_rows``
    leaves out its rows (a 7-class model on FER+ majority labels: contempt faces are not scored).
    """
    ref = list(model_labels)
    labels = np.asarray(labels)
    keep = np.isin(labels, [i for i, c in enumerate(classes) if c in ref])
    if not drop_rows and not keep.all():
        unknown = sorted(set(classes[i] for i in np.unique(labels[~keep])))
        raise BadLabelError(f"dataset classes {unknown} are not among the model's labels {ref}")
    ref = [label for label in ref if label in classes]
    y_true = np.array([ref.index(classes[i]) for i in labels[keep]], dtype=np.int64)
    return ref, y_true, keep


def evaluate_arrays(
    model,
    images: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    *,
    tta: bool = False,
    tta_shift: int = 0,
    target_precision: float | None = None,
    target_coverage: float | None = None,
    min_count: int = 10,
    compare: bool = False,
    rules: list | None = None,
) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1, the confusion matrix, calibration and
    accuracy against coverage, in the (first) model's label order.

    ``model``: a name or path, several comma-separated, or a list: an ensemble averages its
    members' probabilities. ``tta`` averages each member over the crop and its mirror (and, with
    ``tta_shift`` pixels, four shifted copies). With ``target_precision`` or ``target_coverage``,
    per-class thresholds are chosen and measured (``"thresholds"``). ``compare`` adds each member,
    with and without TTA, as ``"variants"``. Dataset classes are matched to model labels by name;
    a class the model lacks is an error. ``rules`` (post-processing rules, ``emolens.classify.rules``)
    adds the guard's report of what each changes (``"rules"``); a single model that carries rules
    gets that report for its own. The headline figures are always the probabilities' own argmax.
    """
    names, weights = model_names(model), model_weights(model)
    members = load_members(names)
    ref, y_true, _ = target_labels(members[0].labels, labels, classes)
    dropped = [label for label in members[0].labels if label not in ref]
    plain = [member_probs(m, images, ref) for m in members] if compare or not tta else None
    augmented = [member_probs(m, images, ref, tta=True, shift=tta_shift) for m in members] if tta else None
    probs = np.average(augmented if tta else plain, axis=0, weights=weights)
    out = {"model": ",".join(names), "models": names, **summarize(probs, y_true, ref)}
    if len(set(weights)) > 1:
        out["weights"] = weights
    if dropped:
        out["dropped_labels"] = dropped  # model outputs the data cannot have, left out before the argmax
    out["tta"] = {"flip": True, "shift": tta_shift, "views": 2 + 4 * bool(tta_shift)} if tta else None
    if compare and (tta or len(members) > 1):
        variants = []
        for i, name in enumerate(names):
            variants.append({"name": name, "tta": False, **headline(summarize(plain[i], y_true, ref))})
            if tta:
                variants.append({"name": name, "tta": True, **headline(summarize(augmented[i], y_true, ref))})
        if len(members) > 1:
            ens = "+".join(names)
            mean = np.average(plain, axis=0, weights=weights)
            variants.append({"name": ens, "tta": False, **headline(summarize(mean, y_true, ref))})
            if tta:
                variants.append({"name": ens, "tta": True, **headline(out)})
        out["variants"] = variants
    own = members[0].meta.rules if len(members) == 1 and rules is None else None
    if rules or own:
        from emolens.evaluate.rules import evaluate_rules

        out["rules"] = evaluate_rules(probs, y_true, ref, rules or own)
        out["rules"]["from_model"] = bool(own)
    if target_precision is not None or target_coverage is not None:
        out["thresholds"] = threshold_report(probs, y_true, ref, target_precision, target_coverage, min_count)
    return out
