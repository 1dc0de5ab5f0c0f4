"""EDA on real FER2013 crops with planted exact and near duplicates and a corrupt file."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from emolens.data import FER7, load_dataset
from emolens.data.eda import explore, near_duplicate_pairs, phash, write_report


@pytest.fixture(scope="module")
def folder(shared_datasets, tmp_path_factory):
    root = tmp_path_factory.mktemp("eda")
    with np.load(shared_datasets / "fer2013" / "val.npz") as z:
        idx = np.random.default_rng(0).choice(len(z["labels"]), 60, replace=False)
        images, labels = z["images"][idx], z["labels"][idx]
    counts = {}
    for i, (im, y) in enumerate(zip(images, labels, strict=True)):
        (root / FER7[y]).mkdir(exist_ok=True)
        Image.fromarray(im).save(root / FER7[y] / f"{i:03d}.png")
        counts[FER7[y]] = counts.get(FER7[y], 0) + 1
    Image.fromarray(images[0]).save(root / FER7[labels[0]] / "exact_copy.png")  # identical pixels
    counts[FER7[labels[0]]] += 1
    brighter = np.clip(images[1].astype(int) + 6, 0, 255).astype(np.uint8)
    other = next(c for c in counts if c != FER7[labels[1]])
    Image.fromarray(brighter).save(root / other / "near_copy_other_label.png")  # same face, other label
    counts[other] += 1
    (root / FER7[labels[2]] / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root, images, labels, counts


def test_explore_counts_quality_duplicates_and_corrupt(folder, tmp_path):
    root, images, labels, counts = folder
    counts = dict(counts)
    counts[FER7[labels[2]]] += 1  # the corrupt file is counted under its class, and reported
    ds = load_dataset(root)
    stats = explore(ds)
    assert stats["n"] == 63 and stats["counts"] == counts
    nonzero = [v for v in stats["counts"].values() if v]
    assert stats["imbalance_ratio"] == pytest.approx(max(nonzero) / min(nonzero))
    assert stats["sizes"]["min"] == [48, 48] and stats["sizes"]["max"] == [48, 48]
    assert stats["modes"] == {"grey": 62}
    assert len(stats["corrupt"]) == 1 and "broken.png" in stats["corrupt"][0]["path"]
    assert stats["duplicates"]["exact_images"] == 1
    assert stats["duplicates"]["near_pairs_with_different_labels"] >= 1
    expected_brightness = np.mean(
        [im.mean() for im in images] + [images[0].mean()] + [np.clip(images[1].astype(int) + 6, 0, 255).mean()]
    )
    assert stats["quality"]["brightness"]["mean"] == pytest.approx(expected_brightness, abs=0.01)

    paths = write_report(stats, tmp_path / "report")
    text = paths["markdown"].read_text()
    assert "63 images" in text and "exact duplicates: 1" in text
    assert (tmp_path / "report" / "class_counts.png").stat().st_size > 1000
    assert "<table>" in paths["html"].read_text()
    assert json.loads(paths["json"].read_text())["n"] == 63


def test_perceptual_hash_is_robust_to_small_edits_and_tells_faces_apart(shared_datasets):
    with np.load(shared_datasets / "fer2013" / "val.npz") as z:
        a, b = z["images"][10], z["images"][11]
    h = phash(a)
    assert (h ^ phash(cv2.GaussianBlur(a, (3, 3), 0))).bit_count() <= 4
    assert (h ^ phash(cv2.resize(cv2.resize(a, (96, 96)), (48, 48)))).bit_count() <= 4
    assert (h ^ phash(b)).bit_count() > 10


def test_near_duplicate_search_matches_brute_force():
    rng = np.random.default_rng(0)
    base = [int(x) for x in rng.integers(0, 2**63, 300, dtype=np.int64)]
    hashes = base + [h ^ (1 << int(rng.integers(64))) ^ (1 << int(rng.integers(64))) for h in base[:50]]
    brute = sorted(
        (i, j, (hashes[i] ^ hashes[j]).bit_count())
        for i in range(len(hashes))
        for j in range(i + 1, len(hashes))
        if (hashes[i] ^ hashes[j]).bit_count() <= 4
    )
    assert near_duplicate_pairs(hashes, 4) == brute and len(brute) >= 50


def test_eda_command_writes_the_report(folder, tmp_path):
    from typer.testing import CliRunner

    from emolens.cli import app

    root = folder[0]
    result = CliRunner().invoke(app, ["eda", str(root), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "63 images" in result.output and "1 corrupt" in result.output
    assert (tmp_path / "r" / "report.html").exists()


def test_eda_on_a_folder_of_npz_files_names_them(tmp_path):
    """A folder holding train.npz and val.npz is not one dataset: the error says what a dataset is
    and names the files to give instead."""
    from typer.testing import CliRunner

    from emolens.cli import app

    for name in ("train.npz", "val.npz"):
        np.savez(tmp_path / name, images=np.zeros((2, 48, 48), np.uint8), labels=np.zeros(2, np.int64), classes=FER7)
    result = CliRunner().invoke(app, ["eda", str(tmp_path), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert "train.npz, val.npz: give one of those files" in result.output and "an .npz file" in result.output
    assert "Traceback" not in result.output
