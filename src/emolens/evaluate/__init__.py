"""Evaluation of emotion models on labelled faces.

``evaluate_dataset`` measures a model (or an ensemble, optionally with test-time augmentation) on a
labelled dataset and returns an ``EvaluationReport``: accuracy, macro-F1, per-class
precision/recall/F1, confusion, calibration (ECE), accuracy against coverage, per-class confidence
thresholds, the FER+ majority labels and camera degradations; ``write_report`` turns it into
report.md, report.html, metrics.json and plots. ``evaluate_arrays`` does the same on crops already
in memory. The pieces work on plain arrays too: ``classification_metrics``, ``calibration``,
``selective``, ``choose_thresholds``, ``predict_tta``. ``compare_models`` / ``compare_predictions``
tell whether one model is better than another beyond noise (bootstrap intervals, McNemar), and
``evaluate_rules`` guards post-processing rules.

Names are imported lazily: ``import emolens.evaluate`` loads no NumPy, so the command line can read
``evaluate_dataset``'s defaults when it starts.
"""

from __future__ import annotations

from emolens.core.lazy import lazy_exports

_LAZY = {
    "ClassScores": "emolens.evaluate.evaluation",
    "EvaluationReport": "emolens.evaluate.evaluation",
    "check_evaluation": "emolens.evaluate.evaluation",
    "evaluate_dataset": "emolens.evaluate.evaluation",
    "calibration": "emolens.evaluate.calibrate",
    "expected_calibration_error": "emolens.evaluate.calibrate",
    "Comparison": "emolens.evaluate.compare",
    "compare_models": "emolens.evaluate.compare",
    "compare_predictions": "emolens.evaluate.compare",
    "confidence_gate": "emolens.evaluate.compare",
    "contact_sheet": "emolens.evaluate.compare",
    "evaluate_arrays": "emolens.evaluate.core",
    "load_members": "emolens.evaluate.core",
    "model_names": "emolens.evaluate.core",
    "summarize": "emolens.evaluate.core",
    "accuracy_at_coverage": "emolens.evaluate.metrics",
    "classification_metrics": "emolens.evaluate.metrics",
    "selective": "emolens.evaluate.metrics",
    "evaluate_rules": "emolens.evaluate.rules",
    "apply_thresholds": "emolens.evaluate.thresholds",
    "choose_thresholds": "emolens.evaluate.thresholds",
    "measure_thresholds": "emolens.evaluate.thresholds",
    "threshold_report": "emolens.evaluate.thresholds",
    "predict_tta": "emolens.evaluate.tta",
    "tta_views": "emolens.evaluate.tta",
    "write_report": "emolens.evaluate.report",
}

__getattr__, __all__ = lazy_exports(__name__, _LAZY)
