"""How readable a face is: size, sharpness, noise, exposure and contrast, as one score in [0, 1].

The score is the smallest of five factors, each a ramp from 0 (unreadable) to 1 (fine):

| factor | 0 at | 1 at | measured on |
|---|---|---|---|
| size | 12 px | 40 px | the shorter side of the detected box, in image pixels |
| sharpness | 0.02 | 0.3 | the aligned crop's Laplacian variance over its grey variance (log scale) |
| noise | sigma 30 grey levels | sigma 6 | the aligned crop's noise, estimated as Immerkaer (1996) does |
| exposure | mean grey 10 (or 245) | 40 (or 215) | the aligned crop |
| contrast | grey std 5 | 20 | the aligned crop |

Below ``MIN_QUALITY`` the analyzer answers "uncertain" rather than guess (the probabilities stay in
the result). The ramps were set on FER2013 PublicTest crops under the degradations of
``emolens.image.degrade``: clean crops have a median sharpness of 0.73 (10th percentile 0.39), a face
seen at 24 px 0.08, blur sigma 1.5 px 0.023. Sensor noise raises the sharpness figure, so noise has a
factor of its own: the estimate is 3.5 grey levels on the median clean FER2013 Training crop and 6 or
less on 96% of them (face texture counts a little), 8 / 13 / 20 under added noise of sigma 6 / 12 / 20.

A face below 1 on sharpness or noise is what ``emolens.classify.routed`` sends to the model
trained for camera faces.
"""

from __future__ import annotations

import cv2
import numpy as np

MIN_QUALITY = 0.1
RAMPS = {"size": (12.0, 40.0), "sharpness": (np.log10(0.02), np.log10(0.3)), "contrast": (5.0, 20.0)}
NOISE = (6.0, 30.0)  # estimated noise sigma in grey levels: 1 up to the first, 0 from the second
# Immerkaer's mask: the difference of two Laplacians, blind to an image's planes and edges to first order
_NOISE_MASK = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
EXPOSURE = (10.0, 40.0, 215.0, 245.0)  # mean grey: 0 below the first, 1 between the middle two, 0 above the last


def _ramp(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((v - lo) / (hi - lo), 0.0, 1.0)


def face_quality(crop: np.ndarray, box_size: float | None = None) -> dict[str, float]:
    """The factors and their minimum (``score``) for one aligned uint8 crop (grey or RGB);
    ``box_size`` is the shorter side of the face's box in the image (left out when unknown)."""
    return face_qualities([crop], None if box_size is None else [box_size])[0]


def face_qualities(crops: list[np.ndarray], box_sizes: list[float] | None = None) -> list[dict[str, float]]:
    """``face_quality`` for many crops of one size at once (the faces of a crowd): the same
    figures, computed on the stacked crops, so a face costs a few microseconds, not a tenth of a ms."""
    if len(crops) == 0:
        return []
    grey = np.stack([c if c.ndim == 2 else cv2.cvtColor(c, cv2.COLOR_RGB2GRAY) for c in crops]).astype(np.float32)
    mean, var = grey.mean(axis=(1, 2)), grey.var(axis=(1, 2))
    lap = np.stack([cv2.Laplacian(g, cv2.CV_32F) for g in grey])  # one C call a crop: cheaper than numpy's pad
    noise = noise_sigma(grey)
    mean, var = mean.astype(np.float64), var.astype(np.float64)
    sharp = lap.var(axis=(1, 2)).astype(np.float64) / (var + 25.0)  # +25: flat crops do not divide by ~0
    lo0, lo1, hi1, hi0 = EXPOSURE
    factors = {
        "sharpness": _ramp(np.log10(np.maximum(sharp, 1e-6)), *RAMPS["sharpness"]),
        "noise": 1.0 - _ramp(noise, *NOISE),
        "exposure": np.minimum(_ramp(mean, lo0, lo1), 1.0 - _ramp(mean, hi1, hi0)),
        "contrast": _ramp(np.sqrt(var), *RAMPS["contrast"]),
    }
    if box_sizes is not None:
        factors["size"] = _ramp(np.asarray(box_sizes, dtype=np.float64), *RAMPS["size"])
    columns = {k: v.tolist() for k, v in factors.items()}
    out = []
    for i in range(len(crops)):
        row = {k: v[i] for k, v in columns.items()}
        out.append({"score": round(min(row.values()), 3), **{k: round(v, 3) for k, v in row.items()}})
    return out


def noise_sigma(grey: np.ndarray) -> np.ndarray:
    """The noise of each crop in a stack of float32 grey crops (N, H, W), in grey levels: the mean
    absolute response to Immerkaer's mask inside the border, times sqrt(pi/2) / 6."""
    r = np.stack([cv2.filter2D(g, -1, _NOISE_MASK)[1:-1, 1:-1] for g in grey])
    return np.abs(r).mean(axis=(1, 2)).astype(np.float64) * (np.sqrt(np.pi / 2) / 6.0)
