"""Test-time augmentation: average a model's probabilities over a crop, its mirror and small shifts."""

from __future__ import annotations

import numpy as np


def shift_crops(crops: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Crops (N, H, W[, C]) moved ``dx`` pixels right and ``dy`` down; the uncovered border repeats the edge."""
    s = max(abs(dx), abs(dy))
    if s == 0:
        return crops
    pad = [(0, 0), (s, s), (s, s)] + [(0, 0)] * (crops.ndim - 3)
    padded = np.pad(crops, pad, mode="edge")
    h, w = crops.shape[1:3]
    return np.ascontiguousarray(padded[:, s - dy : s - dy + h, s - dx : s - dx + w])


def tta_views(crops: np.ndarray, flip: bool = True, shift: int = 0) -> list[np.ndarray]:
    """The crops themselves, their horizontal mirror (``flip``) and, with ``shift`` > 0, the crops
    moved ``shift`` pixels left, right, up and down."""
    views = [crops]
    if flip:
        views.append(np.ascontiguousarray(crops[:, :, ::-1]))
    if shift:
        views += [shift_crops(crops, dx, dy) for dx, dy in ((shift, 0), (-shift, 0), (0, shift), (0, -shift))]
    return views


def predict_tta(model, crops: np.ndarray, flip: bool = True, shift: int = 0, batch_size: int = 256) -> np.ndarray:
    """Mean of ``model.predict`` (an EmotionModel, or anything with that method) over ``tta_views``."""
    views = tta_views(crops, flip, shift)
    return np.mean([model.predict(v, batch_size=batch_size) for v in views], axis=0).astype(np.float32)
