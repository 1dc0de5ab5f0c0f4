"""Model files: name resolution, the ONNX metadata contract, and clear errors for broken models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from emolens import Analyzer
from emolens.classify import EmotionModel, InputSpec, ModelMeta
from emolens.classify.modelfile import CARD_KEY, INPUT_KEY, LABELS_KEY, OUTPUT_KEY, annotate
from emolens.core.errors import ModelError, ModelNotFoundError
from emolens.models import ASSETS, shipped_models
from emolens.workspace import Workspace

FAST = ASSETS / "fast.onnx"
EXAMPLE = ASSETS / "examples" / "astronaut.jpg"
FER_LABELS = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]

onnx = pytest.importorskip("onnx")


def with_props(path: Path, props: dict[str, str] | None) -> Path:
    """A copy of fast.onnx at ``path`` whose metadata_props are exactly ``props``."""
    model = onnx.load(str(FAST))
    del model.metadata_props[:]
    for k, v in (props or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(model, str(path))
    return path


def fast_props() -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(FAST)).metadata_props}


# --- missing and broken files ---------------------------------------------------------------


def test_unknown_name_lists_the_choices():
    with pytest.raises(ModelNotFoundError, match="no model named 'nonexistent'") as exc:
        Workspace.default().models.path("nonexistent")
    assert "fast" in str(exc.value) and ".onnx" in str(exc.value)
    assert exc.value.http_status == 404 and isinstance(exc.value, ModelError)


def test_missing_onnx_path(tmp_path):
    missing = tmp_path / "gone.onnx"
    with pytest.raises(ModelNotFoundError, match="model file not found") as exc:
        Workspace.default().models.path(missing)
    assert str(missing) in str(exc.value)
    with pytest.raises(ModelError, match="model file not found"):
        _ = EmotionModel(missing).meta


def test_a_folder_is_not_a_model(tmp_path):
    with pytest.raises(ModelNotFoundError, match="model file not found"):
        Workspace.default().models.path(tmp_path)


def test_analyzer_with_a_missing_model_fails_on_first_use():
    a = Analyzer(model="nonexistent")  # constructing loads nothing
    with pytest.raises(ModelNotFoundError, match="nonexistent"):
        _ = a.model


@pytest.mark.parametrize("content", [b"", b"\x08\x07garbage" * 100, np.random.default_rng(0).bytes(5000)])
def test_corrupt_onnx(tmp_path, content):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    with pytest.raises(ModelError, match="corrupt or not ONNX") as exc:
        _ = EmotionModel(bad).labels
    assert str(exc.value).startswith(f"cannot load model {bad}: ")


def test_onnx_without_emolens_metadata(tmp_path):
    bare = with_props(tmp_path / "bare.onnx", {})
    with pytest.raises(ModelError, match="lacks EmoLens metadata") as exc:
        _ = EmotionModel(bare).meta
    msg = str(exc.value)
    assert LABELS_KEY in msg and INPUT_KEY in msg and str(bare) in msg
    assert "emolens annotate" in msg  # says how to fix it


def test_onnx_lacking_only_the_labels(tmp_path):
    props = fast_props()
    del props[LABELS_KEY]
    with pytest.raises(ModelError, match="lacks EmoLens metadata") as exc:
        _ = EmotionModel(with_props(tmp_path / "m.onnx", props)).meta
    assert LABELS_KEY in str(exc.value) and INPUT_KEY not in str(exc.value)


@pytest.mark.parametrize(
    "key, value, match",
    [
        (LABELS_KEY, "[not json", "malformed"),
        (LABELS_KEY, "[]", "non-empty JSON list"),
        (LABELS_KEY, '"happy"', "non-empty JSON list"),
        (INPUT_KEY, '{"size": 48, "channels": 2}', "1 or 3 channels"),
        (INPUT_KEY, '{"size": 48, "layout": "CHWN"}', "NCHW or NHWC"),
        (INPUT_KEY, '{"size": 48, "colour": "grey"}', "malformed"),
        (OUTPUT_KEY, "scores", "'logits' or 'probabilities'"),
        (CARD_KEY, "{broken", "malformed"),
    ],
)
def test_malformed_metadata(tmp_path, key, value, match):
    props = fast_props()
    props[key] = value
    with pytest.raises(ModelError, match=match):
        _ = EmotionModel(with_props(tmp_path / "m.onnx", props)).meta


def test_label_count_mismatch(tmp_path):
    meta = EmotionModel(FAST).meta
    six = ModelMeta(labels=FER_LABELS[:6], input=meta.input, output=meta.output, card=meta.card)
    wrong = annotate(FAST, six, out=tmp_path / "six.onnx")
    with pytest.raises(ModelError, match="7 outputs but 6 labels") as exc:
        _ = EmotionModel(wrong).meta
    assert str(wrong) in str(exc.value)


# --- annotate -------------------------------------------------------------------------------


def test_annotate_round_trip(tmp_path):
    src = with_props(tmp_path / "plain.onnx", {"producer.note": "kept"})
    meta = ModelMeta(
        labels=list(reversed(FER_LABELS)),
        input=InputSpec(size=48, channels=1, mean=[0.4], std=[0.3], layout="NCHW", range=255.0),
        output="logits",
        card={"name": "roundtrip", "metrics": {"accuracy": 0.5}, "notes": ["ä", 1, None]},
    )
    out = annotate(src, meta, out=tmp_path / "annotated.onnx")
    back = EmotionModel(out).meta
    assert back.labels == meta.labels
    assert back.input == meta.input
    assert back.output == "logits" and back.card == meta.card
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert props["producer.note"] == "kept"  # other metadata survives
    assert json.loads(props[LABELS_KEY]) == meta.labels

    # In place, atomically: no temporary file is left behind.
    annotate(src, meta)
    assert EmotionModel(src).labels == meta.labels
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annotated.onnx", "plain.onnx"]


def test_annotated_labels_order_is_the_output_order(tmp_path):
    meta = EmotionModel(FAST).meta
    flipped = ModelMeta(labels=list(reversed(meta.labels)), input=meta.input, output=meta.output, card={})
    out = annotate(FAST, flipped, out=tmp_path / "flipped.onnx")
    crops = np.random.default_rng(0).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    p_fast, p_flipped = EmotionModel(FAST).predict(crops), EmotionModel(out).predict(crops)
    np.testing.assert_allclose(p_fast, p_flipped, atol=1e-6)  # same weights, same outputs...
    assert EmotionModel(out).labels[int(p_flipped[0].argmax())] == meta.labels[::-1][int(p_fast[0].argmax())]


# --- user models in $EMOLENS_HOME -----------------------------------------------------------


def test_user_model_by_name(emolens_home):
    mine = emolens_home / "models" / "mine.onnx"
    shutil.copyfile(FAST, mine)
    assert Workspace.default().models.path("mine") == mine
    assert (
        Workspace.default().models.available()["mine"] == mine
        and Workspace.default().models.available()["fast"] == FAST
    )
    assert Workspace.default().models.load("mine").labels == FER_LABELS
    res = Analyzer(model="mine")(EXAMPLE)
    assert res.model == "mine" and res.labels == ["happy"]


def test_user_model_cannot_shadow_a_shipped_name(emolens_home):
    impostor = with_props(emolens_home / "models" / "fast.onnx", {})
    assert impostor.is_file()
    assert Workspace.default().models.path("fast") == FAST


def test_no_user_models_folder(emolens_home):
    shutil.rmtree(emolens_home / "models")
    assert Workspace.default().models.available() == shipped_models()
    with pytest.raises(ModelNotFoundError, match="no model named 'mine'"):
        Workspace.default().models.path("mine")


# --- the shipped model ----------------------------------------------------------------------


# the default, the flagship and the one for real cameras; each has its PyTorch weights beside it
FP32_SHIPPED = ["fast", "accurate", "robust"]


@pytest.mark.parametrize("name", FP32_SHIPPED)
def test_shipped_model_is_complete(name):
    assert name in shipped_models(), f"{name}.onnx is not in {ASSETS}"
    m = Workspace.default().models.load(name)
    assert m.path == ASSETS / f"{name}.onnx"
    meta = m.meta
    assert meta.labels == FER_LABELS
    assert meta.input.size == 48 and meta.input.channels == 1
    assert meta.input.layout in ("NCHW", "NHWC") and meta.input.range > 0
    assert len(meta.input.mean) in (1, meta.input.channels) and all(s > 0 for s in meta.input.std)
    assert meta.output in ("logits", "probabilities")
    assert isinstance(meta.card, dict) and meta.card["name"] == name
    assert (ASSETS / f"{name}.pt").is_file() and (ASSETS / f"{name}.md").is_file()


def test_the_flagship_is_chosen_by_name_and_beats_the_default():
    fast, accurate = Workspace.default().models.load("fast").card, Workspace.default().models.load("accurate").card
    assert accurate["metrics"]["dataset"] == fast["metrics"]["dataset"]  # same yardstick: PublicTest
    assert accurate["metrics"]["accuracy"] > fast["metrics"]["accuracy"]
    assert accurate["metrics"]["macro_f1"] > fast["metrics"]["macro_f1"]
    res = Analyzer(model="accurate")(EXAMPLE)
    assert res.model == "accurate" and res.labels == ["happy"]


@pytest.mark.parametrize("name", FP32_SHIPPED)
def test_shipped_card_figures_are_reproduced(name, shared_datasets):
    """The accuracy a card states is what the model measures on the data the card names."""
    from emolens.data.datasets import load_npz
    from emolens.evaluate.core import member_probs, summarize

    val = shared_datasets / "fer2013" / "val.npz"
    if not val.is_file():
        pytest.skip(f"{val} not found")
    images, labels, classes = load_npz(val)
    m = Workspace.default().models.load(name)
    metrics = summarize(member_probs(m, images, classes), labels, classes)
    card = m.card["metrics"]
    assert card["n"] == len(labels)
    assert metrics["accuracy"] == pytest.approx(card["accuracy"], abs=1e-4)
    assert metrics["macro_f1"] == pytest.approx(card["macro_f1"], abs=1e-4)


def test_fast_predicts_probabilities():
    m = Workspace.default().models.load("fast")
    crops = np.random.default_rng(0).integers(0, 256, (5, 48, 48), dtype=np.uint8)
    p = m.predict(crops, batch_size=2)  # several batches
    assert p.shape == (5, 7) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(p, m.predict(crops), atol=1e-6)
    assert m.predict(np.zeros((0, 48, 48), np.uint8)).shape == (0, 7)


def test_fast_card_reports_accuracy():
    card = Workspace.default().models.load("fast").card
    # REAL REQUIREMENT: the shipped `fast` model reaches at least 63% accuracy (FER2013), and its
    # model card says so in card["metrics"]["accuracy"]. This fails on the placeholder model.
    assert card.get("metrics", {}).get("accuracy", 0.0) >= 0.63, f"card metrics: {card.get('metrics')}"
