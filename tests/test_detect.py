"""Face detection backends on real photographs."""

from __future__ import annotations

import csv
import sys

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from emolens.core.errors import EmoLensError, MissingExtraError
from emolens.detect import Face, create_detector, list_detectors
from emolens.image.io import load_image

BACKENDS = ["retinaface", "dlib-hog", "haar", "dlib-cnn"]
FAST_BACKENDS = ["retinaface", "dlib-hog", "haar"]  # dlib-cnn takes seconds per image on CPU
# The astronaut's face as RetinaFace boxes it (forehead to chin); the other backends' boxes
# overlap it with IoU 0.67-0.75.
ASTRONAUT_FACE = np.array([178, 58, 272, 178], dtype=np.float32)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def inside(point, box: np.ndarray) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


def needs(name: str) -> None:
    if name.startswith("dlib"):
        pytest.importorskip("dlib")


_cache: dict[str, object] = {}


def detector(name: str, **overrides):
    """One instance per backend with default options, so each model loads once per test run."""
    needs(name)
    if overrides:
        return create_detector(name, **overrides)
    if name not in _cache:
        _cache[name] = create_detector(name)
    return _cache[name]


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skdata.astronaut()


@pytest.fixture(scope="module")
def mosaic() -> np.ndarray:
    """The astronaut's face pasted three times, about 35, 80 and 155 px wide, on grey."""
    crop = skdata.astronaut()[20:220, 140:310]
    canvas = np.full((420, 820, 3), 128, np.uint8)
    x = 10
    for scale in (0.4, 0.9, 1.7):
        face = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        h, w = face.shape[:2]
        canvas[10 : 10 + h, x : x + w] = face
        x += w + 20
    return canvas


def read_faces_csv(photos) -> list[tuple[str, np.ndarray]]:
    rows = []
    with open(photos / "compreface" / "faces.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            pts = [tuple(map(float, p.split(","))) for p in row["nose_points_xy"].split(";") if p]
            assert len(pts) == int(row["n_faces"])
            rows.append((row["image"], np.asarray(pts, dtype=np.float32).reshape(-1, 2)))
    return rows


def check_face(face: Face, has_landmarks: bool) -> None:
    assert face.box.shape == (4,) and face.box.dtype == np.float32
    assert face.box[0] < face.box[2] and face.box[1] < face.box[3]
    assert 0.0 <= face.score <= 1.0
    if not has_landmarks:
        assert face.landmarks is None
        return
    lm = face.landmarks
    assert lm.shape == (5, 2) and lm.dtype == np.float32
    eye_l, eye_r, nose, mouth_l, mouth_r = lm
    assert eye_l[0] < eye_r[0], "the first eye is the one on the image's left"
    assert mouth_l[0] < mouth_r[0], "the first mouth corner is the one on the image's left"
    assert max(eye_l[1], eye_r[1]) < nose[1] < min(mouth_l[1], mouth_r[1]), "eyes above nose above mouth"
    assert all(inside(p, face.box) for p in lm)


def test_registry_lists_all_backends():
    assert set(BACKENDS) <= set(list_detectors())


def test_unknown_detector_names_the_choices():
    with pytest.raises(EmoLensError, match="unknown detector 'nope'") as exc:
        create_detector("nope")
    for name in BACKENDS:
        assert name in str(exc.value)


@pytest.mark.parametrize("name", BACKENDS)
def test_astronaut_one_face(name, astronaut):
    det = detector(name)
    faces = det(astronaut)
    assert len(faces) == 1, [f.box for f in faces]
    face = faces[0]
    check_face(face, det.has_landmarks)
    assert face.score >= 0.6
    assert iou(face.box, ASTRONAUT_FACE) > 0.5, face.box
    assert inside(((face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2), ASTRONAUT_FACE)


def test_dlib_landmarks_agree_with_retinaface(astronaut):
    ref = detector("retinaface")(astronaut)[0].landmarks
    for name in ("dlib-hog",):
        lm = detector(name)(astronaut)[0].landmarks
        # Eye centres and mouth corners of the 68-point model land within a few pixels of
        # RetinaFace's points on a 95 px wide face.
        assert np.abs(lm - ref).max() < 8, np.abs(lm - ref)


@pytest.mark.parametrize("name", FAST_BACKENDS)
def test_blank_image_has_no_face(name):
    assert detector(name)(np.zeros((480, 640, 3), np.uint8)) == []


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("shape", [(8, 8, 3), (1, 1, 3), (8, 300, 3)])
def test_tiny_image_has_no_face(name, shape):
    assert detector(name)(np.zeros(shape, np.uint8)) == []


def test_retinaface_loads_once_and_lazily(astronaut):
    det = create_detector("retinaface")
    assert det._session is None
    det(astronaut)
    session = det._session
    assert session is not None
    det(astronaut[:300])
    assert det._session is session


def test_large_image_goes_through_downscale(astronaut):
    big = cv2.resize(astronaut, (2048, 2048), interpolation=cv2.INTER_CUBIC)
    faces = detector("retinaface")(big)
    assert len(faces) == 1
    assert iou(faces[0].box / 4, ASTRONAUT_FACE) > 0.7
    check_face(faces[0], True)


@pytest.mark.parametrize("name", FAST_BACKENDS)
def test_mosaic_finds_three_faces(name, mosaic):
    faces = detector(name)(mosaic)
    if name == "haar":  # too small for the cascade after its 24 px window and 5 neighbours
        assert len(faces) >= 2
    else:
        assert len(faces) == 3
    for f in faces:
        check_face(f, name != "haar")


def test_max_faces_keeps_the_best(mosaic):
    every = detector("retinaface")(mosaic)
    capped = detector("retinaface", max_faces=2)(mosaic)
    assert len(capped) == 2
    assert [f.score for f in capped] == pytest.approx(sorted((f.score for f in every), reverse=True)[:2])


def test_min_face_size_removes_small_faces(mosaic):
    assert len(detector("retinaface", min_face_size=60)(mosaic)) == 2
    big = detector("retinaface", min_face_size=120)(mosaic)
    assert len(big) == 1 and big[0].width > 120


def test_score_threshold_between_scores(mosaic):
    # At one scale (two_pass False). With two passes, a small face under the threshold at the 0.8x
    # first pass is a maybe, looked at again enlarged, where it may score above it (the 35 px face).
    scores = sorted(f.score for f in detector("retinaface", two_pass=False)(mosaic))
    threshold = (scores[0] + scores[1]) / 2
    kept = detector("retinaface", two_pass=False, score_threshold=threshold)(mosaic)
    assert len(kept) == len(scores) - 1 and min(f.score for f in kept) >= threshold
    assert min(f.score for f in detector("retinaface", score_threshold=threshold)(mosaic)) >= threshold


def test_missing_dlib_names_the_extra(monkeypatch, astronaut):
    monkeypatch.setitem(sys.modules, "dlib", None)
    det = create_detector("dlib-hog")  # constructing loads nothing
    with pytest.raises(MissingExtraError, match=r"pip install -e '\.\[dlib\]'"):
        det(astronaut)


# --- shared photo sets ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def photos(shared_datasets):
    path = shared_datasets / "photos"
    if not (path / "compreface" / "faces.csv").is_file():
        pytest.skip(f"photo sets not found at {path}")
    return path


def test_group_photos_counts_and_noses(photos):
    det = detector("retinaface")
    problems = []
    for image, noses in read_faces_csv(photos):
        faces = det(load_image(photos / "compreface" / image))
        if len(faces) != len(noses):
            problems.append(f"{image}: {len(faces)} faces, expected {len(noses)}")
        for nose in noses:
            if not any(inside(nose, f.box) for f in faces):
                problems.append(f"{image}: no box around the nose at {tuple(nose)}")
        for f in faces:
            check_face(f, True)
    assert not problems, "\n".join(problems)


def test_face_free_photo(photos):
    assert detector("retinaface")(load_image(photos / "compreface" / "017_0.jpg")) == []


def test_voc_recall(photos):
    truth: dict[str, list] = {}
    with open(photos / "dlib_voc" / "boxes.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["ignore"] != "1":
                x, y, w, h = (float(row[k]) for k in ("left", "top", "width", "height"))
                truth.setdefault(row["image"], []).append(np.array([x, y, x + w, y + h]))
    det = detector("retinaface")
    found = total = 0
    for image, boxes in truth.items():
        faces = det(load_image(photos / "dlib_voc" / image))
        unused = [f.box for f in faces]
        for box in boxes:
            total += 1
            overlaps = [iou(box, b) for b in unused]
            if overlaps and max(overlaps) >= 0.4:
                found += 1
                unused.pop(int(np.argmax(overlaps)))
    # Measured: 43 of 43.
    assert total == 43 and found / total >= 0.95, f"{found}/{total}"


def test_threshold_on_a_group_photo(photos):
    image = load_image(photos / "compreface" / "016_8.jpg")
    default = detector("retinaface")(image)
    strict = detector("retinaface", score_threshold=0.97)(image)
    # Measured scores of the 8 faces: 0.94-0.99.
    assert len(default) == 8 and 0 < len(strict) < 8
    assert all(f.score >= 0.97 for f in strict)


def test_dogs_are_not_faces_for_dlib_hog(photos):
    assert detector("dlib-hog")(load_image(photos / "dlib_voc" / "dogs.jpg")) == []


@pytest.mark.xfail(strict=True, reason="known limitation: RetinaFace (MobileNet-0.25) detects dog faces at p~0.99")
def test_dogs_are_not_faces_for_retinaface(photos):
    # At native size; the default 0.8x first pass happens to miss these two (400 and 200 px) dog faces.
    dogs = load_image(photos / "dlib_voc" / "dogs.jpg")
    assert detector("retinaface")(dogs) == []
    assert detector("retinaface", two_pass=False)(dogs) == []
