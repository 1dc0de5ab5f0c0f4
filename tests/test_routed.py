"""Routing each face to the model that reads it best (``adaptive``) and the quality factors it uses."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from emolens.core.errors import ModelError
from emolens.image.quality import face_qualities, noise_sigma

EXAMPLE = Path(__file__).resolve().parents[1] / "src" / "emolens" / "assets" / "examples" / "astronaut.jpg"


@pytest.fixture(scope="module")
def face_crops():
    """The example's face aligned at 48 px, then the same crop blurred and with sensor noise added."""
    from emolens import Analyzer
    from emolens.image.io import load_image

    analyzer = Analyzer(model="fast")
    image = load_image(EXAMPLE)
    _, crops, _ = analyzer.align_faces(image, analyzer.detector(image))
    clear = crops[0]
    soft = cv2.GaussianBlur(clear, (0, 0), 1.5)
    rng = np.random.default_rng(0)
    noisy = np.clip(clear + rng.normal(0, 15, clear.shape), 0, 255).astype(np.uint8)
    return np.stack([clear, soft, noisy, clear])


def test_noise_estimate_reads_the_noise_that_was_added():
    rng = np.random.default_rng(0)
    flat = np.full((4, 48, 48), 128.0, dtype=np.float32)
    for sigma in (3.0, 12.0, 20.0):
        est = noise_sigma((flat + rng.normal(0, sigma, flat.shape)).astype(np.float32))
        assert np.all(np.abs(est - sigma) < 0.1 * sigma), (sigma, est)
    assert np.all(noise_sigma(flat) == 0)


def test_quality_has_a_noise_factor_that_falls_with_noise(face_crops):
    q = face_qualities(list(face_crops))
    assert q[0]["noise"] == 1.0 and q[0]["sharpness"] == 1.0
    assert q[2]["noise"] < 1.0 and q[2]["score"] <= q[2]["noise"]
    assert q[1]["sharpness"] < 1.0


def test_adaptive_sends_clear_faces_to_fast_and_poor_ones_to_robust_mirrored(face_crops):
    from emolens.classify.routed import poor_faces
    from emolens.workspace import Workspace

    assert poor_faces(face_crops).tolist() == [False, True, True, False]
    adaptive, fast, robust = (Workspace.default().models.load(n) for n in ("adaptive", "fast", "robust"))
    p = adaptive.predict(face_crops)
    assert np.allclose(p[[0, 3]], fast.predict(face_crops[[0, 3]]), atol=1e-6)
    poor = face_crops[[1, 2]]
    once = robust.predict(poor)
    mirrored = (once + robust.predict(np.ascontiguousarray(poor[:, :, ::-1]))) / 2
    assert np.allclose(p[[1, 2]], mirrored, atol=1e-6) and not np.allclose(p[[1, 2]], once, atol=1e-4)
    # With TTA asked for, every face is read mirrored once, not the poor ones twice.
    assert np.allclose(Workspace.default().models.load("adaptive", tta=True).predict(poor), mirrored, atol=1e-6)
    assert adaptive.labels == fast.labels and adaptive.thresholds is None
    assert adaptive.predict(face_crops[:0]).shape == (0, len(fast.labels))


def test_adaptive_in_the_analyzer_records_both_models_and_is_no_single_file():
    from emolens import Analyzer
    from emolens.models import ModelResolver

    result = Analyzer(model="adaptive")(str(EXAMPLE))
    assert result.model == "adaptive" and result.faces and result[0].label in result[0].probs
    assert [(m["name"], m["faces"], m.get("tta")) for m in result.members] == [
        ("fast", "clear", None),
        ("robust", "poor", "mirror"),
    ]
    with pytest.raises(ModelError, match="routes faces between 'fast' and 'robust'"):
        ModelResolver(home=EXAMPLE.parent).path("adaptive")
