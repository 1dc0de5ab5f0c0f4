"""Evaluation of emotion models on labelled faces.

``evaluate_arrays`` measures a model (or an ensemble, optionally with test-time augmentation):
accuracy, macro-F1, per-class precision/recall/F1, confusion, calibration (ECE), accuracy against
coverage and per-class confidence thresholds; ``write_report`` turns the result into report.md,
report.html, metrics.json and plots. The pieces work on plain arrays too: ``classification_metrics``,
``calibration``, ``selective``, ``choose_thresholds``, ``predict_tta``. ``compare_models`` /
``compare_predictions`` tell whether one model is better than another beyond noise (bootstrap
intervals, McNemar), and ``evaluate_rules`` guards post-processing rules.
"""

from emolens.evaluate.calibration import calibration, expected_calibration_error
from emolens.evaluate.compare import Comparison, compare_models, compare_predictions, confidence_gate, contact_sheet
from emolens.evaluate.core import evaluate_arrays, load_members, model_names, summarize
from emolens.evaluate.metrics import accuracy_at_coverage, classification_metrics, selective
from emolens.evaluate.rules import evaluate_rules
from emolens.evaluate.thresholds import apply_thresholds, choose_thresholds, measure_thresholds, threshold_report
from emolens.evaluate.tta import predict_tta, tta_views

__all__ = [
    "Comparison",
    "accuracy_at_coverage",
    "apply_thresholds",
    "calibration",
    "choose_thresholds",
    "classification_metrics",
    "compare_models",
    "compare_predictions",
    "confidence_gate",
    "contact_sheet",
    "evaluate_arrays",
    "evaluate_rules",
    "expected_calibration_error",
    "load_members",
    "measure_thresholds",
    "model_names",
    "predict_tta",
    "selective",
    "summarize",
    "threshold_report",
    "tta_views",
    "write_report",
]


def write_report(report: dict, out_dir, command: str = ""):
    """report.md, report.html, metrics.json, confusion.json and PNG plots in ``out_dir`` (needs matplotlib)."""
    from emolens.evaluate.report import write_report as _write

    return _write(report, out_dir, command)
