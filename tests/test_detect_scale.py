"""RetinaFace scales its work to what is asked: a first pass at native size or below, enlarged
regions only where a face smaller than the first pass can be sure of may be; same faces as
enlarging the whole image. Plus the shared ONNX Runtime options and the decoding prefetch."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from emolens import Analyzer
from emolens.core.errors import BadImageError
from emolens.detect import create_detector
from emolens.detect.retinaface import _bridges
from emolens.pipeline.results import Results

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from detectors import matched_count, read_voc  # noqa: E402


def pixels(det) -> int:
    return sum(h * w for h, w in det.last_passes)


@pytest.fixture(scope="module")
def vga() -> np.ndarray:
    return cv2.resize(skdata.astronaut(), (640, 480), interpolation=cv2.INTER_AREA)


def test_large_min_face_size_shrinks_the_first_pass(vga):
    default, large = create_detector("retinaface"), create_detector("retinaface", min_face_size=64)
    ref, faces = default(vga), large(vga)
    # 64 px faces are 32 px at half size, which the network finds in one pass.
    assert large.last_passes == [(256, 320)]
    assert default.last_passes == [(384, 512)]  # default 20 px: 0.8x, no enlarged region on a portrait
    assert len(ref) == len(faces) == 1
    a, b = ref[0].box, faces[0].box
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    assert inter / union > 0.8
    # Eyes and nose agree within 5% of the face's width (measured 2-4%); at half size the mouth
    # corners of this wide smile move by up to 13%.
    assert np.abs(ref[0].landmarks[:3] - faces[0].landmarks[:3]).max() < 0.05 * (a[2] - a[0])


def test_whole_image_enlargement_is_still_available(vga):
    det = create_detector("retinaface", two_pass=False)
    assert len(det(vga)) == 1 and det.last_passes == [(640, 864)]  # short side enlarged to 640, as before


@pytest.fixture(scope="module")
def voc(shared_datasets):
    path = shared_datasets / "photos"
    if not (path / "dlib_voc" / "boxes.csv").is_file():
        pytest.skip(f"photo sets not found at {path}")
    return path, read_voc(path)


@pytest.mark.parametrize(("face_px", "min_face_size"), [(20, 10), (30, 20)])
def test_small_faces_asked_for_are_found_as_with_whole_image_enlargement(voc, face_px, min_face_size):
    """The VOC group photos shrunk so their boxed faces measure ~20 or ~30 px: the two-pass detector
    finds exactly as many as enlarging the whole image, for less work."""
    from emolens.image.io import load_image

    path, truth = voc
    whole = create_detector("retinaface", min_face_size=min_face_size, two_pass=False)
    two = create_detector("retinaface", min_face_size=min_face_size)
    found_whole = found_two = total = work_whole = work_two = regions = 0
    for name, boxes in truth.items():
        image = load_image(path / "dlib_voc" / name)
        s = face_px / float(np.median(np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])))
        small = cv2.resize(image, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        found_whole += matched_count(boxes * s, whole(small))
        found_two += matched_count(boxes * s, two(small))
        work_whole, work_two = work_whole + pixels(whole), work_two + pixels(two)
        regions += len(two.last_passes) - 1
        total += len(boxes)
    # Measured: 43 of 43 at ~20 px (min_face_size 10) and 42 of 43 at ~30 px, both ways.
    assert found_two >= found_whole >= 0.95 * total, (found_two, found_whole, total)
    assert regions > 0  # small faces made it enlarge regions ...
    assert work_two < 0.7 * work_whole  # ... and still less than enlarging every image


def test_a_box_bridging_two_faces_is_dropped():
    faces = np.array([[335, 148, 435, 277], [254, 192, 344, 317], [422, 178, 515, 294]], np.float32)
    bridge = np.array([[375, 168, 480, 292]], np.float32)  # measured on 011_3.jpg at native size
    assert _bridges(np.vstack([faces, bridge])).tolist() == [False, False, False, True]
    overlapping = np.array([[0, 0, 100, 100], [60, 0, 160, 100], [30, 50, 130, 150]], np.float32)
    assert not _bridges(overlapping).any()  # a crowd's partly hidden faces are not bridges


def test_sessions_do_not_spin():
    from emolens.core.runtime import session_options

    opts = session_options(2)
    assert opts.intra_op_num_threads == 2 and opts.inter_op_num_threads == 1
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert session_options(0, spinning=True).get_session_config_entry("session.intra_op.allow_spinning") == "1"


def test_stream_decodes_the_next_image_ahead(tmp_path):
    example = skdata.astronaut()
    good = tmp_path / "a.jpg"
    cv2.imwrite(str(good), cv2.cvtColor(example, cv2.COLOR_RGB2BGR))
    bad = tmp_path / "b.jpg"
    bad.write_bytes(b"not an image")
    pulled: list[int] = []

    def sources():
        for i, src in enumerate([good, bad, good]):
            pulled.append(i)
            yield src

    analyzer = Analyzer(model="fast")
    it = analyzer.stream(sources())
    first = next(it)
    assert isinstance(first, Results) and pulled == [0, 1]  # the second source is already being decoded
    rest = list(it)
    assert isinstance(rest[0], BadImageError) and rest[0].source == str(bad)
    plain = list(analyzer.stream([good, bad, good], prefetch=False))
    assert [r.labels for r in (first, rest[1])] == [plain[0].labels, plain[2].labels] == [["happy"], ["happy"]]
    assert np.allclose(first[0].box, plain[0][0].box)
