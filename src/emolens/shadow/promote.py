"""Promoting a shadow model: the candidate that ran beside the active one in serving.

It passes the same gates as a fine-tuned model (``emolens.feedback.learn.Gates``: accuracy on the held-out
feedback rises, base validation accuracy drops by at most ``max_base_drop``) and, since it is a
different model rather than a small change, one more: on the fixed base validation set it must be
more accurate than the active model with confidence (``emolens.evaluate.compare``: the bootstrap
interval of the gain above 0 and McNemar's p below 1 - confidence), not by noise. What it did in
serving (agreement, corrections) is reported beside the gates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emolens.core.errors import EmoLensError, RefusedError

if TYPE_CHECKING:
    from emolens.workspace import Workspace


@dataclass
class ShadowPromotion:
    active: str
    shadow: str
    passed: bool
    promoted: bool
    gates: dict[str, dict]
    metrics: dict[str, dict]  # {"active"|"shadow": {"base": {...}, "feedback": {...}}}
    comparison: dict[str, Any]  # emolens.evaluate.Comparison.to_dict() on the base validation set
    serving: dict[str, Any] = field(default_factory=dict)  # the shadow report of the pair
    version: str | None = None  # the registry version the shadow became
    judged_on: list[str] = field(default_factory=list)  # the labels both models have, that the gates score

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def promote_shadow(
    workspace: Workspace,
    shadow: str | None = None,
    *,
    base_val: str | Path | None = None,
    gates=None,
    confidence: float = 0.95,
    promote: bool = False,
) -> ShadowPromotion:
    """Judge the shadow model (default: the ``shadow_model`` setting) against the active model and
    make it active when every gate passes and ``promote`` is True. ``workspace`` gives the settings'
    defaults, the resolver and registry of its home, and the feedback and shadow stores."""
    from emolens.data.datasets import load_dataset, to_crops
    from emolens.evaluate import classification_metrics, compare_predictions
    from emolens.evaluate.compare import model_probs
    from emolens.feedback.learn import Gates, paired_change
    from emolens.models import ModelSpec

    s = workspace.settings
    models = workspace.models
    shadow = shadow or s.shadow_model
    if not shadow:
        raise RefusedError("no shadow model: give one, or set EMOLENS_SHADOW_MODEL (the server's shadow_model)")
    shadow_spec = ModelSpec.parse(shadow)
    shadow = str(shadow_spec)
    if shadow_spec.is_ensemble:
        raise RefusedError(f"{shadow!r} is an ensemble: only a single model can become the active version")
    base_val = base_val or s.base_val_data
    if not base_val:
        raise RefusedError(
            "promoting a shadow model needs the fixed base validation set of the gates: "
            "give --base-val or set EMOLENS_BASE_VAL_DATA"
        )
    registry = workspace.registry
    gates = gates or Gates()
    active = registry.ensure_base()
    labels, theirs = models.load(str(active.path)).labels, models.load(shadow_spec).labels
    if not (set(labels) <= set(theirs) or set(theirs) <= set(labels)):
        raise RefusedError(
            f"the shadow {shadow} ({', '.join(theirs)}) and the active model ({', '.join(labels)}) have different "
            "labels, neither all of the other's"
        )
    # An 8-label model against a 7-label one (contempt added): judged on the labels both have, the
    # larger model's extra outputs dropped before the argmax; the version keeps its own labels.
    labels = [label for label in labels if label in theirs]
    spec = models.load(str(active.path)).meta.input
    files = {"active": str(active.path), "shadow": str(models.path(shadow_spec))}  # resolved here, in this home
    base_ds = load_dataset(base_val).remap(labels)
    xb, yb, _ = to_crops(base_ds, spec.size, spec.channels, detect=False)
    # Each model answers the base set once: its accuracy for the gates and the paired test come from it.
    answers = {name: model_probs(m, xb, labels).argmax(1) for name, m in files.items()}
    metrics = {}
    for name in ("active", "shadow"):
        base = classification_metrics(yb, answers[name], labels)
        metrics[name] = {"base": {k: base[k] for k in ("accuracy", "macro_f1", "n")}}
    # The same gates as fine-tuning (emolens.feedback.learn.Gates): paired changes with intervals, the
    # held-out feedback resampled by group (faces of one person or photo are not independent).
    changes = {"base": paired_change(answers["active"] == yb, answers["shadow"] == yb, np.arange(len(yb)),
                                     gates.confidence, gates.bootstrap)}  # fmt: skip
    from emolens.feedback import FeedbackService

    store = FeedbackService(workspace.feedback_store)
    split = store.split()
    held = [r for r in split.holdout if r.label in labels]
    if held:
        xh, yh, _ = to_crops(store.to_dataset(held, labels, "holdout"), spec.size, spec.channels, detect=False)
        groups = np.array([split.group[r.uid] for r in held])
        right = {name: model_probs(m, xh, labels).argmax(1) == yh for name, m in files.items()}
        for name in ("active", "shadow"):
            metrics[name]["feedback"] = {"accuracy": float(right[name].mean()), "n": len(yh)}
        changes["feedback"] = paired_change(right["active"], right["shadow"], groups, gates.confidence, gates.bootstrap)
        verdict = gates.check(changes)
    else:  # no held-out feedback yet: the feedback gate cannot be judged, the others still are
        empty = {"change": 0.0, "low": 0.0, "high": 0.0, "groups": 0, "n": 0}
        verdict = gates.check({**changes, "feedback": empty})
        verdict["feedback_improves"] = {**empty, "passed": True, "skipped": "no held-out feedback yet"}
    names = (active.name, shadow)
    cmp = compare_predictions(yb, answers["active"], answers["shadow"], labels, names=names, confidence=confidence)
    verdict["base_gain_confident"] = {
        "passed": cmp.b_better,
        "change": cmp.accuracy["diff"]["value"],
        "interval": [cmp.accuracy["diff"]["low"], cmp.accuracy["diff"]["high"]],
        "p_value": cmp.mcnemar["p_value"],
    }
    passed = all(g["passed"] for g in verdict.values())
    try:
        serving = workspace.shadow_store.report(active=active.name, shadow=shadow)
    except EmoLensError:
        serving = {}
    outcome = ShadowPromotion(
        active=active.name,
        shadow=shadow,
        passed=passed,
        promoted=False,
        gates=verdict,
        metrics=metrics,
        comparison=cmp.to_dict() | {"disagree": None},
        serving=serving,
        judged_on=list(labels),
    )
    if passed and promote:
        outcome.version = registry.promote(shadow).name
        outcome.promoted = True
    return outcome
