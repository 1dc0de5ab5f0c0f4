"""Robustness of a model (or an ensemble) to camera degradations, on any labelled crops.

Every member of the seeded family in ``emolens.image.degrade`` is applied to the whole set, the model
is measured on each, and the robustness score is the mean accuracy over the family.
"""

from __future__ import annotations

import numpy as np

from emolens.evaluate.core import load_members, member_probs, model_names, target_labels
from emolens.evaluate.metrics import classification_metrics
from emolens.image.degrade import COMBINATIONS, FAMILY, degrade


def robustness(
    model,
    images: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    *,
    degradations: list[str] | None = None,
    seed: int = 0,
    tta: bool = False,
    drop_rows: bool = False,
    progress=None,
) -> dict:
    """Accuracy and macro-F1 clean and under each degradation, the drop in points from clean,
    and ``score``: the mean accuracy over the family. ``worst_single`` is the largest drop of a
    single degradation, ``worst_combination`` that of the webcam / CCTV combinations.

    ``drop_rows`` leaves out faces of classes the model lacks (a 7-class model on FER+ majority
    labels: contempt faces), as ``target_labels`` does. ``progress`` (optional) is called with each
    degradation's name before it is measured."""
    names = model_names(model)
    members = load_members(names)
    ref, y_true, keep = target_labels(members[0].labels, labels, classes, drop_rows=drop_rows)
    images = images[keep]
    chosen = list(degradations or FAMILY)

    def measure(crops: np.ndarray) -> dict:
        probs = np.mean([member_probs(m, crops, ref, tta=tta) for m in members], axis=0)
        m = classification_metrics(y_true, probs.argmax(1), ref)
        return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}

    clean = measure(images)
    rows = []
    for name in chosen:
        if progress is not None:
            progress(name)
        m = measure(degrade(images, name, seed))
        rows.append({"degradation": name, **m, "drop_points": 100 * (clean["accuracy"] - m["accuracy"])})
    singles = [r["drop_points"] for r in rows if r["degradation"] not in COMBINATIONS]
    combos = [r["drop_points"] for r in rows if r["degradation"] in COMBINATIONS]
    return {
        "model": ",".join(names),
        "labels": ref,
        "n": int(len(y_true)),
        "seed": seed,
        "tta": tta,
        "clean": clean,
        "degradations": rows,
        "score": float(np.mean([r["accuracy"] for r in rows])) if rows else clean["accuracy"],
        "worst_single": max(singles, default=0.0),
        "worst_combination": max(combos, default=0.0),
    }
