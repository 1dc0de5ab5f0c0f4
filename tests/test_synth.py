"""Synthetic faces (a tiny Stable Diffusion pipeline built here: no weights are downloaded), the
quality gates on real photos mixed with copies made worse, merging, cross-validation and tuning."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("torch")


def cli(*args: str):
    from emolens.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


# -- a tiny Stable Diffusion pipeline ------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> Path:
    """A randomly initialised pipeline from configs (UNet, VAE, CLIP text encoder and tokenizer,
    DDIM scheduler), saved as a local model folder: it draws noise, in seconds, on a CPU."""
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_sd")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz,.'-":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=77,
            projection_dim=16,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16),
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        sample_size=32,
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        scheduler=DDIMScheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    model = folder / "model"
    pipe.save_pretrained(model)
    return model


def test_generate_writes_images_and_a_reproducible_status(tiny_sd, tmp_path):
    import torch

    from emolens.synth import generate
    from emolens.synth.prompts import prompts_for

    torch.set_num_threads(1)
    out = tmp_path / "gen"
    report = generate(tiny_sd, out, ["disgust", "fear"], per_class=2, steps=2, size=32, progress=False)
    status = json.loads((out / "status.json").read_text())
    assert status["counts"] == {"disgust": {"generated": 2, "kept": 2}, "fear": {"generated": 2, "kept": 2}}
    assert status["model_hash"] == report.model_hash and len(status["prompts_hash"]) == 64
    assert [i["seed"] for i in status["images"][:2]] == [p.seed for p in prompts_for("disgust", 2, 0)]
    assert all("disgusted" in i["prompt"] for i in status["images"][:2]) and status["settings"]["steps"] == 2
    first = out / status["images"][0]["file"]
    assert Image.open(first).size == (32, 32)
    # The same run again redoes nothing (a run stopped half-way resumes) and asks for the same images.
    stamp = first.stat().st_mtime_ns
    again = generate(tiny_sd, out, ["disgust", "fear"], per_class=2, steps=2, size=32, progress=False)
    assert first.stat().st_mtime_ns == stamp and again.prompts_hash == report.prompts_hash
    # Another seed draws other people and other image seeds.
    assert prompts_for("fear", 3, seed=1) != prompts_for("fear", 3, seed=0)


def test_generate_without_a_model_says_what_to_provide(tmp_path):
    r = cli("generate", "--model", tmp_path / "nothing-here", "--out", tmp_path / "o")
    assert r.exit_code == 2
    assert "no Stable Diffusion model" in r.output and "downloads nothing" in r.output and "Traceback" not in r.output


# -- quality gates on real photos --------------------------------------------------------------
@pytest.fixture(scope="module")
def mixed(shared_datasets, tmp_path_factory) -> Path:
    """Real photos mixed with what a generator or a careless collection adds: a duplicate, a
    blurred and a dark copy, a group photo, a photo with no face, a face too small."""
    lfw = shared_datasets / "identity" / "lfw" / "people"
    photos = shared_datasets / "photos"
    root = tmp_path_factory.mktemp("mixed")
    happy, sad = root / "happy", root / "sad"
    happy.mkdir()
    sad.mkdir()
    a = sorted((lfw / "Al_Gore").glob("*.jpg"))
    b = sorted((lfw / "Angelina_Jolie").glob("*.jpg"))
    shutil.copy(a[0], happy / "a0.jpg")
    shutil.copy(a[1], happy / "a1.jpg")
    shutil.copy(b[0], sad / "b0.jpg")
    img = cv2.imread(str(a[0]))
    cv2.imwrite(str(happy / "a0_copy.png"), img)  # the same photo again, re-encoded
    cv2.imwrite(str(sad / "b0_blurred.jpg"), cv2.GaussianBlur(cv2.imread(str(b[0])), (0, 0), 6))
    cv2.imwrite(str(sad / "b0_dark.jpg"), (cv2.imread(str(b[0])) * 0.12).astype(np.uint8))
    shutil.copy(photos / "compreface" / "016_8.jpg", happy / "group.jpg")
    shutil.copy(photos / "compreface" / "017_0.jpg", sad / "noface.jpg")
    small = cv2.resize(cv2.imread(str(a[1])), (60, 60), interpolation=cv2.INTER_AREA)
    canvas = np.full((200, 200, 3), 128, np.uint8)
    canvas[70:130, 70:130] = small
    cv2.imwrite(str(sad / "small.png"), canvas)
    return root


def test_filter_keeps_good_photos_and_says_why_it_drops_the_rest(mixed, tmp_path):
    from emolens.data.quality import filter_images, write_filter_report

    report = filter_images(mixed, analyzer=gate_analyzer())
    outcome = {c.path: [r.split(":")[0] for r in c.reasons] for c in report.checks}
    assert outcome == {
        "happy/a0.jpg": [],
        "happy/a0_copy.png": ["duplicate"],
        "happy/a1.jpg": [],
        "happy/group.jpg": ["faces", "small face"],  # eight faces, the largest 40-odd px
        "sad/b0.jpg": [],
        "sad/b0_blurred.jpg": ["blurry"],
        # darkening also flattens the detail; the perceptual hash ignores brightness: b0 again
        "sad/b0_dark.jpg": ["blurry", "exposure", "flat", "duplicate"],
        "sad/noface.jpg": ["no face"],
        "sad/small.png": ["small face"],
    }, outcome
    dup = next(c for c in report.checks if c.path == "happy/a0_copy.png")
    assert dup.reasons == ["duplicate: near-duplicate of happy/a0.jpg"]
    assert report.kept_per_class() == {"happy": 2, "sad": 1}
    files = write_filter_report(report, tmp_path / "r")
    assert (tmp_path / "r" / "kept.txt").read_text().split() == ["happy/a0.jpg", "happy/a1.jpg", "sad/b0.jpg"]
    md = files["markdown"].read_text()
    assert (
        "| blurry | 2 |" in md and "| duplicate | 2 |" in md and len(list((tmp_path / "r" / "dropped").iterdir())) == 6
    )
    saved = json.loads(files["json"].read_text())
    assert saved["kept"] == 3 and saved["dropped_by_reason"]["no face"] == 1


def test_filter_against_the_training_set_and_the_agreement_gate(mixed, tmp_path):
    from emolens.data import load_image_folder
    from emolens.data.quality import Gates, filter_images, reference_hashes_of

    train = tmp_path / "train" / "happy"
    train.mkdir(parents=True)
    shutil.copy(mixed / "happy" / "a1.jpg", train / "x.jpg")
    gates = Gates(faces=False, min_sharpness=0, min_brightness=0, max_brightness=255, min_contrast=0)
    # No face gate: no analyzer, and the whole photo is hashed, as the training set's photos are.
    report = filter_images(mixed, gates, reference_hashes_of(load_image_folder(tmp_path / "train")))
    assert next(c for c in report.checks if c.path == "happy/a1.jpg").reasons == [
        "duplicate: near-duplicate of a training image"
    ]
    # The agreement gate: a face labelled with an emotion the model gives almost no probability.
    agree = Gates(
        faces=True,
        min_sharpness=0,
        min_brightness=0,
        max_brightness=255,
        min_contrast=0,
        duplicates=None,
        agreement="fast",
        min_agreement=0.99,
    )
    report = filter_images(mixed, agree, analyzer=gate_analyzer("fast"))
    checked = next(c for c in report.checks if c.path == "sad/b0.jpg")
    assert checked.agreement is not None and checked.agreement < 0.99
    assert any(r.startswith("disagreement: the model gives sad") for r in checked.reasons)


# -- generate -> filter -> merge -> train ------------------------------------------------------
def test_generate_filter_merge_train_end_to_end(tiny_sd, mixed, tmp_path):
    import torch

    torch.set_num_threads(1)
    real = tmp_path / "real"
    for label in ("happy", "sad"):
        (real / label).mkdir(parents=True)
    lfw_happy = sorted((mixed / "happy").glob("a*.jpg"))
    for i, p in enumerate(lfw_happy * 3):
        shutil.copy(p, real / "happy" / f"{i}.jpg")
    for i in range(6):
        shutil.copy(mixed / "sad" / "b0.jpg", real / "sad" / f"{i}.jpg")
    gen = tmp_path / "gen"
    r = cli(
        "generate",
        "--model",
        tiny_sd,
        "--out",
        gen,
        "--classes",
        "happy,sad",
        "--per-class",
        3,
        "--steps",
        1,
        "--size",
        32,
        "--no-filter",
    )
    assert r.exit_code == 0, r.output
    # Noise from an untrained model has no face: the face gate would drop it all. Check the rest.
    r = cli(
        "data",
        "filter",
        gen,
        "--report",
        tmp_path / "f",
        "--no-faces",
        "--min-sharpness",
        0,
        "--brightness",
        "0-255",
        "--min-contrast",
        0,
        "--duplicates",
        -1,
    )
    assert r.exit_code == 0, r.output
    assert len((tmp_path / "f" / "kept.txt").read_text().split()) == 6
    r = cli(
        "data",
        "merge",
        real,
        gen,
        "--kept",
        tmp_path / "f" / "kept.txt",
        "--out",
        tmp_path / "m",
        "--max-class-share",
        0.2,
        "--max-total-share",
        0.5,
        "--val-fraction",
        0.25,
    )
    assert r.exit_code == 0, r.output
    manifest = (tmp_path / "m" / "manifest.csv").read_text().splitlines()[1:]
    synthetic = [line for line in manifest if ",synthetic," in line]
    assert synthetic and all(line.endswith(",train") for line in synthetic)  # never in validation
    assert len(synthetic) == 2  # 20% cap: 4 or 5 real training images of a class allow 1 synthetic
    r = cli(
        "train",
        tmp_path / "m" / "train.csv",
        "--val",
        tmp_path / "m" / "val.csv",
        "--out",
        tmp_path / "run",
        "--set",
        "epochs=1",
        "--set",
        "batch_size=4",
        "--set",
        "threads=1",
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "run" / "best.pt").exists()


# -- cross-validation and tuning ---------------------------------------------------------------
@pytest.fixture(scope="module")
def fer_small(shared_datasets, tmp_path_factory) -> Path:
    fer = np.load(shared_datasets / "fer2013" / "train.npz")
    pick = np.random.default_rng(0).permutation(len(fer["labels"]))[:420]
    path = tmp_path_factory.mktemp("fer") / "small.npz"
    np.savez(path, images=fer["images"][pick], labels=fer["labels"][pick], classes=fer["classes"])
    return path


def test_cross_validation_reports_mean_and_std_and_keeps_fold_models(fer_small, tmp_path):
    r = cli("train", fer_small, "--cv", 3, "--out", tmp_path / "cv", "--set", "epochs=1", "--set", "threads=1")
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert [f["val"] for f in report["folds"]] == [140, 140, 140] and not report["grouped"]
    acc = [f["accuracy"] for f in report["folds"]]
    assert report["summary"]["accuracy"]["mean"] == pytest.approx(np.mean(acc))
    assert report["summary"]["accuracy"]["std"] == pytest.approx(np.std(acc, ddof=1))
    folds = [f["onnx"] for f in report["folds"]]
    assert "3-fold cross-validation" in r.output and "emolens evaluate" in r.output
    ev = cli("evaluate", ",".join(folds), fer_small)  # the existing ensemble support takes the folds
    rows = [line for line in ev.output.splitlines() if "│ no " in line]
    assert ev.exit_code == 0 and len(rows) == 4, ev.output  # three folds and their ensemble


def test_tuning_resumes_after_the_process_is_killed(fer_small, tmp_path, emolens_home):
    pytest.importorskip("optuna")
    space = tmp_path / "space.yaml"
    space.write_text("lr: {low: 1.0e-3, high: 1.0e-2, log: true}\nlabel_smoothing: {low: 0.0, high: 0.2}\n")
    args = [
        sys.executable,
        "-m",
        "emolens.cli",
        "tune",
        str(fer_small),
        "--space",
        str(space),
        "--name",
        "t",
        "--set",
        "epochs=1",
        "--set",
        "threads=1",
    ]
    folder = emolens_home / "tune" / "t"
    proc = subprocess.Popen(
        [*args, "--trials", "3"], env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    while not (folder / "trial_1").exists():  # killed inside the second trial
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = subprocess.run([*args, "--trials", "3"], env=os.environ.copy(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    import optuna

    study = optuna.load_study(study_name="t", storage=f"sqlite:///{folder / 'study.db'}")
    states = [t.state.name for t in study.trials]
    assert states.count("FAIL") == 1 and len([s for s in states if s in ("COMPLETE", "PRUNED")]) == 3, states
    best = (folder / "best.yaml").read_text()
    assert "lr:" in best and (folder / "history.png").exists()
    assert "train with them: emolens train" in done.stdout


def gate_analyzer(model: str = "fast"):
    """The analyzer the face and agreement gates use, as `emolens data filter` makes it."""
    from emolens import Analyzer

    return Analyzer(model, min_face_size=20)
