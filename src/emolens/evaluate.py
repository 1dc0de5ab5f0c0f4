"""Evaluation of an emotion model on labelled, already-aligned face crops."""

from __future__ import annotations

import numpy as np

from emolens.data.datasets import fit_crops
from emolens.errors import BadLabelError, require


def evaluate_arrays(model: str, images: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, macro-F1, per-class recall and the confusion matrix, in the model's label order.

    Dataset classes are matched to model labels by name; a class the model lacks is an error.
    """
    metrics = require("sklearn.metrics", "train", package="scikit-learn")
    from emolens.models import load_emotion_model

    m = load_emotion_model(str(model))
    unknown = sorted(set(classes[i] for i in np.unique(labels)) - set(m.labels))
    if unknown:
        raise BadLabelError(f"dataset classes {unknown} are not among the model's labels {m.labels}")
    y_true = np.array([m.labels.index(classes[i]) for i in labels])
    crops = fit_crops(images, m.meta.input.size, m.meta.input.channels)
    probs = m.predict(crops, batch_size=256)
    y_pred = probs.argmax(1)
    idx = list(range(len(m.labels)))
    recall = metrics.recall_score(y_true, y_pred, labels=idx, average=None, zero_division=0)
    present = [i for i in idx if (y_true == i).any()]
    return {
        "model": str(model),
        "n": int(len(y_true)),
        "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
        "macro_f1": float(metrics.f1_score(y_true, y_pred, labels=present, average="macro")),
        "per_class_recall": {m.labels[i]: float(recall[i]) for i in present},
        "support": {m.labels[i]: int((y_true == i).sum()) for i in present},
        "labels": m.labels,
        "confusion": metrics.confusion_matrix(y_true, y_pred, labels=idx).tolist(),
    }
