"""Is a heat map faithful to the model? Deletion and insertion scores (Petsiuk et al. 2018, RISE).

Deletion: pixels are replaced by mid-grey in the order of the map, most important first, and the
target class's probability is read after each of ``steps`` equal steps; the score is the area
under that curve (x from 0 to 1 = fraction removed). A faithful map makes the probability fall
fast: lower is better. Insertion starts from a blurred crop and puts the original pixels back in
the same order: higher is better. All steps of one curve go through the model as one batch.

``predict`` is any function from uint8 crops (N, H, W[, C]) to probabilities (N, classes):
``EmotionModel.predict`` for an ONNX model, ``torch_predictor(model, spec)`` for PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

Predict = Callable[[np.ndarray], np.ndarray]
STEPS = 16
BLUR_SIGMA = 5.0  # at 48 px: features (eyes, mouth) gone, overall brightness kept


def random_map(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """The baseline a heat map must beat: a uniformly random importance per pixel."""
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def grey(crop: np.ndarray) -> np.ndarray:
    return np.full_like(crop, 128)


def blur(crop: np.ndarray, sigma: float = BLUR_SIGMA) -> np.ndarray:
    return cv2.GaussianBlur(crop, (0, 0), sigma)


def _path(start: np.ndarray, end: np.ndarray, saliency: np.ndarray, steps: int) -> np.ndarray:
    """``steps + 1`` crops from ``start`` to ``end``, switching pixels in decreasing saliency."""
    h, w = start.shape[:2]
    order = np.argsort(-np.asarray(saliency, dtype=np.float32).reshape(-1), kind="stable")
    counts = np.round(np.linspace(0, h * w, steps + 1)).astype(int)
    batch = np.repeat(start[None], steps + 1, axis=0)
    flat = batch.reshape(steps + 1, h * w, -1)  # a view: writes land in ``batch``
    src = end.reshape(h * w, -1)
    for i, n in enumerate(counts):
        flat[i, order[:n]] = src[order[:n]]
    return batch


def auc(curve: np.ndarray) -> float:
    """Area under a curve sampled at equal steps over [0, 1] (trapezoid rule)."""
    curve = np.asarray(curve, dtype=np.float64)
    return float((curve[:-1] + curve[1:]).sum() / (2 * (len(curve) - 1)))


def scores(predict: Predict, crop: np.ndarray, saliency: np.ndarray, target: int, steps: int = STEPS) -> dict:
    """Both scores of one map; both curves go through the model as one batch."""
    batch = np.concatenate([_path(crop, grey(crop), saliency, steps), _path(blur(crop), crop, saliency, steps)])
    p = np.asarray(predict(batch))[:, target].astype(np.float64)
    return {"deletion": auc(p[: steps + 1]), "insertion": auc(p[steps + 1 :])}


def random_scores(predict: Predict, crop: np.ndarray, target: int, seeds: int = 5, steps: int = STEPS) -> dict:
    """Deletion and insertion of random maps, averaged over ``seeds`` seeds."""
    runs = [scores(predict, crop, random_map(crop.shape[:2], s), target, steps) for s in range(seeds)]
    return {k: float(np.mean([r[k] for r in runs])) for k in ("deletion", "insertion")}


def torch_predictor(model, spec) -> Predict:
    """uint8 crops → probabilities, through a PyTorch model (no gradients)."""
    import torch

    from emolens.explain.methods import to_tensor

    def predict(crops: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(model(to_tensor(crops, spec)), dim=1).numpy()

    return predict
