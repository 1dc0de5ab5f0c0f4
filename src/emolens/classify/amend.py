"""Amending a model file's metadata: per-class thresholds and post-processing rules, checked
against the model's own labels and written atomically (``emolens evaluate --save-thresholds`` /
``--save-rules``). Apart from ``modelfile`` because it reads the model through ``EmotionModel``."""

from __future__ import annotations

from pathlib import Path

from emolens.classify.emotion import EmotionModel
from emolens.classify.modelfile import annotate, check_thresholds
from emolens.classify.rules import check_rules
from emolens.core.errors import RefusedError


def save_thresholds(
    path: str | Path, thresholds: dict[str, float] | None, out: str | Path | None = None, card_note: dict | None = None
) -> Path:
    """Write per-class thresholds into a model's metadata (in place, atomically, unless ``out``),
    keeping all its other metadata; ``None`` removes them. ``card_note`` goes into the card as
    ``card["thresholds"]`` (how they were chosen)."""
    meta = EmotionModel(path).meta
    meta.thresholds = None if thresholds is None else check_thresholds(thresholds, meta.labels)
    if card_note is not None:
        meta.card = {**meta.card, "thresholds": card_note}
    elif thresholds is None:
        meta.card = {k: v for k, v in meta.card.items() if k != "thresholds"}
    return annotate(path, meta, out)


def save_rules(
    path: str | Path, rules: list | None, out: str | Path | None = None, evidence: dict | None = None
) -> Path:
    """Write post-processing rules into a model's metadata (in place, atomically, unless ``out``),
    keeping its other metadata; ``None`` removes them. Rules are written only with the guard's
    ``evidence`` (``emolens.evaluate.rules.evaluate_rules``) saying they do not lower macro-F1; it
    goes into the card as ``card["rules"]``."""

    meta = EmotionModel(path).meta
    if rules is None:
        meta.rules = None
        meta.card = {k: v for k, v in meta.card.items() if k != "rules"}
        return annotate(path, meta, out)
    if not evidence or not evidence.get("accepted"):
        raise RefusedError(
            "rules are saved only when `emolens evaluate MODEL DATA --rule ...` shows on labelled data "
            "that they do not lower macro-F1"
            + (f": {evidence['reason']}" if evidence and evidence.get("reason") else "")
        )
    meta.rules = check_rules(rules, meta.labels)
    meta.card = {**meta.card, "rules": {k: v for k, v in evidence.items() if k != "per_rule_detail"}}
    return annotate(path, meta, out)
