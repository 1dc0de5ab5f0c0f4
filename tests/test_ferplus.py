"""FER+ votes: the loader, its training modes, and scoring on both label sets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from emolens.core.errors import BadLabelError, EmoLensError
from emolens.data import FERPLUS8
from emolens.data.datasets import FaceDataset
from emolens.data.ferplus import (
    VOTE_COLUMNS,
    blend_votes,
    load_ferplus,
    majority,
    training_targets,
    vote_distribution,
)

ASSETS_MODEL = "fast"


@pytest.fixture(scope="module")
def fer(shared_datasets):
    return shared_datasets / "fer2013"


def _votes(**counts) -> np.ndarray:
    row = np.zeros(10, dtype=np.uint8)
    for k, v in counts.items():
        row[VOTE_COLUMNS.index(k)] = v
    return row


def test_majority_follows_the_ferplus_rule():
    votes = np.stack(
        [
            _votes(happiness=5, neutral=3, unknown=1, NF=1),  # single votes ignored: 5 of 8
            _votes(happiness=4, neutral=4, sadness=2),  # a tie: no majority
            _votes(unknown=6, neutral=4),  # majority unknown: dropped
            _votes(contempt=6, anger=2, disgust=2),
            _votes(surprise=3, fear=2, sadness=2, anger=2, neutral=1),  # 3 of 9 is no majority
        ]
    )
    top, ok = majority(votes)
    assert ok.tolist() == [True, False, False, True, False]
    assert [VOTE_COLUMNS[i] for i in top[ok]] == ["happiness", "contempt"]
    dist = vote_distribution(votes[:1])
    assert dist[0, FERPLUS8.index("happy")] == pytest.approx(5 / 8) and dist.sum() == pytest.approx(1)


def test_loader_keeps_what_the_paper_keeps(fer):
    train = load_ferplus(fer / "train.npz")
    assert train.classes == list(FERPLUS8) and len(train) == 28709 - 3650
    counts = train.counts()
    assert (counts["neutral"], counts["happy"], counts["surprise"], counts["contempt"]) == (8739, 7287, 3149, 119)
    assert train.soft.shape == (len(train), 8) and np.allclose(train.soft.sum(1), 1)
    assert (train.soft.argmax(1) == train.labels).all()
    assert training_targets(train, "majority") is train.labels and training_targets(train, "distribution") is train.soft
    with pytest.raises(EmoLensError, match="label mode"):
        training_targets(train, "vote")
    half = train.subset(np.arange(100))  # splits carry the votes along
    assert np.array_equal(half.soft, train.soft[:100])


def test_blending_votes_keeps_every_face_and_its_own_labels(tmp_path):
    from emolens.data import FER7

    votes = np.stack(
        [
            _votes(sadness=6, fear=4),  # FER2013 says fear: half of it goes to the votes' sad
            _votes(contempt=8, anger=2),  # contempt is no FER2013 class: what is left is anger
            _votes(unknown=9, NF=1),  # no emotion votes: the one-hot stays
            _votes(happiness=10),  # status 3 (not a face for FER+): the one-hot stays
        ]
    )
    np.savez(tmp_path / "v.npz", votes=votes, status=np.array([0, 0, 0, 3], dtype=np.int8))
    labels = np.array([FER7.index(c) for c in ("fear", "disgust", "neutral", "surprise")])
    data = FaceDataset(classes=list(FER7), labels=labels, images=np.zeros((4, 48, 48), np.uint8))
    out = blend_votes(data, tmp_path / "v.npz", 0.5)
    assert len(out) == 4 and out.classes == list(FER7) and np.array_equal(out.labels, labels)
    assert np.allclose(out.soft.sum(1), 1)
    row = dict(zip(FER7, out.soft[0], strict=True))
    assert row["fear"] == pytest.approx(0.5 + 0.5 * 0.4) and row["sad"] == pytest.approx(0.5 * 0.6)
    assert out.soft[1, FER7.index("angry")] == pytest.approx(0.5) and out.soft[1, FER7.index("disgust")] == 0.5
    assert np.array_equal(out.soft[2:], np.eye(7)[labels[2:]])
    assert np.array_equal(blend_votes(data, tmp_path / "v.npz", 0).soft, np.eye(7)[labels])
    with pytest.raises(EmoLensError, match="in \\[0, 1\\]"):
        blend_votes(data, tmp_path / "v.npz", 1.5)
    with pytest.raises(BadLabelError, match="row"):
        blend_votes(data.subset(np.arange(3)), tmp_path / "v.npz", 0.5)


def test_votes_must_match_the_images_row_for_row(fer, tmp_path):
    with np.load(fer / "val_ferplus.npz") as z:
        v = {k: z[k] for k in z.files}
    with np.load(fer / "val.npz") as z:
        x = {k: z[k] for k in z.files}
    np.savez(tmp_path / "val.npz", **x)
    swapped = dict(v, names=v["names"][::-1].copy())
    np.savez(tmp_path / "val_ferplus.npz", **swapped)
    with pytest.raises(BadLabelError, match="row 0 of"):
        load_ferplus(tmp_path / "val.npz")
    np.savez(tmp_path / "short.npz", **{k: (a[:10] if a.shape[:1] == (3589,) else a) for k, a in v.items()})
    with pytest.raises(BadLabelError, match="row for row"):
        load_ferplus(tmp_path / "val.npz", tmp_path / "short.npz")
    with pytest.raises(EmoLensError, match="no FER\\+ votes file"):
        load_ferplus(tmp_path / "val.npz", tmp_path / "missing.npz")


def test_a_model_with_more_labels_drops_them_before_the_argmax(fer, tmp_path):
    pytest.importorskip("onnx")
    from emolens.classify import EmotionModel
    from emolens.classify.modelfile import annotate
    from emolens.evaluate import evaluate_arrays
    from emolens.workspace import Workspace

    src = Workspace.default().models.path(ASSETS_MODEL)
    meta = EmotionModel(src).meta
    meta.labels = [("contempt" if c == "sad" else c) for c in meta.labels]  # 7 outputs, one the data lack
    annotate(src, meta, tmp_path / "with_contempt.onnx")
    with np.load(fer / "val.npz") as z:
        classes = [str(c) for c in z["classes"]]
        keep = z["labels"] != classes.index("sad")
        images, labels = z["images"][keep][::10], z["labels"][keep][::10]
    report = evaluate_arrays(str(tmp_path / "with_contempt.onnx"), images, labels, classes)
    assert report["dropped_labels"] == ["contempt"]
    probs = EmotionModel(src).predict(images)
    probs[:, classes.index("sad")] = 0  # the output now named contempt never wins
    assert report["accuracy"] == pytest.approx(float((probs.argmax(1) == labels).mean()))


def test_scoring_on_ferplus_majority_labels(fer):
    from emolens.evaluate.ferplus import evaluate_ferplus, ferplus_votes_for

    assert ferplus_votes_for(fer / "val.npz") == fer / "val_ferplus.npz"
    r = evaluate_ferplus(ASSETS_MODEL, fer / "val.npz", fer / "val_ferplus.npz")
    assert r["n_unscorable"] == 13 and r["n"] == 3199 - 13  # the contempt faces: fast has 7 classes
    assert "contempt" not in r["labels"] and 0.6 < r["accuracy"] < 0.95


def test_soft_label_training_learns_eight_classes(fer, tmp_path):
    torch = pytest.importorskip("torch", reason="training tests need the train extra")
    from emolens.train.loop import TrainConfig, fit

    data = load_ferplus(fer / "val.npz")
    idx = np.random.default_rng(0).permutation(len(data))
    tr, va = data.subset(idx[:256]), data.subset(idx[256:320])
    cfg = TrainConfig(labels=list(FERPLUS8), epochs=2, batch_size=32, ema_decay=0.9, threads=1)
    cfg.augment.degrade = 0.3
    run = fit((tr.images, tr.soft), (va.images, va.labels), cfg, tmp_path / "run", progress=False)
    losses = [row["loss"] for row in run["history"]]
    assert losses[1] < losses[0]
    # a short fine-tune ships its final weights (BatchNorm re-estimated on clean crops), not their EMA
    from emolens.train.export import export_onnx
    from emolens.train.loop import final_weights

    ckpt = final_weights(tmp_path / "run" / "last.pt", tr.images, tmp_path / "final.pt")
    state, last = (torch.load(p, weights_only=False) for p in (ckpt, tmp_path / "run" / "last.pt"))
    assert state["config"]["weights"] == "final" and state["labels"] == list(FERPLUS8)
    conv = next(k for k in state["model"] if k.endswith("weight") and state["model"][k].dim() == 4)
    assert torch.equal(state["model"][conv], last["model"][conv])
    mean = next(k for k in state["model"] if k.endswith("running_mean"))
    assert not torch.equal(state["model"][mean], last["model"][mean])
    report = export_onnx(ckpt, tmp_path / "final.onnx")
    assert report["max_abs_diff"] < 1e-4 and report["card"]["recipe"]["weights"] == "final"
    bad = TrainConfig(labels=list(FERPLUS8)[:7], epochs=1)
    with pytest.raises(EmoLensError, match="8 columns but the model has 7"):
        fit((tr.images, tr.soft), (va.images, va.labels), bad, tmp_path / "bad", progress=False)


def test_the_probability_mode_draws_labels_from_the_votes():
    torch = pytest.importorskip("torch", reason="training tests need the train extra")
    from emolens.train.optim import draw_targets

    dist = torch.tensor([[0.7, 0.3, 0.0]]).repeat(4000, 1)
    torch.manual_seed(0)
    drawn = draw_targets(dist, "probability")
    assert drawn.dtype == torch.int64 and set(drawn.tolist()) == {0, 1}
    assert (drawn == 0).float().mean().item() == pytest.approx(0.7, abs=0.03)
    assert draw_targets(dist[:2], "distribution") is not None and draw_targets(dist[:2], "majority").tolist() == [
        0,
        0,
    ]


def test_train_and_evaluate_commands_use_the_votes(fer, tmp_path, emolens_home):
    pytest.importorskip("torch", reason="training tests need the train extra")
    from typer.testing import CliRunner

    from emolens.cli import app
    from emolens.data import FER7

    with np.load(fer / "val.npz") as z, np.load(fer / "val_ferplus.npz") as v:
        idx = np.sort(np.random.default_rng(2).choice(3589, 400, replace=False))
        np.savez(tmp_path / "faces.npz", **{k: (z[k][idx] if z[k].shape[:1] == (3589,) else z[k]) for k in z.files})
        votes = {k: (v[k][idx] if v[k].shape[:1] == (3589,) else v[k]) for k in v.files}
        np.savez(tmp_path / "faces_ferplus.npz", **votes)
    runner = CliRunner()
    res = runner.invoke(
        app,
        ["train", str(tmp_path / "faces.npz"), "--votes", str(tmp_path / "faces_ferplus.npz"), "--epochs", "1",
         "--set", "batch_size=64", "--set", "threads=1", "--out", str(tmp_path / "run")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    import torch

    state = torch.load(tmp_path / "run" / "best.pt", weights_only=False)
    assert state["labels"] == list(FERPLUS8) and state["config"]["label_mode"] == "distribution"

    res = runner.invoke(
        app,
        ["train", str(tmp_path / "faces.npz"), "--votes", str(tmp_path / "faces_ferplus.npz"),
         "--set", "vote_blend=0.5", "--epochs", "1", "--set", "batch_size=64", "--set", "threads=1",
         "--out", str(tmp_path / "blend")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    state = torch.load(tmp_path / "blend" / "best.pt", weights_only=False)
    assert state["labels"] == list(FER7) and state["config"]["vote_blend"] == 0.5  # FER2013's own 7 classes
    export = ["export", str(tmp_path / "blend" / "best.pt"), str(tmp_path / "blend.onnx")]
    res = runner.invoke(app, [*export, "--val", str(tmp_path / "faces.npz")])
    assert res.exit_code == 0, res.output
    card = (tmp_path / "blend.md").read_text()  # the votes beside faces.npz: the card scores both label sets
    assert "## Measured on faces.npz (n = 400)" in card and "on the FER+ majority labels of the same faces" in card

    res = runner.invoke(app, ["evaluate", "fast", str(tmp_path / "faces.npz"), "--json", str(tmp_path / "m.json")])
    assert res.exit_code == 0, res.output
    assert "FER+ majority labels" in res.output
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["ferplus"]["n"] + report["ferplus"]["n_unscorable"] <= 400
    res = runner.invoke(app, ["evaluate", "fast", str(tmp_path / "faces.npz"), "--votes", str(tmp_path / "nope.npz")])
    assert res.exit_code == 2 and "no FER+ votes file" in res.output
