"""Dataset loaders and label schemas, on small real samples written from FER2013 and LFW."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from emolens.core.errors import BadImageError, BadLabelError, EmoLensError
from emolens.data import FER7, FERPLUS8, SIX, canonical, load_dataset, map_labels, schema, split


@pytest.fixture(scope="module")
def fer_sample(shared_datasets):
    with np.load(shared_datasets / "fer2013" / "val.npz") as z:
        rng = np.random.default_rng(1)
        idx = rng.choice(len(z["labels"]), 140, replace=False)
        return z["images"][idx], z["labels"][idx]


def write_fer_csv(path, images, labels, usages):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["emotion", "pixels", "Usage"])
        for im, y, u in zip(images, labels, usages, strict=True):
            w.writerow([int(y), " ".join(map(str, im.ravel())), u])


def test_fer_csv_round_trips_pixels_and_filters_usage(fer_sample, tmp_path):
    images, labels = fer_sample
    usages = ["Training"] * 100 + ["PublicTest"] * 40
    write_fer_csv(tmp_path / "fer2013.csv", images, labels, usages)
    full = load_dataset(tmp_path / "fer2013.csv")
    assert full.classes == list(FER7) and len(full) == 140
    assert np.array_equal(full.images, images) and np.array_equal(full.labels, labels)
    public = load_dataset(tmp_path / "fer2013.csv", usage="PublicTest")
    assert len(public) == 40 and np.array_equal(public.images, images[100:])


def test_fer_csv_bad_rows_name_their_line(fer_sample, tmp_path):
    images, labels = fer_sample
    write_fer_csv(tmp_path / "a.csv", images[:3], labels[:3], ["Training"] * 3)
    text = (tmp_path / "a.csv").read_text().splitlines()
    (tmp_path / "short.csv").write_text("\n".join([text[0], text[1], "3,1 2 3,Training"]) + "\n")
    with pytest.raises(BadImageError, match=r"short\.csv:3"):
        load_dataset(tmp_path / "short.csv")
    (tmp_path / "label.csv").write_text("\n".join([text[0], "9," + text[1].split(",", 1)[1]]) + "\n")
    with pytest.raises(BadLabelError, match=r"emotion 9"):
        load_dataset(tmp_path / "label.csv")


def test_image_folder_normalises_class_names_and_rejects_unknown(fer_sample, tmp_path):
    images, labels = fer_sample
    names = {"happy": "Happiness", "sad": "sadness", "angry": "angry"}
    written = {}
    for label, folder in names.items():
        (tmp_path / "data" / folder).mkdir(parents=True)
        picks = images[labels == FER7.index(label)][:5]
        for i, im in enumerate(picks):
            Image.fromarray(im).save(tmp_path / "data" / folder / f"{i}.png")
        written[label] = len(picks)
    (tmp_path / "data" / "happy_notes.txt").write_text("not a class folder")
    ds = load_dataset(tmp_path / "data")
    assert ds.classes == ["angry", "happy", "sad"]
    assert ds.counts() == written
    assert ds.image(0).shape == (48, 48, 3)  # decoded on demand through the safe loader
    assert load_dataset(tmp_path / "data", classes=FER7).classes == list(FER7)
    (tmp_path / "data" / "bored").mkdir()
    with pytest.raises(BadLabelError, match="bored"):
        load_dataset(tmp_path / "data", classes=FER7)


def test_labels_csv_with_groups_keeps_people_in_one_split(shared_datasets, tmp_path):
    people = sorted((shared_datasets / "identity" / "lfw" / "people").iterdir())[:24]
    rows = []
    for k, person in enumerate(people):
        for img in sorted(person.glob("*.jpg"))[:5]:
            rows.append({"path": str(img), "label": ["happy", "neutral", "sad"][k % 3], "group": person.name})
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "label", "group"])
        w.writeheader()
        w.writerows(rows)
    ds = load_dataset(tmp_path / "labels.csv")
    assert len(ds) == len(rows) and ds.classes == ["happy", "neutral", "sad"]
    parts = split(ds, val=0.25, test=0.25, seed=0)
    groups = {name: set(part.groups) for name, part in parts.items()}
    assert not groups["train"] & groups["val"] and not groups["train"] & groups["test"]
    assert not groups["val"] & groups["test"]
    assert sum(len(p) for p in parts.values()) == len(ds)
    for part in parts.values():
        assert set(part.labels.tolist()) == {0, 1, 2}  # stratified: every class in every split


def test_stratified_split_without_groups(fer_sample):
    from emolens.data import FaceDataset

    images, labels = fer_sample
    ds = FaceDataset(classes=list(FER7), labels=labels, images=images)
    if (labels == FER7.index("disgust")).sum() < 2:
        with pytest.raises(BadLabelError, match="disgust"):
            split(ds, val=0.2)
    ds = ds.subset(np.flatnonzero(labels != FER7.index("disgust")))
    parts = split(ds, val=0.2, seed=3)
    assert len(parts["train"]) + len(parts["val"]) == len(ds)
    assert len(parts["val"]) == round(0.2 * len(ds))
    happy = FER7.index("happy")
    assert abs((parts["val"].labels == happy).mean() - (ds.labels == happy).mean()) < 0.05


def test_schemas_and_explicit_mapping():
    assert canonical(" Happiness ") == "happy" and schema("ferplus8") == FERPLUS8 and len(SIX) == 6
    labels = np.array([FER7.index(c) for c in ["angry", "disgust", "happy", "disgust"]])
    with pytest.raises(BadLabelError, match="disgust"):
        map_labels(labels, FER7, SIX)
    merged, keep = map_labels(labels, FER7, SIX, {"disgust": "angry"})
    assert keep.all() and [SIX[i] for i in merged] == ["angry", "angry", "happy", "angry"]
    dropped, keep = map_labels(labels, FER7, SIX, {"disgust": None})
    assert keep.tolist() == [True, False, True, False] and [SIX[i] for i in dropped] == ["angry", "happy"]
    widened, _ = map_labels(labels, FER7, FERPLUS8)
    assert [FERPLUS8[i] for i in widened] == ["angry", "disgust", "happy", "disgust"]
    with pytest.raises(BadLabelError, match="duplicates"):
        schema(["happy", "Happiness"])


def test_not_a_dataset(tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(EmoLensError, match="not a dataset"):
        load_dataset(tmp_path / "x.txt")
    with pytest.raises(EmoLensError, match="no such file"):
        load_dataset(tmp_path / "missing.csv")


def test_photos_become_aligned_crops_and_faceless_ones_are_reported(shared_datasets, tmp_path):
    from emolens.data.datasets import to_crops

    lfw = sorted((shared_datasets / "identity" / "lfw" / "people").iterdir())[:2]
    for k, person in enumerate(lfw):
        (tmp_path / ["happy", "sad"][k]).mkdir()
        for img in sorted(person.glob("*.jpg"))[:3]:
            (tmp_path / ["happy", "sad"][k] / img.name).write_bytes(img.read_bytes())
    Image.new("RGB", (200, 200), (90, 140, 200)).save(tmp_path / "sad" / "sky.png")
    ds = load_dataset(tmp_path)
    crops, labels, skipped = to_crops(ds, size=48, channels=1)
    assert crops.shape == (6, 48, 48) and labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert len(skipped) == 1 and "sky.png: no face found" in skipped[0]
    plain, _, _ = to_crops(ds, size=64, channels=3, detect=False)
    assert plain.shape == (7, 64, 64, 3)
