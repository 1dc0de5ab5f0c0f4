"""The GPU training kit on the CPU: scripts/gpu_pack.py packs FER2013 into parts that each fit one
device call, scripts/gpu_train.sh unpacks them, trains, exports and leaves what comes back in $OUT."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the training script needs the train extra: pip install -e '.[train]'")

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_packed_parts_train_and_export_a_model_on_the_cpu(shared_datasets, tmp_path):
    if shutil.which("bash") is None or shutil.which("timeout") is None:
        pytest.skip("scripts/gpu_train.sh needs bash and coreutils")
    pack, out = tmp_path / "pack", tmp_path / "out"
    packer = [sys.executable, str(REPO / "scripts" / "gpu_pack.py")]
    # 400 faces a split in parts of 1 MiB: the training images alone need two, as the full set does
    packed = subprocess.run(
        [*packer, "--data", str(shared_datasets / "fer2013"), "--out", str(pack), "--limit", "400"]
        + ["--budget-mib", "1", "--no-weights"],
        capture_output=True,
        text=True,
    )
    assert packed.returncode == 0, packed.stderr
    assert (pack / "part2" / "manifest.json").exists() and "carry each in its own call" in packed.stdout

    # a second call that reached a fresh machine: the first part is not there, and it says so
    (pack / "part1").rename(tmp_path / "away")
    missing = subprocess.run([*packer, "unpack", str(pack), str(tmp_path / "x")], capture_output=True, text=True)
    assert missing.returncode == 3 and "missing part1 of 2" in missing.stderr
    (tmp_path / "away").rename(pack / "part1")

    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "PYTHONPATH": str(REPO / "src"),
        "PACK": str(pack),
        "OUT": str(out),
        "CONFIG": "configs/flagship.yaml",
        "NAME": "tiny",
        "EPOCHS": "1",
        "LIMIT": "300",
        "SET": "arch=vgg-tiny augment.degrade=0.1",
    }
    run = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_train.sh")], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    back = sorted(p.name for p in out.iterdir())
    assert back == ["config.yaml", "log.csv", "tiny.md", "tiny.onnx", "tiny.pt", "train.log"]
    assert len(back) <= 8 and all(p.stat().st_size <= 16 * 2**20 for p in out.iterdir())  # what a call returns

    import torch

    from emolens.classify import EmotionModel

    state = torch.load(out / "tiny.pt", weights_only=False)
    assert state["n_train"] == 270 and state["config"]["device"] == "cpu" and state["config"]["arch"] == "vgg-tiny"
    card = EmotionModel(out / "tiny.onnx").meta.card
    assert card["metrics"]["dataset"] == "FER2013 PublicTest (val.npz)" and card["metrics"]["n"] == 400
    assert "epoch 1/1" in (out / "train.log").read_text()
