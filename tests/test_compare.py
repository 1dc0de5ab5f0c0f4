"""`emolens compare`: paired bootstrap intervals, McNemar's test, per-class recall differences and
the contact sheet of disagreements, on the real models and FER2013 PublicTest."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from emolens.core.errors import EmoLensError
from emolens.evaluate import (
    classification_metrics,
    compare_models,
    compare_predictions,
    confidence_gate,
    contact_sheet,
)
from emolens.evaluate.compare import SHEET_HEADER, mcnemar

LABELS = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]


@pytest.fixture(scope="module")
def val(shared_datasets):
    """A random 1,500 of PublicTest's 3,589 faces (the file is sorted by class). That `accurate` beats
    `fast` with confidence on all of them is checked by the shadow promotion test."""
    from emolens.data.datasets import load_npz

    x, y, classes = load_npz(shared_datasets / "fer2013" / "val.npz")
    pick = np.sort(np.random.default_rng(0).choice(len(y), 1500, replace=False))
    return x[pick], y[pick], classes


@pytest.fixture(scope="module")
def fast_vs_accurate(val):
    x, y, classes = val
    return compare_models("fast", "accurate", x, y, classes, n_boot=1000)


# --- the statistics on arrays ----------------------------------------------------------------


def test_mcnemar_exact_p():
    a = np.array([True] * 2 + [False] * 10 + [True] * 50)  # 2 faces only A gets right
    b = np.array([False] * 2 + [True] * 10 + [True] * 50)  # 10 only B
    m = mcnemar(a, b)
    assert (m["a_only"], m["b_only"]) == (2, 10)
    expected = 2 * sum(math.comb(12, k) for k in range(3)) / 2**12  # two-sided binomial, p = 1/2
    assert m["p_value"] == pytest.approx(expected) and m["p_value"] == pytest.approx(0.0386, abs=1e-4)
    assert mcnemar(a, a)["p_value"] == 1.0


def test_identical_answers_are_no_difference():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 500)
    p = np.where(rng.random(500) < 0.6, y, rng.integers(0, 7, 500))
    c = compare_predictions(y, p, p, LABELS, n_boot=300)
    assert c.accuracy["diff"] == {"value": 0.0, "low": 0.0, "high": 0.0}
    assert c.mcnemar["p_value"] == 1.0 and not c.b_better and not c.a_better and c.disagree == []
    assert "no difference" in c.verdict


def test_a_real_gain_is_seen_and_noise_is_not():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 7, 2000)
    a = np.where(rng.random(2000) < 0.60, y, (y + 1) % 7)
    better = np.where(rng.random(2000) < 0.5, y, a)  # fixes about half of A's errors
    # As many faces made right as made wrong: a difference of zero, whatever the shuffle.
    noisy = a.copy()
    wrong, right = np.flatnonzero(a != y)[:25], np.flatnonzero(a == y)[:25]
    noisy[wrong], noisy[right] = y[wrong], (y[right] + 1) % 7
    assert compare_predictions(y, a, better, LABELS, n_boot=500).b_better
    c = compare_predictions(y, a, noisy, LABELS, n_boot=500)
    assert not c.b_better and not c.a_better and c.mcnemar["p_value"] == 1.0
    assert c.accuracy["diff"]["low"] < 0 < c.accuracy["diff"]["high"]


def test_bad_input_is_refused():
    with pytest.raises(EmoLensError, match="same, non-empty faces"):
        compare_predictions(np.zeros(3, int), np.zeros(3, int), np.zeros(2, int), LABELS)
    with pytest.raises(EmoLensError, match="confidence"):
        compare_predictions(np.zeros(3, int), np.zeros(3, int), np.zeros(3, int), LABELS, confidence=1.5)


# --- real models ------------------------------------------------------------------------------


def test_fast_and_accurate_compared(fast_vs_accurate, val):
    c, pa, pb = fast_vs_accurate
    assert c.n == 1500 and (c.a, c.b) == ("fast", "accurate")
    d = c.accuracy["diff"]
    assert d["low"] < d["value"] < d["high"] and d["value"] > 0  # accurate is ahead, as on all of PublicTest
    assert c.b_better == (d["low"] > 0 and c.mcnemar["p_value"] < 0.05)
    assert c.accuracy["diff"]["value"] == pytest.approx(c.accuracy["b"]["value"] - c.accuracy["a"]["value"])
    # The point estimates are evaluate's figures for the same answers.
    x, y, classes = val
    ref = c.labels
    truth = np.array([ref.index(classes[i]) for i in y])
    ev = classification_metrics(truth, pb, ref)
    assert c.accuracy["b"]["value"] == pytest.approx(ev["accuracy"])
    assert c.macro_f1["b"]["value"] == pytest.approx(ev["macro_f1"])
    for label, r in c.per_class_recall.items():
        assert r["b"]["value"] == pytest.approx(ev["per_class_recall"][label])
        assert r["b"]["low"] <= r["b"]["value"] <= r["b"]["high"]
    # McNemar counts the faces exactly one model gets right.
    assert c.mcnemar["b_only"] == int(np.sum((pb == truth) & (pa != truth)))
    assert len(c.disagree) == int(np.sum(pa != pb))


def test_contact_sheet_of_disagreements(fast_vs_accurate, val, tmp_path):
    c, pa, pb = fast_vs_accurate
    x, y, classes = val
    truth = np.array([c.labels.index(classes[i]) for i in y])
    path = contact_sheet(x, c, pa, pb, truth, tmp_path / "sheet.png", limit=25, cols=5, tile=64)
    with Image.open(path) as im:
        assert im.size == (5 * 64, SHEET_HEADER + 5 * (64 + 40))
        sheet = np.asarray(im)
    first = c.disagree[0]
    tile = sheet[SHEET_HEADER : SHEET_HEADER + 64, :64, 0].astype(float)
    face = np.asarray(Image.fromarray(x[first]).resize((64, 64), Image.BICUBIC), dtype=float)
    assert np.abs(tile - face).mean() < 8  # the first tile is the first disagreement's face
    agree = compare_predictions(truth, pa, pa, c.labels, n_boot=100)
    with pytest.raises(EmoLensError, match="agree on every face"):
        contact_sheet(x, agree, pa, pa, truth, tmp_path / "none.png")


def test_fast_int8_is_not_better_beyond_noise(val):
    x, y, classes = val
    gate = confidence_gate("fast", "fast-int8", (x, y, classes), 0.95)
    g = gate["gain_confident"]
    # the INT8 copy of `fast` is 0.2 points behind it on PublicTest (p = 0.23): never confidently ahead
    assert g["passed"] is False and g["interval"][0] < 0 and g["interval"][1] < 0.01


def test_cli_compare(shared_datasets, val, tmp_path):
    x, y, classes = val
    small = tmp_path / "small.npz"
    np.savez(small, images=x[:400], labels=y[:400], classes=np.array(classes))
    out = tmp_path / "cmp.json"
    cmd = [sys.executable, "-m", "emolens.cli", "compare", "fast", "fast+accurate", str(small)]
    run = subprocess.run([*cmd, "--boot", "200", "--sheet", str(tmp_path / "d.png"), "--json", str(out)],
                         capture_output=True, text=True, env=os.environ | {"COLUMNS": "200"})  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "McNemar" in run.stdout and "recall disgust" in run.stdout
    report = json.loads(out.read_text())
    assert report["n"] == 400 and report["b"] == "fast+accurate" and report["n_boot"] == 200
    assert (tmp_path / "d.png").is_file() and report["sheet"] == str(tmp_path / "d.png")
    # The sheet names the models, and says how many of the disagreements it shows.
    shown = min(120, report["disagreements"])
    assert report["sheet_shown"] == shown and f"({shown} of {report['disagreements']} shown)" in run.stdout
    bad = subprocess.run([*cmd[:4], "nonexistent", "fast", str(small)], capture_output=True, text=True)
    assert bad.returncode == 2 and "no model named 'nonexistent'" in bad.stderr and "Traceback" not in bad.stderr


def test_a_class_the_models_lack_is_not_scored(val):
    """FER+'s `contempt` on 7-class models: those faces are left out and counted, as label-sets.md says."""
    x, y, classes = val
    classes8 = [*classes, "contempt"]
    y8 = y[:300].copy()
    y8[:7] = len(classes)  # seven faces now carry a class no model has
    c, pa, pb = compare_models("fast", "accurate", x[:300], y8, classes8, n_boot=100)
    assert c.not_scored == {"contempt": 7} and c.n == 293 and len(pa) == 293
    assert "Not scored (classes the models do not have): 7 contempt." in c.to_markdown()
    with pytest.raises(EmoLensError, match="none of the dataset classes"):
        compare_models("fast", "accurate", x[:3], np.full(3, 7), classes8, n_boot=100)


def test_cli_skips_a_class_the_models_lack_before_detecting(tmp_path):
    """Photos in class folders: a `contempt/` folder is not even opened (its file is no image) and is
    counted as not scored; the other faces are compared."""
    from emolens.cli.analyze import EXAMPLE

    for name in ("happy", "neutral"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for k in range(3):
            (tmp_path / "data" / name / f"{k}.jpg").write_bytes(EXAMPLE.read_bytes())
    (tmp_path / "data" / "contempt").mkdir()
    (tmp_path / "data" / "contempt" / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "cmp.json"
    run = subprocess.run(
        [sys.executable, "-m", "emolens.cli", "compare", "fast", "accurate", str(tmp_path / "data"), "--boot", "100",
         "--json", str(out)],
        capture_output=True, text=True, env=os.environ | {"COLUMNS": "200", "EMOLENS_HOME": str(tmp_path / "h")},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "not scored 1 contempt face(s): not among the models' labels" in run.stderr
    assert "broken.jpg" not in run.stderr + run.stdout  # never read, so never reported as unreadable
    report = json.loads(out.read_text())
    assert report["n"] == 6 and report["not_scored"] == {"contempt": 1}


def test_contact_sheet_names_the_models_and_says_how_many_it_shows(tmp_path):
    """No "A"/"B": each caption carries its model's name, and the header says "3 of 5 ... shown"."""
    labels = LABELS
    y = np.array([0, 1, 2, 3, 4, 5])
    pa, pb = np.array([0, 1, 2, 3, 4, 5]), np.array([1, 2, 3, 4, 5, 5])
    c = compare_predictions(y, pa, pb, labels, names=("fast", "accurate"), n_boot=100)
    crops = np.full((6, 48, 48), 128, np.uint8)
    shown = contact_sheet(crops, c, pa, pb, y, tmp_path / "s.png", limit=3, cols=3, tile=96)
    all5 = contact_sheet(crops, c, pa, pb, y, tmp_path / "t.png", limit=120, cols=3, tile=96)
    a, b = np.asarray(Image.open(shown)), np.asarray(Image.open(all5))
    header_differs = (a[:SHEET_HEADER] != b[:SHEET_HEADER]).any()
    assert header_differs  # "3 of 5" against "5 of 5"
    # The header line is drawn (dark pixels on white) and the captions are longer than "A happy".
    assert (a[:SHEET_HEADER] < 100).any()
    import cv2

    width_a = cv2.getTextSize("A angry", cv2.FONT_HERSHEY_SIMPLEX, 0.35, 1)[0][0]
    caption_row = a[SHEET_HEADER + 96 + 14 : SHEET_HEADER + 96 + 26, :96]
    dark = np.flatnonzero((caption_row.min(-1) < 128).any(0))
    assert dark.max() - dark.min() > width_a + 10  # "fast: angry", not "A angry"
