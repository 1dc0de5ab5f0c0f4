"""The guard on post-processing rules: what each rule changes on labelled data, and whether to accept them.

A set of rules is accepted only when, on the labelled faces, neither the whole set nor any one rule
alone lowers macro-F1 (a rule that helps only beside another, harmful, one is not let in by it).
The report says, per rule, how many faces it answered, how many answers it changed, how many of
those it made right and how many it made wrong, and the change in accuracy and macro-F1.
"""

from __future__ import annotations

import numpy as np

from emolens.classify.rules import apply_rules, check_rules
from emolens.evaluate.metrics import classification_metrics

TOLERANCE = 1e-9  # float noise, not a loss


def evaluate_rules(probs: np.ndarray, y_true: np.ndarray, labels: list[str], rules: list) -> dict:
    """The guard's report for ``rules`` (text, dicts or Rules) on probabilities (N, K) in ``labels``
    order and true class indices. ``accepted`` is True when no rule alone and not the set lowers
    macro-F1; ``reason`` says why not otherwise."""
    rules = check_rules(list(rules), labels)
    y = np.asarray(y_true)
    base_pred = probs.argmax(1)
    base = classification_metrics(y, base_pred, labels)

    def effect(pred: np.ndarray, fired: np.ndarray) -> dict:
        m = classification_metrics(y, pred, labels)
        changed = pred != base_pred
        return {
            "answered": int((fired >= 0).sum()),
            "changed": int(changed.sum()),
            "made_right": int((changed & (pred == y)).sum()),
            "made_wrong": int((changed & (base_pred == y)).sum()),
            "accuracy": m["accuracy"],
            "macro_f1": m["macro_f1"],
            "accuracy_change": m["accuracy"] - base["accuracy"],
            "macro_f1_change": m["macro_f1"] - base["macro_f1"],
            "per_class_recall": m["per_class_recall"],
        }

    per_rule = []
    for rule in rules:
        pred, fired = apply_rules(probs, labels, [rule])
        per_rule.append({"rule": str(rule), **effect(pred, fired)})
    pred, fired = apply_rules(probs, labels, rules)
    together = effect(pred, fired)
    together["fired_by_rule"] = {str(r): int((fired == i).sum()) for i, r in enumerate(rules)}
    harmful = [r["rule"] for r in per_rule if r["macro_f1_change"] < -TOLERANCE]
    reason = ""
    if harmful:
        reason = f"on its own, {'; '.join(repr(h) for h in harmful)} lowers macro-F1"
    elif together["macro_f1_change"] < -TOLERANCE:
        reason = f"together the rules lower macro-F1 by {-together['macro_f1_change']:.4f}"
    return {
        "rules": [r.to_dict() for r in rules],
        "n": int(len(y)),
        "base": {"accuracy": base["accuracy"], "macro_f1": base["macro_f1"]},
        "per_rule": per_rule,
        "together": together,
        "accepted": not reason,
        "reason": reason,
    }
