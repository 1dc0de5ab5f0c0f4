"""`--detector none`: the whole image is the face, for faces already cropped (DeepFace's `skip`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from emolens.detect import create_detector, list_detectors
from emolens.pipeline.analyzer import Analyzer
from emolens.workspace import Workspace


@pytest.fixture(scope="module")
def crops(shared_datasets, tmp_path_factory):
    """Real FER2013 PublicTest crops as PNG files, and the crops themselves."""
    val = shared_datasets / "fer2013" / "val.npz"
    if not val.is_file():
        pytest.skip(f"{val} not found")
    with np.load(val) as z:
        images = z["images"][:24]
    folder = tmp_path_factory.mktemp("crops")
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"{i:02d}.png")
    return folder, images


def test_none_is_a_registered_detector():
    assert "none" in list_detectors()
    (face,) = create_detector("none")(np.zeros((30, 50, 3), np.uint8))
    assert face.box.tolist() == [0, 0, 50, 30] and face.score == 1.0


def test_a_crop_is_read_as_the_model_reads_it(crops):
    """Python API: every crop is one face, classified exactly as the model classifies the crop itself."""
    folder, images = crops
    direct = Workspace.default().models.load(str(Workspace.default().models.path("fast"))).predict(images)
    analyzer = Analyzer(model="fast", detector="none")
    for i, res in enumerate(analyzer.stream(sorted(folder.glob("*.png")))):
        (face,) = res.faces
        np.testing.assert_allclose(list(face.probs.values()), direct[i], atol=1e-6)


def test_cli_and_batch_read_every_crop(crops, tmp_path):
    folder, images = crops
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMOLENS_")} | {"EMOLENS_HOME": str(tmp_path)}

    def run(*args):
        return subprocess.run([sys.executable, "-m", "emolens.cli", *map(str, args)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip

    found = json.loads(run("analyze", folder, "--model", "fast", "--json", "-").stdout)
    missed = sum(1 for r in found if not r["faces"])
    assert missed > 0  # a detector finds no face in some tight 48 px crops: the reason for `none`
    proc = run("analyze", folder, "--model", "fast", "--detector", "none", "--json", "-")
    assert proc.returncode == 0, proc.stderr
    records = json.loads(proc.stdout)
    assert len(records) == len(images) and all(len(r["faces"]) == 1 for r in records)
    proc = run("batch", folder, tmp_path / "out", "--detector", "none", "--model", "fast", "--workers", "1", "-q")
    assert proc.returncode == 0, proc.stderr
    pq = pytest.importorskip("pyarrow.parquet")
    table = pq.read_table(tmp_path / "out").to_pylist()
    assert len(table) == len(images) and all(row["label"] for row in table)
