"""Ensembles everywhere: one model resolver for `fast+accurate`, weights, labels matched by name,
mirror TTA as an analyzer option, and every member's version in the results (Python, CLI, video)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emolens import Analyzer
from emolens.core.errors import BadLabelError, ModelError
from emolens.image.align import align_face
from emolens.models import ASSETS, ModelSpec
from emolens.workspace import Workspace

EXAMPLE = ASSETS / "examples" / "astronaut.jpg"


def same(got: list[tuple[str, float]], expected: list[tuple[str, float]]) -> bool:
    return [n for n, _ in got] == [n for n, _ in expected] and [w for _, w in got] == pytest.approx(
        [w for _, w in expected]
    )


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


# --- the spec ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "members"),
    [
        ("fast", [("fast", 1.0)]),
        ("fast+accurate", [("fast", 0.5), ("accurate", 0.5)]),
        ("fast,accurate", [("fast", 0.5), ("accurate", 0.5)]),
        (["fast", "accurate"], [("fast", 0.5), ("accurate", 0.5)]),
        ("accurate*3+fast", [("accurate", 0.75), ("fast", 0.25)]),
        ({"fast": 1, "accurate": 3}, [("fast", 0.25), ("accurate", 0.75)]),
        ([("fast", 2), ("accurate", 2)], [("fast", 0.5), ("accurate", 0.5)]),
    ],
)
def test_every_form_of_a_spec(spec, members):
    assert same(_members(spec), members)


def test_canonical_text_round_trips():
    assert _spec_text(["fast", "accurate"]) == "fast+accurate"
    assert _spec_text({"fast": 1, "accurate": 3}) == "fast*0.25+accurate*0.75"
    assert same(_members(_spec_text("accurate*3+fast")), [("accurate", 0.75), ("fast", 0.25)])


@pytest.mark.parametrize("spec", ["fast*0", "fast*-1+accurate", "fast*x", "", "+"])
def test_bad_specs_say_what_is_wrong(spec):
    with pytest.raises(ModelError, match="weight|no model given"):
        _members(spec)


def test_a_file_with_a_plus_in_its_name_is_one_model(tmp_path):
    odd = tmp_path / "fast+v2.onnx"
    shutil.copyfile(ASSETS / "fast.onnx", odd)
    assert _members(str(odd)) == [(str(odd), 1.0)]
    assert Workspace.default().models.path(str(odd)) == odd


def test_an_ensemble_has_no_single_file():
    with pytest.raises(ModelError, match="is an ensemble: this needs a single model"):
        Workspace.default().models.path("fast+accurate")


# --- the analyzer ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def single():
    """The astronaut analysed by `fast` and by `accurate` alone."""
    return {name: Analyzer(model=name)(EXAMPLE) for name in ("fast", "accurate")}


def test_ensemble_is_the_weighted_mean_and_records_every_member(single):
    res = Analyzer(model="accurate*3+fast")(EXAMPLE)
    assert len(res) == 1
    face = res[0]
    for label, p in face.probs.items():
        expected = 0.75 * single["accurate"][0].probs[label] + 0.25 * single["fast"][0].probs[label]
        assert p == pytest.approx(expected, abs=1e-5)
    assert face.label == max(face.probs, key=face.probs.get)
    assert res.model == "accurate*0.75+fast*0.25"
    assert [(m["name"], m["weight"], m["sha256"]) for m in res.members] == [
        ("accurate", 0.75, sha(ASSETS / "accurate.onnx")),
        ("fast", 0.25, sha(ASSETS / "fast.onnx")),
    ]
    d = json.loads(res.to_json())
    assert d["members"] == res.members and d["model"] == res.model
    assert "members" not in single["fast"].to_dict()  # a single model is named by its version already


def test_mirror_tta_is_an_analyzer_option(single):
    analyzer = Analyzer(model="accurate", tta=True)
    res = analyzer(EXAMPLE)
    face, plain = res[0], single["accurate"][0]
    model = Workspace.default().models.load("accurate")
    crop = align_face(res.image, face.box, face.landmarks, 48, 1)[None]
    expected = (model.predict(crop) + model.predict(np.ascontiguousarray(crop[:, :, ::-1]))) / 2
    assert list(face.probs.values()) == pytest.approx(expected[0].tolist(), abs=1e-5)
    assert face.probs != plain.probs
    assert res.members == [
        {
            "name": "accurate",
            "sha256": sha(ASSETS / "accurate.onnx"),
            "card": "accurate",
            "weight": 1.0,
            "tta": "mirror",
        }
    ]


def test_labels_are_matched_by_name(tmp_path):
    """A member whose outputs are labelled in another order is put in the first member's order."""
    pytest.importorskip("onnx")
    from emolens.classify.modelfile import annotate

    fast = Workspace.default().models.load("fast")
    shuffled = list(reversed(fast.labels))
    meta = fast.meta
    other = annotate(ASSETS / "fast.onnx", type(meta)(labels=shuffled, input=meta.input), tmp_path / "reversed.onnx")
    crops = np.random.default_rng(0).integers(0, 256, (32, 48, 48), dtype=np.uint8)
    ens = Workspace.default().models.load(f"fast+{other}")
    p_fast, p_other = fast.predict(crops), Workspace.default().models.load(str(other)).predict(crops)
    happy = fast.labels.index("happy")
    expected = (p_fast[:, happy] + p_other[:, shuffled.index("happy")]) / 2
    assert ens.labels == fast.labels
    assert ens.predict(crops)[:, happy] == pytest.approx(expected, abs=1e-6)

    renamed = [*fast.labels[:-1], "contempt"]  # not the same label set
    bad = annotate(ASSETS / "fast.onnx", type(meta)(labels=renamed, input=meta.input), tmp_path / "other.onnx")
    with pytest.raises(BadLabelError, match="must share labels"):
        Analyzer(model=f"fast+{bad}")(EXAMPLE)


def test_evaluate_applies_the_weights(shared_datasets):
    from emolens.data.datasets import load_npz
    from emolens.evaluate import evaluate_arrays

    x, y, classes = load_npz(shared_datasets / "fer2013" / "val.npz")
    pick = np.random.default_rng(0).choice(len(y), 300, replace=False)  # val.npz is sorted by class
    x, y = x[pick], y[pick]
    report = evaluate_arrays("accurate*3+fast", x, y, classes)
    probs = 0.75 * Workspace.default().models.load("accurate").predict(x) + 0.25 * Workspace.default().models.load(
        "fast"
    ).predict(x)
    assert report["accuracy"] == pytest.approx(float(np.mean(probs.argmax(1) == y)))
    assert report["weights"] == pytest.approx([0.75, 0.25])


def test_video_takes_an_ensemble():
    from emolens.image.io import load_image
    from emolens.video import VideoAnalyzer

    frame = load_image(EXAMPLE)
    res = VideoAnalyzer(model="fast+accurate", detect_every=1).process(frame)
    assert len(res) == 1 and res[0].probs
    assert [m["name"] for m in res.members] == ["fast", "accurate"]


def test_cli_takes_an_ensemble_and_refuses_a_bad_one():
    env_cmd = [sys.executable, "-m", "emolens.cli", "analyze", str(EXAMPLE)]
    args = ["--model", "fast+accurate", "--tta", "--json", "-", "-q"]
    ok = subprocess.run([*env_cmd, *args], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    out = json.loads(ok.stdout)[0]
    assert out["model"] == "fast+accurate"
    assert [(m["name"], m["tta"]) for m in out["members"]] == [("fast", "mirror"), ("accurate", "mirror")]
    bad = subprocess.run([*env_cmd, "--model", "fast*0+accurate"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "weight of 'fast'" in bad.stderr and "Traceback" not in bad.stderr


def _members(spec):
    return list(ModelSpec.parse(spec).members)


def _spec_text(spec):
    return str(ModelSpec.parse(spec))
