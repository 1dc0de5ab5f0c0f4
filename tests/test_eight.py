"""Eight emotions and per-class offsets: an 8-label model (`fast8`) through training, analysis, feedback
and the browser app; its 7-class answer on request (``fast8:7``); offsets stored in a model's metadata and
applied the same way in Python and in the browser's JavaScript; the FER+ figures first in `emolens models`
and in the cards."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from emolens.data.schemas import FER7, FERPLUS8
from emolens.workspace import Workspace
from test_serve import EXAMPLE, running_server

NODE = shutil.which("node")
STATIC = Path(__import__("emolens.webapp", fromlist=["x"]).__file__).parent / "static"


def test_a_grown_head_keeps_the_trained_rows_and_starts_contempt_rare():
    """Fine-tuning a 7-class checkpoint into 8 classes keeps the 7 trained head rows (in the new order)
    and every other layer; only contempt's row is new, its bias the lowest of the old ones."""
    torch = pytest.importorskip("torch")
    from emolens.train.archs import create_arch
    from emolens.train.loop import _load_init

    torch.manual_seed(0)
    old = create_arch("vgg-tiny", 7).state_dict()
    grown = create_arch("vgg-tiny", 8)
    order = list(reversed(FER7)) + ["contempt"]  # another order: rows follow the labels, not positions
    _load_init(grown, old, init_labels=list(FER7), labels=order)
    new = grown.state_dict()
    w, b = next(k for k in old if k.endswith("weight") and old[k].shape[0] == 7), None
    b = w.replace("weight", "bias")
    for i, label in enumerate(order[:-1]):
        assert torch.equal(new[w][i], old[w][FER7.index(label)]) and new[b][i] == old[b][FER7.index(label)]
    assert new[b][7] == old[b].min()
    assert all(torch.equal(new[k], v) for k, v in old.items() if k not in (w, b))
    fresh = create_arch("vgg-tiny", 3)
    before = fresh.state_dict()[w].clone()
    _load_init(fresh, old, init_labels=list(FER7), labels=["x", "y", "z"])  # nothing in common: a fresh head
    assert torch.equal(fresh.state_dict()[w], before)


@pytest.fixture
def offset_model(tmp_path):
    """`fast` with offsets {angry: +1, neutral: -0.5} and temperature 1.5 in its metadata, and without."""
    from emolens.classify.emotion import EmotionModel
    from emolens.classify.modelfile import annotate

    plain = tmp_path / "plain.onnx"
    shutil.copy(Workspace.default().models.path("fast"), plain)
    meta = EmotionModel(plain).meta
    meta.offsets, meta.temperature = None, None
    annotate(plain, meta)
    meta.offsets, meta.temperature = {"angry": 1.0, "neutral": -0.5}, 1.5
    return plain, annotate(plain, meta, tmp_path / "shifted.onnx")


def _crops() -> np.ndarray:
    """The example photo's face, aligned at a few scales: real crops the model reads differently."""
    from emolens import Analyzer
    from emolens.image.align import align_face

    r = Analyzer(model="fast")(EXAMPLE)
    f = r[0]
    return np.stack([align_face(r.image, f.box + np.array([-1, -1, 1, 1]) * k * 3, None, 48, 1) for k in range(6)])


def test_offsets_shift_the_probabilities_and_travel_in_the_metadata(offset_model):
    from emolens.classify.emotion import EmotionModel, softmax
    from emolens.classify.modelfile import OFFSETS_KEY, ModelMeta, annotate
    from emolens.core.errors import ModelError

    plain, shifted = offset_model
    crops = _crops()
    p, q = EmotionModel(plain).predict(crops), EmotionModel(shifted).predict(crops)
    b = np.array([{"angry": 1.0, "neutral": -0.5}.get(c, 0.0) for c in FER7])
    expected = softmax(np.log(p) / 1.5 + b)
    assert np.abs(q - expected).max() < 1e-5 and np.abs(q - p).max() > 0.01
    meta = EmotionModel(shifted).meta
    assert meta.offsets == {"angry": 1.0, "neutral": -0.5} and OFFSETS_KEY in meta.to_props()
    meta.offsets = None
    annotate(shifted, meta)  # offsets belong to one model's logits: writing without them removes them
    assert OFFSETS_KEY not in EmotionModel(shifted).meta.to_props()
    props = meta.to_props()
    for bad, message in (({"bored": 1}, "does not have"), ({"angry": 11}, r"\[-10, 10\]"), ([1, 2], "JSON object")):
        with pytest.raises(ModelError, match=message):
            ModelMeta.from_props({**props, OFFSETS_KEY: json.dumps(bad)})


def _node(script: str, *args: str) -> object:
    r = subprocess.run(
        [NODE, "--input-type=module", "-e", script, *args], capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(r.stdout)


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_the_browser_pipeline_applies_offsets_and_temperature_as_python_does(offset_model, tmp_path):
    """pipeline.js reads the offsets and the temperature from the model file's bytes and turns the
    network's logits into Python's probabilities."""
    import onnxruntime as ort

    from emolens.classify.emotion import EmotionModel

    _, shifted = offset_model
    model = EmotionModel(shifted)
    crops = _crops()
    session = ort.InferenceSession(str(shifted), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: model.preprocess(crops)})[0]
    (tmp_path / "logits.json").write_text(json.dumps(logits.tolist()))
    script = f"""
        import {{ readFileSync }} from 'node:fs';
        const P = await import('{(STATIC / "pipeline.js").as_uri()}');
        const meta = P.modelMeta(P.readOnnxMetadata(new Uint8Array(readFileSync(process.argv[1]))));
        const rows = JSON.parse(readFileSync(process.argv[2], 'utf8'));
        console.log(JSON.stringify({{labels: meta.labels, offsets: meta.offsets,
                                    probs: rows.map((r) => P.scaleProbabilities(r, meta))}}));"""
    out = _node(script, str(shifted), str(tmp_path / "logits.json"))
    assert out["labels"] == list(FER7) and out["offsets"] == {"angry": 1.0, "neutral": -0.5}
    assert np.abs(np.array(out["probs"]) - model.predict(crops)).max() < 1e-5


def test_an_eight_label_model_answers_eight_and_seven_on_request(emolens_home, tmp_path):
    """`fast8` answers with contempt; `fast8:7` drops contempt before the argmax and renormalises,
    alone, in an ensemble and with TTA; a model without all of FER2013's classes cannot answer :7."""
    from emolens import Analyzer
    from emolens.core.errors import BadLabelError

    analyzer = Analyzer(model="fast8")
    eight = analyzer(EXAMPLE)
    assert list(eight[0].probs) == list(FERPLUS8) and analyzer.labels == list(FERPLUS8)
    analyzer = Analyzer(model="fast8:7")
    seven = analyzer(EXAMPLE)
    assert analyzer.labels == list(FER7) and list(seven[0].probs) == list(FER7) and seven.model == "fast8:7"
    p8 = np.array([eight[0].probs[c] for c in FER7])
    assert np.abs(np.array(list(seven[0].probs.values())) - p8 / p8.sum()).max() < 1e-5
    assert seven[0].label == max(FER7, key=lambda c: eight[0].probs[c])
    both = Analyzer(model="fast8:7+fast")(EXAMPLE)
    assert list(both[0].probs) == list(FER7)
    assert Workspace.default().models.load("fast8:7", tta=True).labels == list(FER7)
    from emolens.classify.emotion import EmotionModel
    from emolens.classify.modelfile import annotate

    meta = EmotionModel(Workspace.default().models.path("fast")).meta
    meta.labels = [("contempt" if c == "sad" else c) for c in meta.labels]  # 7 outputs, no sad
    other = annotate(Workspace.default().models.path("fast"), meta, tmp_path / "no_sad.onnx")
    with pytest.raises(BadLabelError, match="no sad.*cannot answer"):
        Workspace.default().models.load(f"{other}:7")
    with pytest.raises(BadLabelError, match="must share labels"):
        _ = Workspace.default().models.load("fast8+fast").labels  # 8 and 7 labels do not average: ask for fast8:7


def test_feedback_takes_contempt_for_an_eight_label_model(emolens_home):
    from emolens.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["feedback", "add", str(EXAMPLE), "--label", "contempt", "--model", "fast8"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["feedback", "list", "--json", "-"])
    assert r.exit_code == 0, r.output
    (row,) = json.loads(r.stdout)
    assert row["label"] == "contempt" and row["predicted"] in FERPLUS8 and row["model_version"] == "fast8"


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_the_web_app_serves_an_eight_label_model_whose_labels_and_offsets_the_page_reads(tmp_path):

    with running_server(tmp_path / "home") as (url, _):
        config = httpx.get(f"{url}/app/config.json", params={"model": "fast8"}).json()
        assert config["model"]["name"] == "fast8"
        body = httpx.get(url + config["model"]["url"]).content
    assert body == Workspace.default().models.path("fast8").read_bytes()
    (tmp_path / "m.onnx").write_bytes(body)
    script = f"""
        import {{ readFileSync }} from 'node:fs';
        const P = await import('{(STATIC / "pipeline.js").as_uri()}');
        const meta = P.modelMeta(P.readOnnxMetadata(new Uint8Array(readFileSync(process.argv[1]))));
        console.log(JSON.stringify({{labels: meta.labels, offsets: meta.offsets}}));"""
    out = _node(script, str(tmp_path / "m.onnx"))
    assert out["labels"] == list(FERPLUS8) and "contempt" in (out["offsets"] or {})


def test_models_lists_ferplus_then_fer2013_then_subtle(emolens_home):
    from emolens.cli import app

    r = CliRunner().invoke(app, ["models", "--json", "-"])
    models = {m["name"]: m for m in json.loads(r.stdout)["models"]}
    fast = models["fast"]
    assert 0.78 < fast["ferplus_accuracy"] < 0.9 and 0.6 < fast["accuracy"] < 0.7 and 0 < fast["subtle_accuracy"] < 0.6
    assert models["fast8"]["labels"] == list(FERPLUS8)
    r = CliRunner().invoke(app, ["models"], env={"COLUMNS": "200"})
    header = next(line for line in r.output.splitlines() if "FER2013" in line)
    assert header.index("FER+") < header.index("FER2013") < header.index("subtle")


def test_cards_lead_with_ferplus_and_show_the_subtle_faces(shared_datasets, tmp_path):
    """A card written from PublicTest with its votes: FER+ first, FER2013 second, the subtle faces third,
    and the subtle faces are exactly those whose FER2013 label is an emotion and FER+ majority neutral."""
    from emolens.data.ferplus import load_ferplus
    from emolens.evaluate.ferplus import subtle_faces
    from emolens.train.card import render_card

    fer = shared_datasets / "fer2013"
    _, labels, classes = subtle_faces(fer / "val.npz", fer / "val_ferplus.npz")
    with np.load(fer / "val.npz") as z:
        names, y13 = z["names"], z["labels"]
    plus = load_ferplus(fer / "val.npz")
    assert "neutral" not in {classes[i] for i in labels} and 300 < len(labels) < len(plus.labels)
    assert len(labels) < (y13 != classes.index("neutral")).sum() and len(names) == len(y13)
    m = {
        "dataset": "PublicTest", "n": 10, "accuracy": 0.64, "macro_f1": 0.59, "per_class_recall": {"angry": 0.5},
        "ferplus": {"accuracy": 0.81, "macro_f1": 0.72, "n": 9, "per_class_recall": {"angry": 0.8, "contempt": 0.1},
                    "per_class_precision": {"angry": 0.7, "contempt": 0.5}},
        "subtle": {"accuracy": 0.22, "n": 5, "read_neutral": 0.65},
    }  # fmt: skip
    text = render_card({"name": "x", "metrics": m}, list(FERPLUS8), {"size": 48, "channels": 1, "range": 255,
                       "mean": [0.5], "std": [0.5], "layout": "NCHW"})  # fmt: skip
    assert text.index("FER+ majority") < text.index("own labels (FER2013") < text.index("subtle expressions")
    assert "| contempt | 0.100 | 0.500 | — |" in text and "read as neutral on 65.0%" in text


def test_an_eight_label_shadow_is_judged_on_the_labels_both_models_have(shared_datasets, emolens_home):
    """The shadow `fast8` against the active 7-label `fast`: not refused; the gates score its 7-class
    answer (contempt dropped before the argmax). Models that share no superset of labels are refused."""
    from emolens.classify.emotion import EmotionModel
    from emolens.classify.modelfile import annotate
    from emolens.core.errors import RefusedError
    from emolens.shadow.promote import promote_shadow

    with np.load(shared_datasets / "fer2013" / "val.npz") as z:
        pick = np.random.default_rng(0).choice(len(z["labels"]), 300, replace=False)
        np.savez(emolens_home / "part.npz", images=z["images"][pick], labels=z["labels"][pick], classes=z["classes"])
    outcome = promote_shadow(Workspace.default(), "fast8", base_val=emolens_home / "part.npz")
    assert outcome.judged_on == list(FER7) and outcome.metrics["shadow"]["base"]["n"] == 300
    assert 0.5 < outcome.metrics["shadow"]["base"]["accuracy"] < 0.8 and not outcome.promoted
    meta = EmotionModel(Workspace.default().models.path("fast")).meta
    meta.labels = [("contempt" if c == "sad" else c) for c in meta.labels]
    other = annotate(Workspace.default().models.path("fast"), meta, emolens_home / "models" / "no_sad.onnx")
    with pytest.raises(RefusedError, match="neither all of the other's"):
        promote_shadow(Workspace.default(), str(other), base_val=emolens_home / "part.npz")
