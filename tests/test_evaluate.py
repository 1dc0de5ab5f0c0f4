"""Evaluation: metrics against hand computations, TTA and ensembles on FER2013, per-class
thresholds in the model file and the analyzer's "uncertain", the report."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from emolens.classify import EmotionModel, ModelMeta
from emolens.classify.amend import save_thresholds
from emolens.classify.modelfile import THRESHOLDS_KEY, annotate, decide
from emolens.core.errors import BadLabelError, ModelError
from emolens.evaluate import (
    apply_thresholds,
    calibration,
    choose_thresholds,
    classification_metrics,
    evaluate_arrays,
    measure_thresholds,
    predict_tta,
    selective,
    summarize,
    threshold_report,
)
from emolens.evaluate.tta import shift_crops, tta_views
from emolens.models import ASSETS, clear_model_cache

EXAMPLE = ASSETS / "examples" / "astronaut.jpg"
FER = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]


@pytest.fixture(scope="module")
def fer300(shared_datasets):
    """300 faces drawn at random from FER2013 PublicTest (the file is sorted by class)."""
    with np.load(shared_datasets / "fer2013" / "val.npz") as z:
        idx = np.sort(np.random.default_rng(0).choice(len(z["labels"]), 300, replace=False))
        return z["images"][idx], z["labels"][idx], [str(c) for c in z["classes"]]


@pytest.fixture
def fer300_npz(fer300, tmp_path):
    images, labels, classes = fer300
    path = tmp_path / "fer300.npz"
    np.savez(path, images=images, labels=labels, classes=np.array(classes))
    return path


# -- metrics on a tiny set, by hand -------------------------------------------------------------


def test_classification_metrics_match_a_hand_computation():
    labels = ["a", "b", "c", "d"]  # d never occurs: no per-class figures, but a row in the confusion matrix
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    y_pred = np.array([0, 0, 0, 1, 0, 2, 2, 1])
    m = classification_metrics(y_true, y_pred, labels)
    # confusion rows (true a, b, c): [3 0 0], [1 1 0], [0 1 2]
    assert m["confusion"] == [[3, 0, 0, 0], [1, 1, 0, 0], [0, 1, 2, 0], [0, 0, 0, 0]]
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["per_class_precision"] == pytest.approx({"a": 3 / 4, "b": 1 / 2, "c": 1.0})
    assert m["per_class_recall"] == pytest.approx({"a": 1.0, "b": 1 / 2, "c": 2 / 3})
    assert m["per_class_f1"] == pytest.approx({"a": 6 / 7, "b": 1 / 2, "c": 4 / 5})
    assert m["macro_f1"] == pytest.approx((6 / 7 + 1 / 2 + 4 / 5) / 3)
    assert m["balanced_accuracy"] == pytest.approx((1 + 1 / 2 + 2 / 3) / 3)
    assert m["support"] == {"a": 3, "b": 2, "c": 3}


def test_classification_metrics_agree_with_scikit_learn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    y_true, y_pred = rng.integers(0, 5, 400), rng.integers(0, 5, 400)
    m = classification_metrics(y_true, y_pred, list("abcde"))
    p, r, f, s = sk.precision_recall_fscore_support(y_true, y_pred, labels=range(5), zero_division=0)
    assert list(m["per_class_precision"].values()) == pytest.approx(p)
    assert list(m["per_class_recall"].values()) == pytest.approx(r)
    assert list(m["per_class_f1"].values()) == pytest.approx(f)
    assert m["macro_f1"] == pytest.approx(sk.f1_score(y_true, y_pred, average="macro"))


# Five faces: (confidence, right?) = (.90 yes), (.92 no), (.55 yes), (.58 no), (.38 no).
PROBS = np.array(
    [
        [0.90, 0.05, 0.05],
        [0.92, 0.04, 0.04],
        [0.55, 0.25, 0.20],
        [0.20, 0.58, 0.22],
        [0.38, 0.31, 0.31],
    ]
)
TRUE = np.array([0, 1, 0, 2, 1])


def test_ece_matches_a_hand_computation():
    cal = calibration(PROBS, TRUE)  # 15 bins of width 1/15
    # bin (13/15, 14/15]: .90 and .92, accuracy 1/2; bin (8/15, 9/15]: .55 and .58, accuracy 1/2;
    # bin (5/15, 6/15]: .38, accuracy 0.
    expected = 2 / 5 * abs(0.5 - 0.91) + 2 / 5 * abs(0.5 - 0.565) + 1 / 5 * abs(0.0 - 0.38)
    assert cal["ece"] == pytest.approx(expected) == pytest.approx(0.266)
    assert cal["mce"] == pytest.approx(0.41)
    assert [b["count"] for b in cal["bins"]] == [0, 0, 0, 0, 0, 1, 0, 0, 2, 0, 0, 0, 0, 2, 0]
    assert cal["bins"][13]["confidence"] == pytest.approx(0.91) and cal["bins"][13]["accuracy"] == 0.5
    nll = -(math.log(0.90) + math.log(0.04) + math.log(0.55) + math.log(0.22) + math.log(0.31)) / 5
    assert cal["nll"] == pytest.approx(nll)
    brier_first = (0.90 - 1) ** 2 + 0.05**2 + 0.05**2
    assert cal["brier"] == pytest.approx(
        (brier_first + sum(((PROBS[i] - np.eye(3)[TRUE[i]]) ** 2).sum() for i in range(1, 5))) / 5
    )


def test_accuracy_against_coverage_by_hand():
    conf, correct = PROBS.max(1), PROBS.argmax(1) == TRUE
    sel = selective(conf, correct)
    by_cov = {row["coverage"]: row for row in sel["by_coverage"]}
    assert by_cov[1.0]["accuracy"] == pytest.approx(2 / 5)
    assert by_cov[0.6]["accuracy"] == pytest.approx(1 / 3)  # .92 no, .90 yes, .58 no
    assert by_cov[0.6]["threshold"] == pytest.approx(0.58)
    by_thr = {row["threshold"]: row for row in sel["by_threshold"]}
    assert by_thr[0.5]["coverage"] == pytest.approx(4 / 5) and by_thr[0.5]["accuracy"] == pytest.approx(2 / 4)
    assert by_thr[0.9]["coverage"] == pytest.approx(2 / 5) and by_thr[0.9]["accuracy"] == pytest.approx(1 / 2)
    # risk (1 - accuracy) of the top-k for k = 1..5: 1, 1/2, 2/3, 1/2, 3/5
    assert sel["aurc"] == pytest.approx((1 + 1 / 2 + 2 / 3 + 1 / 2 + 3 / 5) / 5)
    m = summarize(PROBS, TRUE, ["a", "b", "c"])
    assert m["accuracy_at_coverage"]["0.8"] == pytest.approx(2 / 4) and m["ece"] == pytest.approx(0.266)


def _two_class_probs(rows):
    """(predicted class, confidence, true class) rows → probabilities over two classes."""
    probs = np.array([[c, 1 - c] if k == 0 else [1 - c, c] for k, c, _ in rows])
    return probs, np.array([t for _, _, t in rows])


def test_thresholds_for_a_target_precision_and_coverage_by_hand():
    probs, y = _two_class_probs(
        [(0, 0.9, 0), (0, 0.8, 0), (0, 0.7, 1), (0, 0.6, 0), (0, 0.55, 1), (1, 0.7, 0), (1, 0.6, 0)]
    )
    # class x, most confident first: right, right, wrong, right, wrong → precision 1, 1, 2/3, 3/4, 3/5
    th, unreachable = choose_thresholds(probs, y, ["x", "y"], target_precision=0.75, min_count=1)
    assert th == {"x": pytest.approx(0.6), "y": 1.0} and unreachable == ["y"]
    assert apply_thresholds(probs, ["x", "y"], th).tolist() == [0, 0, 0, 0, -1, -1, -1]
    m = measure_thresholds(probs, y, ["x", "y"], th)
    assert (m["answered"], m["uncertain"]) == (4, 3)
    assert m["coverage"] == pytest.approx(4 / 7) and m["accuracy"] == pytest.approx(3 / 4)
    # min_count: the set must hold at least that many answers
    th, _ = choose_thresholds(probs, y, ["x", "y"], target_precision=0.75, min_count=5)
    assert th["x"] == 1.0
    # coverage: each predicted class keeps its most confident 60% (3 of 5; 2 of 2 rounds up to all)
    th, unreachable = choose_thresholds(probs, y, ["x", "y"], target_coverage=0.6)
    assert th == {"x": pytest.approx(0.7), "y": 0.0} and unreachable == []


def test_tied_confidences_are_answered_together():
    probs, y = _two_class_probs([(0, 0.9, 0), (0, 0.8, 0), (0, 0.8, 1)])
    th, _ = choose_thresholds(probs, y, ["x", "y"], target_precision=1.0, min_count=1)
    assert th["x"] == pytest.approx(0.9)  # 0.8 would answer the wrong 0.8 as well


def test_threshold_report_has_a_cross_fitted_estimate():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(400, 3)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.where(rng.random(400) < 0.7, probs.argmax(1), rng.integers(0, 3, 400))
    rep = threshold_report(probs, y, ["a", "b", "c"], target_precision=0.85)
    assert rep["rule"] == "precision" and rep["accuracy"] >= 0.85 - 1e-9
    assert 0 < rep["cross_fit"]["coverage"] <= 1 and rep["cross_fit"]["accuracy"] is not None
    assert rep["answered"] + rep["uncertain"] == 400


# -- TTA and ensembles on FER2013 ---------------------------------------------------------------


def test_shifted_views_repeat_the_edge():
    x = np.arange(2 * 4 * 5, dtype=np.uint8).reshape(2, 4, 5)
    right = shift_crops(x, 2, 0)
    assert np.array_equal(right[:, :, 2:], x[:, :, :3]) and np.array_equal(right[:, :, 0], x[:, :, 0])
    up = shift_crops(x, 0, -1)
    assert np.array_equal(up[:, :3], x[:, 1:]) and np.array_equal(up[:, 3], x[:, 3])
    assert len(tta_views(x)) == 2 and len(tta_views(x, shift=2)) == 6
    assert np.array_equal(tta_views(x)[1], x[:, :, ::-1])


def test_tta_and_ensemble_average_probabilities(fer300):
    images, labels, classes = fer300
    fast, int8 = EmotionModel(ASSETS / "fast.onnx"), EmotionModel(ASSETS / "fast-int8.onnx")
    p_fast, p_int8 = fast.predict(images, 256), int8.predict(images, 256)
    flipped = fast.predict(np.ascontiguousarray(images[:, :, ::-1]), 256)
    tta = predict_tta(fast, images)
    assert tta.shape == (300, 7) and np.allclose(tta, (p_fast + flipped) / 2, atol=1e-6)
    assert np.allclose(tta.sum(1), 1, atol=1e-5)

    y = np.array([fast.labels.index(classes[i]) for i in labels])
    single = evaluate_arrays("fast", images, labels, classes)
    assert single["accuracy"] == pytest.approx(float((p_fast.argmax(1) == y).mean()))
    ens = evaluate_arrays(["fast", "fast-int8"], images, labels, classes, compare=True)
    mean = (p_fast + p_int8) / 2
    assert ens["accuracy"] == pytest.approx(float((mean.argmax(1) == y).mean()))
    assert ens["ece"] == pytest.approx(calibration(mean, y)["ece"], abs=1e-6)
    worst = min(v["accuracy"] for v in ens["variants"] if "+" not in v["name"])
    assert ens["accuracy"] >= worst - 0.01
    assert ens["model"] == "fast,fast-int8" and [v["name"] for v in ens["variants"]] == [
        "fast",
        "fast-int8",
        "fast+fast-int8",
    ]
    with_tta = evaluate_arrays("fast,fast-int8", images[:100], labels[:100], classes, tta=True, tta_shift=2)
    assert with_tta["tta"] == {"flip": True, "shift": 2, "views": 6} and with_tta["n"] == 100
    assert with_tta["accuracy"] > 0.4  # far above the largest class's share (about a quarter)


def test_an_ensemble_needs_one_label_set(fer300, tmp_path):
    pytest.importorskip("onnx")
    images, labels, classes = fer300
    other = EmotionModel(ASSETS / "fast.onnx").meta
    other.labels = [f"x{i}" for i in range(7)]
    annotate(ASSETS / "fast.onnx", other, tmp_path / "other.onnx")
    with pytest.raises(BadLabelError, match="share labels"):
        evaluate_arrays(["fast", str(tmp_path / "other.onnx")], images[:10], labels[:10], classes)


# -- thresholds in the model file, and the analyzer's "uncertain" -------------------------------


def test_threshold_metadata_is_checked(tmp_path):
    spec = EmotionModel(ASSETS / "fast.onnx").meta.input
    with pytest.raises(ModelError, match="nope"):
        ModelMeta(labels=FER, input=spec, thresholds={"nope": 0.5})
    with pytest.raises(ModelError, match="in \\[0, 1\\]"):
        ModelMeta(labels=FER, input=spec, thresholds={"happy": 1.5})
    props = ModelMeta(labels=FER, input=spec, thresholds={"happy": 0.5}).to_props()
    assert json.loads(props[THRESHOLDS_KEY]) == {"happy": 0.5}
    assert ModelMeta.from_props(props).thresholds == {"happy": 0.5}
    props[THRESHOLDS_KEY] = "[1, 2]"
    with pytest.raises(ModelError, match="JSON object"):
        ModelMeta.from_props(props, "m.onnx")


def test_saved_thresholds_make_the_analyzer_answer_uncertain(tmp_path, emolens_home):
    pytest.importorskip("onnx")
    from emolens import Analyzer

    copy = tmp_path / "fast-copy.onnx"
    shutil.copyfile(ASSETS / "fast.onnx", copy)
    plain = Analyzer(model=copy)(EXAMPLE)[0]
    assert plain.label == "happy" and not plain.uncertain

    save_thresholds(copy, {"happy": min(1.0, plain.confidence + 0.05)}, card_note={"rule": "test"})
    meta = EmotionModel(copy).meta
    assert meta.thresholds == {"happy": pytest.approx(min(1.0, plain.confidence + 0.05))}
    assert meta.card["name"] == EmotionModel(ASSETS / "fast.onnx").card["name"] and meta.card["thresholds"]
    assert meta.labels == FER and meta.input == EmotionModel(ASSETS / "fast.onnx").meta.input

    clear_model_cache()  # a model changed in place is read again by a new process, or after this
    results = Analyzer(model=copy)(EXAMPLE)
    face = results[0]
    assert face.label == "uncertain" and face.uncertain and face.top_label == "happy"
    assert face.probs == plain.probs and face.confidence == plain.confidence
    d = face.to_dict()
    assert d["label"] == "uncertain" and d["uncertain"] is True and d["top_label"] == "happy"
    assert d["probs"]["happy"] == round(plain.confidence, 4)
    assert "uncertain: below the model's threshold for happy" in results.summary() and results.labels == ["uncertain"]
    assert results.plot().shape == results.image.shape
    assert results.to_rows()[0]["label"] == "uncertain"
    m = EmotionModel(copy)  # the analyzer's own rule (``decide``), straight from the model's metadata
    sure = dict(zip(FER, np.eye(7)[3], strict=True))
    assert [decide(p, m.thresholds, m.meta.rules) for p in (plain.probs, sure)] == ["uncertain", "happy"]

    save_thresholds(copy, {"happy": plain.confidence - 0.05})
    clear_model_cache()
    assert Analyzer(model=copy)(EXAMPLE)[0].label == "happy"
    save_thresholds(copy, None)  # removed again: the file is as plain as the original
    assert EmotionModel(copy).thresholds is None and "thresholds" not in EmotionModel(copy).card


def test_evaluate_command_chooses_and_saves_thresholds(fer300_npz, tmp_path, emolens_home):
    pytest.importorskip("onnx")
    from emolens.cli import app

    runner = CliRunner()
    out = tmp_path / "with-thresholds.onnx"
    args = ["evaluate", "fast", str(fer300_npz), "--target-precision", "0.8", "--save-thresholds"]
    refused = runner.invoke(app, args)  # a shipped model is never changed in place
    assert refused.exit_code == 2 and "--thresholds-out" in refused.output
    done = runner.invoke(app, [*args, "--thresholds-out", str(out), "--json", str(tmp_path / "m.json")])
    assert done.exit_code == 0, done.output
    assert "per-class thresholds (precision 0.8)" in done.output and "thresholds saved" in done.output
    report = json.loads((tmp_path / "m.json").read_text())
    th = report["thresholds"]
    assert EmotionModel(out).thresholds == pytest.approx(th["thresholds"])
    assert th["saved_to"] == str(out) and th["accuracy"] >= 0.8 - 1e-9 and 0 < th["coverage"] < 1
    assert EmotionModel(out).card["thresholds"]["rule"] == "precision"
    for label, row in th["per_class"].items():
        assert row["precision"] is None or row["precision"] >= 0.8 - 1e-9 or label in th["unreachable"]

    ensemble = runner.invoke(app, ["evaluate", "fast,fast-int8", str(fer300_npz), "--target-coverage", "0.9"])
    assert ensemble.exit_code == 0, ensemble.output
    refused = runner.invoke(
        app, ["evaluate", "fast", str(fer300_npz), "--tta", "--target-coverage", "0.9", "--thresholds-out", str(out)]
    )
    assert refused.exit_code == 2 and "without test-time augmentation" in refused.output


def test_evaluate_command_writes_the_report(fer300_npz, tmp_path, emolens_home):
    pytest.importorskip("matplotlib")
    pytest.importorskip("markdown")
    from emolens.cli import app

    out = tmp_path / "report"
    result = CliRunner().invoke(
        app,
        ["evaluate", "fast", str(fer300_npz), "--model", "fast-int8", "--tta", "--target-precision", "0.8"]
        + ["--report", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "accuracy at 90% coverage" in result.output and "fast+fast-int8" in result.output
    for name in ("report.md", "report.html", "metrics.json", "confusion.json"):
        assert (out / name).stat().st_size > 100, name
    for name in ("confusion.png", "reliability.png", "coverage.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["models"] == ["fast", "fast-int8"] and metrics["n"] == 300 and metrics["tta"]["views"] == 2
    assert len(metrics["variants"]) == 6 and metrics["calibration"]["n_bins"] == 15
    assert json.loads((out / "confusion.json").read_text())["counts"] == metrics["confusion"]
    md = (out / "report.md").read_text()
    for heading in ("## Variants", "## Per class", "## Calibration", "## Accuracy against coverage", "thresholds"):
        assert heading in md
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "<table>" in html


def test_evaluate_dataset_returns_a_typed_report_whose_json_is_evaluate_arrays(fer300_npz, tmp_path):
    from emolens.evaluate import EvaluationReport, check_evaluation, evaluate_dataset

    report = evaluate_dataset("fast", fer300_npz, target_precision=0.8, progress=False)
    with np.load(fer300_npz) as z:
        images, labels, classes = z["images"], z["labels"], [str(c) for c in z["classes"]]
    measured = evaluate_arrays(["fast"], images, labels, classes, target_precision=0.8, compare=True)
    # ``to_dict`` is the JSON `emolens evaluate --json` has always written: the same keys, in the same order.
    assert isinstance(report, EvaluationReport)
    assert report.to_dict() == {**measured, "not_counted": [], "dataset": str(fer300_npz)}
    assert list(report.to_dict()) == [*measured, "not_counted", "dataset"]
    assert "tried_rules" not in report.to_dict() and "ferplus" not in report.to_dict()
    happy = report.per_class["happy"]
    assert happy.recall == measured["per_class_recall"]["happy"] and happy.support == measured["support"]["happy"]
    assert report.accuracy == measured["accuracy"] and report.thresholds["rule"] == "precision"
    target = report.save_thresholds(tmp_path / "th.onnx")
    assert report.to_dict()["thresholds"]["saved_to"] == str(target) and EmotionModel(target).thresholds

    with pytest.raises(Exception, match="not both"):
        check_evaluation("fast", target_precision=0.8, target_coverage=0.9)
    with pytest.raises(Exception, match="without test-time augmentation"):
        check_evaluation("fast", tta_shift=2, target_coverage=0.9, save_thresholds=True)
    with pytest.raises(Exception, match="--thresholds-out"):  # a shipped model is never changed in place
        check_evaluation("fast", target_coverage=0.9, save_thresholds=True)
    with pytest.raises(Exception, match="--thresholds-out"):
        report.save_thresholds()
    with pytest.raises(Exception, match="--rules-out"):
        check_evaluation("fast", rules=["if angry and disgust >= 0.2 then disgust"], save_rules=True)
    assert check_evaluation("fast+fast-int8") == ["fast", "fast-int8"]
