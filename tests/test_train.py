"""Training code: a short real run on a slice of FER2013, export to ONNX and its parity."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training tests need the train extra: pip install -e '.[train]'")

from emolens.classify import EmotionModel  # noqa: E402
from emolens.train.archs import create_arch, list_archs  # noqa: E402
from emolens.train.augment import AugmentConfig, augment_batch, mixup_cutmix  # noqa: E402
from emolens.train.export import export_onnx, load_checkpoint  # noqa: E402
from emolens.train.loop import TrainConfig, fit  # noqa: E402


@pytest.fixture(scope="module")
def fer_slice(shared_datasets):
    rng = np.random.default_rng(0)
    with np.load(shared_datasets / "fer2013" / "train.npz") as z:
        idx = rng.choice(len(z["labels"]), 768, replace=False)
        train = z["images"][idx], z["labels"][idx]
    with np.load(shared_datasets / "fer2013" / "val.npz") as z:
        val = z["images"][:256], z["labels"][:256]
    return train, val


@pytest.mark.parametrize("name", list_archs())
def test_every_arch_maps_a_batch_to_logits(name):
    model = create_arch(name, num_classes=8, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 48, 48)).shape == (2, 8)


def test_unknown_arch_names_the_choices():
    with pytest.raises(KeyError, match="vgg-tiny"):
        create_arch("no-such-net")


def test_augmentation_keeps_shape_and_range_and_changes_pixels():
    torch.manual_seed(0)
    x = torch.rand(16, 1, 48, 48)
    y = augment_batch(x, AugmentConfig())
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    assert float((y - x).abs().mean()) > 0.01


def test_mixup_targets_are_distributions():
    x, labels = torch.rand(8, 1, 48, 48), torch.arange(8) % 7
    _, target = mixup_cutmix(x, labels, 7, mixup_alpha=0.4, cutmix_alpha=1.0)
    assert torch.allclose(target.sum(1), torch.ones(8))
    _, plain = mixup_cutmix(x, labels, 7)
    assert torch.equal(plain.argmax(1), labels)


def test_short_run_lowers_loss_resumes_and_exports_with_parity(fer_slice, tmp_path):
    train, val = fer_slice
    cfg = TrainConfig(arch="vgg-tiny", epochs=4, batch_size=64, lr=3e-3, ema_decay=0.9, threads=2)
    run = fit(train, val, cfg, tmp_path / "run", progress=False, stop_after=2)
    assert (tmp_path / "run" / "log.csv").read_text().count("\n") == 3  # header + 2 epochs
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000

    resumed = fit(train, val, cfg, tmp_path / "run", resume=tmp_path / "run" / "last.pt", progress=False)
    assert [row["epoch"] for row in resumed["history"]] == [0, 1, 2, 3]
    assert resumed["history"][:2] == run["history"]
    losses = [row["loss"] for row in resumed["history"]]
    assert losses[-1] < losses[0]

    report = export_onnx(tmp_path / "run" / "best.pt", tmp_path / "m.onnx", card={"name": "t"})
    assert report["max_abs_diff"] < 1e-4
    model = EmotionModel(tmp_path / "m.onnx")
    assert model.labels == cfg.labels and model.meta.input.size == 48
    assert model.card["name"] == "t" and model.card["mflops"] > 1
    probs = model.predict(val[0][:10])
    assert probs.shape == (10, 7) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_a_resumed_run_is_the_same_run_as_an_unbroken_one(fer_slice, tmp_path):
    # last.pt carries the RNG state: the resumed epochs draw the same batches, augmentations and dropout
    train, val = fer_slice
    cfg = TrainConfig(arch="vgg-tiny", epochs=2, batch_size=128, ema_decay=0.9, threads=2)
    whole = fit(train, val, cfg, tmp_path / "whole", progress=False)
    fit(train, val, cfg, tmp_path / "split", progress=False, stop_after=1)
    split = fit(train, val, cfg, tmp_path / "split", resume=tmp_path / "split" / "last.pt", progress=False)
    assert [r["loss"] for r in split["history"]] == pytest.approx([r["loss"] for r in whole["history"]], rel=1e-6)
    a, b = (torch.load(tmp_path / d / "last.pt", weights_only=False)["model"] for d in ("whole", "split"))
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)


def test_train_and_export_commands_write_a_model_with_its_card(fer_slice, tmp_path):
    from typer.testing import CliRunner

    from emolens.cli import app

    classes = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    (train_x, train_y), (val_x, val_y) = fer_slice
    np.savez(tmp_path / "train.npz", images=train_x, labels=train_y, classes=np.array(classes))
    np.savez(tmp_path / "val.npz", images=val_x, labels=val_y, classes=np.array(classes))
    runner = CliRunner()
    trained = runner.invoke(
        app,
        [
            "train",
            str(tmp_path / "train.npz"),
            "--val",
            str(tmp_path / "val.npz"),
            "--out",
            str(tmp_path / "run"),
            "--epochs",
            "2",
            "--stop-after",
            "1",  # a time-boxed run: one epoch of a two-epoch schedule
            "--set",
            "batch_size=64",
        ],
    )
    assert trained.exit_code == 0, trained.output
    assert len((tmp_path / "run" / "log.csv").read_text().splitlines()) == 2  # header and one epoch
    assert "batch_size: 64" in (tmp_path / "run" / "config.yaml").read_text()
    exported = runner.invoke(
        app,
        [
            "export",
            str(tmp_path / "run" / "best.pt"),
            str(tmp_path / "m.onnx"),
            "--val",
            str(tmp_path / "val.npz"),
            "--val-name",
            "slice",
            "--name",
            "tiny",
            "--selection",
            "It beat run 1 on the slice.",
            "--weights",
        ],
    )
    assert exported.exit_code == 0, exported.output
    slim = torch.load(tmp_path / "m.pt", weights_only=False)  # beside the .onnx, as explanations look for it
    assert "optimizer" not in slim and slim["config"]["batch_size"] == 64
    assert (tmp_path / "m.pt").stat().st_size < (tmp_path / "run" / "best.pt").stat().st_size / 2
    assert (tmp_path / "m.pt").stat().st_mode & 0o777 == 0o644  # a model file to share, unlike face data (0600)
    model, _ = load_checkpoint(tmp_path / "m.pt")
    assert sum(p.numel() for p in model.parameters()) > 0
    card = EmotionModel(tmp_path / "m.onnx").card
    assert card["name"] == "tiny" and card["metrics"]["dataset"] == "slice" and card["metrics"]["n"] == 256
    assert card["training"]["epochs_planned"] == 2 and card["training"]["train_seconds"] is not None
    text = (tmp_path / "m.md").read_text()
    assert "Model card: `tiny`" in text and f"{card['metrics']['accuracy']:.4f}" in text
    assert "- **Recipe**: 2 epochs, batch 64" in text
    assert "- **Validation protocol**: the file val.npz (n = 256); the epoch was chosen on validation accuracy" in text
    assert "; slice was scored once, after training. It beat run 1 on the slice\n" in text

    # A second run from the exported weights: its card tells both runs, and what the second changed
    data = ["train", str(tmp_path / "train.npz"), "--val", str(tmp_path / "val.npz")]
    again = [*data, "--out", str(tmp_path / "run2"), "--init", str(tmp_path / "m.pt"), "--epochs", "1"]
    trained = runner.invoke(app, [*again, "--set", "batch_size=64", "--set", "lr=0.001"])
    assert trained.exit_code == 0, trained.output
    first = torch.load(tmp_path / "run2" / "best.pt", weights_only=False)["lineage"]
    assert len(first) == 1 and first[0]["recipe"]["epochs"] == 2 and first[0]["best_epoch"] == 1
    assert first[0]["val_accuracy"] == pytest.approx(card["training"]["val_accuracy"])
    exported = runner.invoke(app, ["export", str(tmp_path / "run2" / "best.pt"), str(tmp_path / "m2.onnx"), *data[2:]])
    assert exported.exit_code == 0, exported.output
    text = (tmp_path / "m2.md").read_text()
    assert "- **Recipe**, in 2 runs: (1) from scratch, 2 epochs, batch 64" in text
    assert "(best epoch 1 of 2, validation accuracy" in text
    assert "(2) from the best weights of (1), changed: epochs 1, lr 0.001\n" in text
    assert "best epoch 1 of 1 of run (2)" in text


def test_card_lists_what_a_later_run_changed_not_settings_the_earlier_run_predates():
    from emolens.train.card import _recipe_line

    old = {"epochs": 24, "lr": 0.003}  # a config from before `vote_blend` and `teacher` existed
    new = {"epochs": 6, "lr": 0.003, "vote_blend": 0.5, "teacher": "", "distill_weight": 0.5}
    line = _recipe_line(new, {}, [{"recipe": old, "best_epoch": 24, "epochs_planned": 24}])
    assert line.endswith("(2) from the best weights of (1), changed: epochs 6, vote_blend 0.5")


def test_yaml_config_with_overrides(tmp_path):
    from emolens.core.errors import EmoLensError
    from emolens.train.config import dump_config, load_config

    (tmp_path / "c.yaml").write_text("arch: vgg-small\nepochs: 30\naugment:\n  rotate_deg: 5\n")
    cfg = load_config(tmp_path / "c.yaml", ["epochs=3", "augment.hflip=0.0", "mixup_alpha=0.2"])
    assert (cfg.arch, cfg.epochs, cfg.mixup_alpha) == ("vgg-small", 3, 0.2)
    assert cfg.augment.rotate_deg == 5 and cfg.augment.hflip == 0.0
    (tmp_path / "back.yaml").write_text(dump_config(cfg))
    assert load_config(tmp_path / "back.yaml") == cfg
    with pytest.raises(EmoLensError, match="epoch"):
        load_config(None, ["epoch=3"])
    # YAML reads 5e-4 as text; a number setting takes it as the number it is
    cfg = load_config(None, ["lr=5e-4", "augment.degrade=1", "augment.degrade_weights={scale: 3}"])
    assert (cfg.lr, cfg.augment.degrade, cfg.augment.degrade_weights) == (5e-4, 1.0, {"scale": 3})
    for bad, match in (("lr=fast", "lr is a number"), ("augment.degrade_weights={fog: 2}", "degradation weights")):
        with pytest.raises(EmoLensError, match=match):
            load_config(None, [bad])


def test_weighted_sampling_balances_classes():
    from emolens.train.optim import epoch_order

    labels = torch.tensor([0] * 900 + [1] * 100)
    torch.manual_seed(0)
    drawn = labels[epoch_order(labels, 2, weighted=True)]
    assert len(drawn) == 1000 and 0.4 < float((drawn == 1).float().mean()) < 0.6
    assert sorted(epoch_order(labels, 2, weighted=False).tolist()) == list(range(1000))


def test_train_command_holds_out_a_stratified_share_without_val(fer_slice, tmp_path):
    from typer.testing import CliRunner

    from emolens.cli import app

    (train_x, train_y), _ = fer_slice
    six = ["angry", "fear", "happy", "neutral", "sad", "surprise"]
    keep = train_y != 1  # a 6-class dataset (no disgust): the model gets the data's own labels
    relabel = np.array([0, -1, 1, 2, 3, 4, 5])[train_y[keep]]
    np.savez(tmp_path / "six.npz", images=train_x[keep], labels=relabel, classes=np.array(six))
    result = CliRunner().invoke(
        app,
        ["train", str(tmp_path / "six.npz"), "--out", str(tmp_path / "run"), "--epochs", "1", "--val-fraction", "0.2"]
        + ["--set", "select_on=last"],
    )
    assert result.exit_code == 0, result.output
    assert "kept the final weights (epoch 1, validation accuracy" in result.output  # not "best validation last"
    state = torch.load(tmp_path / "run" / "best.pt", weights_only=False)
    assert state["labels"] == six and state["n_train"] == round(keep.sum() * 0.8)


def test_gradient_accumulation_steps_the_optimizer_every_n_batches(fer_slice, tmp_path):
    train, val = fer_slice
    cfg = TrainConfig(epochs=1, batch_size=64, accumulate=3, threads=2)
    fit(train, val, cfg, tmp_path / "run", progress=False)
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert state["scheduler"]["last_epoch"] == (len(train[1]) // 64) // 3


@pytest.fixture(scope="module")
def small_slice(fer_slice):
    """384 training and 64 validation faces: enough for a schedule to show, quick on a busy machine."""
    (xtr, ytr), (xva, yva) = fer_slice
    return (xtr[:384], ytr[:384]), (xva[::4], yva[::4])


def test_sgd_with_cosine_warmup_lowers_the_loss(small_slice, tmp_path):
    train, val = small_slice
    plain = AugmentConfig(hflip=0, rotate_deg=0, scale=(1.0, 1.0), translate=0, brightness=0, contrast=0, erase_p=0)
    cfg = TrainConfig(
        epochs=2,
        batch_size=32,  # 12 updates an epoch
        lr=0.02,
        weight_decay=5e-4,
        optimizer="sgd",
        schedule="cosine",
        warmup_epochs=0.5,
        augment=plain,
        dropout=0.0,
        ema_decay=0.9,
        threads=1,  # on a busy 2-core machine one thread is several times faster than two
    )
    run = fit(train, val, cfg, tmp_path / "run", progress=False)
    losses = [row["loss"] for row in run["history"]]
    assert losses[1] < losses[0] - 0.02
    # 6 warm-up updates to the peak, then a cosine over 18: a third of the way after epoch 1, 0 at the end
    assert run["history"][0]["lr"] == pytest.approx(0.02 * 0.75) and run["history"][1]["lr"] == pytest.approx(0)
    group = torch.load(tmp_path / "run" / "last.pt", weights_only=False)["optimizer"]["param_groups"][0]
    assert group["momentum"] == 0.9 and group["nesterov"] and group["weight_decay"] == 5e-4


def test_cosine_schedule_warms_up_linearly_then_decays():
    from emolens.train.optim import cosine_warmup

    factors = [cosine_warmup(s, warm=4, total=12) for s in range(13)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factors[4] == pytest.approx(1.0) and factors[8] == pytest.approx(0.5) and factors[12] == pytest.approx(0)
    assert all(a >= b for a, b in zip(factors[4:], factors[5:], strict=False))


def test_layer_decay_gives_early_blocks_smaller_learning_rates():
    from emolens.train.archs import layer_blocks
    from emolens.train.optim import param_groups

    model = create_arch("vgg-tiny")
    blocks = layer_blocks(model)
    assert len(blocks) == 5 and blocks[-1] == list(model.head.parameters())
    groups = param_groups(model, "all", TrainConfig(lr=1e-3, layer_decay=0.5))
    assert [g["lr"] for g in groups] == pytest.approx([1e-3 * 0.5**k for k in (4, 3, 2, 1, 0)])
    assert all(p.requires_grad for p in model.parameters())
    head = param_groups(model, "head", TrainConfig(lr=1e-3))
    assert len(head) == 1 and {id(p) for p in head[0]["params"]} == {id(p) for p in model.head.parameters()}
    assert [p.requires_grad for p in model.parameters()].count(True) == 2  # the head's weight and bias


def test_staged_finetuning_trains_the_head_first_then_all_layers(small_slice, tmp_path):
    from emolens.models import ASSETS

    train, val = small_slice
    init = torch.load(ASSETS / "fast.pt", weights_only=False)
    cfg = TrainConfig(
        epochs=2, stages="head:1,all:1", layer_decay=0.5, batch_size=32, lr=1e-3, ema_decay=0.9, threads=1
    )
    fit(train, val, cfg, tmp_path / "run", progress=False, stop_after=1, init=init["model"], init_labels=init["labels"])
    after_head = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    first_conv = "features.0.weight"
    assert torch.equal(after_head["model"][first_conv], init["model"][first_conv])
    assert torch.equal(after_head["model"]["features.1.running_mean"], init["model"]["features.1.running_mean"])
    assert not torch.equal(after_head["model"]["head.2.weight"], init["model"]["head.2.weight"])
    assert after_head["stage"] == 0 and len(after_head["optimizer"]["param_groups"]) == 1

    done = fit(train, val, cfg, tmp_path / "run", resume=tmp_path / "run" / "last.pt", progress=False)
    assert [row["stage"] for row in done["history"]] == ["head", "all"]
    after_all = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert not torch.equal(after_all["model"][first_conv], init["model"][first_conv])
    peaks = [g["max_lr"] for g in after_all["optimizer"]["param_groups"]]
    assert peaks == pytest.approx([1e-3 * 0.5**k for k in (4, 3, 2, 1, 0)])


def test_train_command_fine_tunes_a_checkpoint_on_new_labels(small_slice, tmp_path):
    from typer.testing import CliRunner

    from emolens.cli import app
    from emolens.models import ASSETS

    (train_x, train_y), _ = small_slice
    keep = train_y != 1
    six = ["angry", "fear", "happy", "neutral", "sad", "surprise"]
    relabel = np.array([0, -1, 1, 2, 3, 4, 5])[train_y[keep]]
    np.savez(tmp_path / "six.npz", images=train_x[keep], labels=relabel, classes=np.array(six))
    args = ["train", str(tmp_path / "six.npz"), "--out", str(tmp_path / "run"), "--init", str(ASSETS / "fast.pt")]
    result = CliRunner().invoke(app, [*args, "--stages", "head:1", "--set", "batch_size=64", "--set", "threads=1"])
    assert result.exit_code == 0, result.output
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    init = torch.load(ASSETS / "fast.pt", weights_only=False)["model"]
    assert state["labels"] == six and state["config"]["arch"] == "vgg-tiny" and state["config"]["epochs"] == 1
    assert state["model"]["head.2.weight"].shape == (6, 128)  # six rows, started from fast's rows of those labels
    assert torch.equal(state["model"]["features.0.weight"], init["features.0.weight"])

    clash = CliRunner().invoke(app, [*args, "--stages", "head:1,all:2", "--epochs", "5"])
    assert clash.exit_code == 2 and "add up to 3 epochs" in clash.output


def test_training_options_are_checked(tmp_path):
    from emolens.core.errors import EmoLensError
    from emolens.train.config import load_config

    cfg = load_config(None, ["stages=head:2,all:3", "optimizer=sgd", "schedule=cosine", "warmup_epochs=1"])
    assert (cfg.epochs, cfg.optimizer, cfg.schedule) == (5, "sgd", "cosine")
    (tmp_path / "c.yaml").write_text("stages: [head:1, all:2]\nlayer_decay: 0.7\n")
    assert load_config(tmp_path / "c.yaml").epochs == 3
    for bad, message in (
        ("optimizer=adam", "optimizer"),
        ("schedule=step", "schedule"),
        ("stages=tail:2", "bad stage"),
        ("layer_decay=0", "layer_decay"),
    ):
        with pytest.raises(EmoLensError, match=message):
            load_config(None, [bad])


def test_timm_backbones_need_timm():
    from emolens.core.errors import MissingExtraError

    if importlib.util.find_spec("timm") is not None:
        model = create_arch("timm:resnet18", num_classes=7, in_channels=1).eval()
        with torch.no_grad():
            assert model(torch.zeros(1, 1, 48, 48)).shape == (1, 7)
        return
    with pytest.raises(MissingExtraError, match="pip install timm"):
        create_arch("timm:resnet18")
