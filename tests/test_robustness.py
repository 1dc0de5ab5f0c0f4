"""Camera degradations (emolens.image.degrade) and the robustness evaluation built on them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from emolens.core.errors import EmoLensError
from emolens.image.degrade import (
    COMBINATIONS,
    FAMILY,
    TRAIN_RANGES,
    apply_ops,
    degrade,
    kind_odds,
    random_degrade,
    random_ops,
)


@pytest.fixture(scope="module")
def crops(shared_datasets):
    """240 PublicTest faces drawn at random (the file is sorted by class)."""
    with np.load(shared_datasets / "fer2013" / "val.npz") as z:
        idx = np.sort(np.random.default_rng(1).choice(len(z["labels"]), 240, replace=False))
        return z["images"][idx], z["labels"][idx], [str(c) for c in z["classes"]]


def _sharpness(x: np.ndarray) -> float:
    return float(np.mean([cv2.Laplacian(img.astype(np.float32), cv2.CV_32F).var() for img in x]))


def test_every_member_keeps_shape_and_type_and_is_reproducible(crops):
    images = crops[0][:16]
    rgb = np.repeat(images[..., None], 3, axis=-1)
    for name in FAMILY:
        a, b = degrade(images, name, seed=3), degrade(images, name, seed=3)
        assert a.shape == images.shape and a.dtype == np.uint8
        assert np.array_equal(a, b), name
        assert not np.array_equal(a, images), f"{name} left the crops as they were"
        assert degrade(rgb, name).shape == rgb.shape
    # noise depends on the seed; the deterministic steps do not
    assert not np.array_equal(degrade(images, "noise-12", 0), degrade(images, "noise-12", 1))
    assert np.array_equal(degrade(images, "blur-1.5", 0), degrade(images, "blur-1.5", 1))


def test_each_kind_does_what_its_name_says(crops):
    x = crops[0][:32]
    sharp = _sharpness(x)
    assert _sharpness(degrade(x, "blur-1.0")) > _sharpness(degrade(x, "blur-2.0"))
    assert _sharpness(degrade(x, "scale-16px")) < _sharpness(degrade(x, "scale-32px")) < sharp
    assert degrade(x, "dark").mean() < 0.5 * x.mean()
    assert degrade(x, "very-dark").mean() < degrade(x, "dark").mean()
    assert degrade(x, "contrast-0.4").std(axis=(1, 2)).mean() == pytest.approx(
        0.4 * x.std(axis=(1, 2)).mean(), rel=0.05
    )
    noisy = degrade(x, "noise-12").astype(float) - x
    assert 8 < noisy.std() < 13  # sigma 12, less where pixels clip at 0 or 255
    assert np.abs(degrade(x, "jpeg-8").astype(int) - x).mean() > np.abs(degrade(x, "jpeg-30").astype(int) - x).mean()


def test_a_small_face_is_enlarged_as_the_degradations_enlarge_it(crops):
    """The analyzer's alignment enlarges a face smaller than the crop bicubically, and the family's
    down-and-up scaling does the same, so what the models train and are measured on is what they get."""
    from emolens.image.align import ENLARGE, align_face
    from emolens.image.degrade import downscale

    face = crops[0][0]
    small = cv2.resize(face, (16, 16), interpolation=cv2.INTER_AREA)
    image = np.repeat(small[..., None], 3, axis=-1)
    # A box that frames the whole 16 px image the way a 48 px crop frames its face: a pure 3x enlargement.
    side = 16 / 1.25
    box = np.array([8 - side / 2, 8 - side / 2, 8 + side / 2, 8 + side / 2])
    aligned = align_face(image, box, None, 48)
    assert ENLARGE == cv2.INTER_CUBIC
    matrix = np.float64([[3, 0, 0], [0, 3, 0]])  # what the box above maps to
    for flags, same in ((cv2.INTER_CUBIC, True), (cv2.INTER_LINEAR, False)):
        expected = cv2.warpAffine(image, matrix, (48, 48), flags=flags, borderMode=cv2.BORDER_REPLICATE)
        assert (np.abs(aligned.astype(int) - cv2.cvtColor(expected, cv2.COLOR_RGB2GRAY)).max() <= 1) == same
    # The family's 16 px face: shrunk by area averaging, enlarged by the same interpolation.
    cubic = cv2.resize(small, (48, 48), interpolation=cv2.INTER_CUBIC)
    assert np.array_equal(downscale(face[None], 16)[0], cubic)
    assert not np.array_equal(downscale(face[None], 16, cv2.INTER_LINEAR)[0], cubic)


def test_unknown_names_and_steps_are_refused(crops):
    with pytest.raises(EmoLensError, match="choose one of"):
        degrade(crops[0][:2], "fog")
    with pytest.raises(EmoLensError, match="unknown degradation step"):
        apply_ops(crops[0][:2], [("fog", 1.0)], np.random.default_rng(0))


def test_training_draws_cover_the_family_and_respect_the_rate(crops):
    for ops in FAMILY.values():
        for kind, strength in ops:
            lo, hi = TRAIN_RANGES[kind]
            assert lo <= strength <= hi or (kind == "gain" and strength == 1.0), (kind, strength)
    x = crops[0][:200]
    assert np.array_equal(random_degrade(x, 0.0, np.random.default_rng(0)), x)
    changed = (random_degrade(x, 0.4, np.random.default_rng(0)) != x).any(axis=(1, 2)).mean()
    assert 0.25 < changed < 0.55
    assert (random_degrade(x, 1.0, np.random.default_rng(0)) != x).any(axis=(1, 2)).all()


def test_weights_favour_kinds_and_bad_weights_are_refused(crops):
    def share_of_scale(weights):
        odds, rng = kind_odds(weights), np.random.default_rng(0)
        return np.mean([any(k == "scale" for k, _ in random_ops(rng, odds)) for _ in range(3000)])

    assert kind_odds({}) is None
    even, favoured = share_of_scale({}), share_of_scale({"scale": 3})
    assert 0.25 < even < 0.33 and favoured > 1.8 * even  # two kinds of seven on average; three times the odds
    assert share_of_scale({"scale": 0}) == 0
    # equal weights draw exactly what no weights draw
    x = crops[0][:40]
    same = random_degrade(x, 0.8, np.random.default_rng(5), {"blur": 1})
    assert np.array_equal(same, random_degrade(x, 0.8, np.random.default_rng(5)))
    for bad in ({"fog": 2}, {"scale": -1}, dict.fromkeys(TRAIN_RANGES, 0) | {"blur": 1, "jpeg": 1}):
        with pytest.raises(EmoLensError, match="degradation weights"):
            kind_odds(bad)


def test_robustness_measures_every_member_and_scores_their_mean(crops):
    from emolens.evaluate.robustness import robustness

    images, labels, classes = crops
    seen = []
    r = robustness("fast", images, labels, classes, progress=seen.append)
    assert seen == list(FAMILY) and [row["degradation"] for row in r["degradations"]] == list(FAMILY)
    acc = {row["degradation"]: row["accuracy"] for row in r["degradations"]}
    assert r["score"] == pytest.approx(np.mean(list(acc.values())))
    # the shipped fast model reads clean faces far better than heavily blurred or tiny ones
    assert r["clean"]["accuracy"] > 0.5 and acc["blur-2.0"] < r["clean"]["accuracy"] - 0.1
    assert acc["scale-16px"] < acc["scale-32px"]
    row = next(row for row in r["degradations"] if row["degradation"] == "cctv")
    assert row["drop_points"] == pytest.approx(100 * (r["clean"]["accuracy"] - row["accuracy"]))
    assert r["worst_combination"] == max(
        x["drop_points"] for x in r["degradations"] if x["degradation"] in COMBINATIONS
    )
    again = robustness("fast", images, labels, classes, degradations=["noise-12"])
    assert again["degradations"][0]["accuracy"] == acc["noise-12"]  # seeded: the same noise every time


def test_robustness_on_labels_with_a_class_the_model_lacks(crops):
    """FER+ majority labels have contempt, which the 7-class `fast` lacks: refused, or those faces
    left out with ``drop_rows``, the others scored as usual."""
    from emolens.core.errors import BadLabelError
    from emolens.evaluate.robustness import robustness

    images, labels, classes = crops
    eight = [*classes, "contempt"]
    labels = labels.copy()
    labels[:10] = len(classes)  # ten faces called contempt
    with pytest.raises(BadLabelError, match="contempt"):
        robustness("fast", images, labels, eight, degradations=["noise-12"])
    r = robustness("fast", images, labels, eight, degradations=["noise-12"], drop_rows=True)
    rest = robustness("fast", images[10:], labels[10:], classes, degradations=["noise-12"])
    assert r["n"] == len(labels) - 10 and r["clean"] == rest["clean"]


def test_evaluate_command_reports_degradations(crops, tmp_path, emolens_home):
    from typer.testing import CliRunner

    from emolens.cli import app

    images, labels, classes = crops
    np.savez(tmp_path / "faces.npz", images=images[:80], labels=labels[:80], classes=np.array(classes))
    res = CliRunner().invoke(
        app, ["evaluate", "fast", str(tmp_path / "faces.npz"), "--degrade", "--json", str(tmp_path / "m.json")]
    )
    assert res.exit_code == 0, res.output
    assert "robustness score" in res.output and "webcam" in res.output and "cctv" in res.output
    import json

    report = json.loads((tmp_path / "m.json").read_text())
    assert len(report["robustness"]["degradations"]) == len(FAMILY)
    assert "ferplus" not in report  # no votes file beside faces.npz


def test_quality_score_falls_with_blur_size_and_darkness(crops):
    from emolens.image.quality import MIN_QUALITY, face_quality

    x = crops[0][:60]
    clean = np.array([face_quality(c, 120)["score"] for c in x])
    blurred = np.array([face_quality(c, 120)["score"] for c in degrade(x, "blur-2.0")])
    tiny = np.array([face_quality(c, 120)["score"] for c in degrade(x, "scale-16px")])
    assert np.median(clean) > 0.8 and (blurred < MIN_QUALITY).mean() > 0.8
    assert np.median(tiny) < np.median(clean) - 0.3
    black = np.full((48, 48), 3, np.uint8)
    assert face_quality(black)["exposure"] == 0 and face_quality(black)["contrast"] == 0
    assert face_quality(x[0], 10)["size"] == 0 and "size" not in face_quality(x[0])
    rgb = face_quality(np.repeat(x[0][..., None], 3, axis=-1), 120)
    assert rgb == face_quality(x[0], 120)


def test_a_face_too_poor_to_read_is_uncertain_in_results_json_and_api(crops):
    from emolens import Analyzer
    from emolens.image.io import load_image
    from emolens.pipeline.results import FaceRecord, FaceResult

    face = FaceResult(box=np.array([0, 0, 20, 20.0]), score=0.9, landmarks=None, probs={"happy": 0.8, "sad": 0.2})
    face.quality = {"score": 0.05, "sharpness": 0.05, "size": 0.3}
    assert face.label == "uncertain" and face.top_label == "happy" and face.confidence == 0.8
    d = face.to_dict()
    assert d["quality"]["score"] == 0.05 and d["uncertain"] and d["reason"] == "blurry"
    assert FaceRecord(**d).quality == d["quality"]

    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "src" / "emolens" / "assets" / "examples" / "astronaut.jpg"
    analyzer = Analyzer(detector="retinaface")
    sharp = analyzer(str(example))[0]
    assert sharp.quality["score"] > 0.8 and sharp.label != "uncertain"
    image = load_image(example)
    import cv2

    soft = cv2.GaussianBlur(image, (0, 0), 6)  # a face far out of focus: found, but too soft to read
    result = analyzer(soft)
    assert result.faces, "the detector still finds the blurred face"
    assert result[0].quality["sharpness"] < 0.1 and result[0].label == "uncertain"
    assert result.to_json() and result[0].top_label in result[0].probs
