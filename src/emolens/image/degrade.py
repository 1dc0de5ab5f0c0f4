"""Camera degradations of face crops: one seeded family shared by evaluation and training.

Real cameras deliver faces that are small, soft, compressed, noisy, dark or flat. Each
degradation here works on uint8 crops (N, H, W) or (N, H, W, 3) and returns crops of the same
shape, brought back to the crop size the way the analyzer's alignment would (``emolens.image.align.ENLARGE``,
bicubic), so a model sees what it would see in use.

- ``FAMILY``: the fixed evaluation family (several strengths of each kind, plus webcam and CCTV
  combinations); ``degrade(images, name, seed)`` applies one member, the same way every time.
- ``random_degrade(images, p, rng, weights)``: training augmentation, each image degraded with
  probability ``p`` by one to three kinds (some favoured by ``weights``) at random strengths that
  span the family's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

from emolens.core.errors import EmoLensError
from emolens.image.align import ENLARGE

Op = tuple[str, float]  # (kind, strength)


def _per_image(images: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    return np.stack([fn(img) for img in images]) if len(images) else images.copy()


def downscale(images: np.ndarray, px: float, interpolation: int = ENLARGE) -> np.ndarray:
    """The face seen at ``px`` pixels wide, then brought back up to the crop size with
    ``interpolation`` (by default as the alignment enlarges a small face)."""
    h, w = images.shape[1:3]
    side = max(2, round(px))
    if side >= w:
        return images.copy()

    def one(img: np.ndarray) -> np.ndarray:
        small = cv2.resize(img, (side, max(2, round(h * side / w))), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=interpolation)

    return _per_image(images, one)


def blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur (out of focus, motion-free), ``sigma`` in pixels of the crop."""
    if sigma <= 0:
        return images.copy()
    return _per_image(images, lambda img: cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, sigmaY=sigma))


def jpeg(images: np.ndarray, quality: float) -> np.ndarray:
    """JPEG re-encoding at ``quality`` (1-100), as messaging apps and streams do."""
    q = int(np.clip(round(quality), 1, 100))
    flag = cv2.IMREAD_GRAYSCALE if images.ndim == 3 else cv2.IMREAD_COLOR

    def one(img: np.ndarray) -> np.ndarray:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
        if not ok:
            raise EmoLensError("JPEG encoding failed")
        return cv2.imdecode(buf, flag).reshape(img.shape)

    return _per_image(images, one)


def noise(images: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian sensor noise, ``sigma`` in grey levels."""
    return np.clip(images + rng.normal(0.0, sigma, images.shape), 0, 255).astype(np.uint8)


def exposure(images: np.ndarray, gain: float, gamma: float = 1.0) -> np.ndarray:
    """Exposure change: ``gain`` scales the light (0.5 = half), ``gamma`` > 1 darkens the mid-tones."""
    x = images.astype(np.float32) / 255
    return np.clip(255 * gain * x**gamma + 0.5, 0, 255).astype(np.uint8)


def contrast(images: np.ndarray, factor: float) -> np.ndarray:
    """Contrast scaled by ``factor`` around each crop's mean (0.4 = a flat, hazy image)."""
    x = images.astype(np.float32)
    mean = x.mean(axis=tuple(range(1, x.ndim)), keepdims=True)
    return np.clip((x - mean) * factor + mean + 0.5, 0, 255).astype(np.uint8)


def apply_ops(images: np.ndarray, ops: Sequence[Op], rng: np.random.Generator) -> np.ndarray:
    """Apply ``(kind, strength)`` steps in order. Kinds: scale (px), blur (sigma), jpeg (quality),
    noise (sigma), gain (exposure factor), gamma, contrast (factor)."""
    out = np.asarray(images, dtype=np.uint8)
    for kind, s in ops:
        if kind == "scale":
            out = downscale(out, s)
        elif kind == "blur":
            out = blur(out, s)
        elif kind == "jpeg":
            out = jpeg(out, s)
        elif kind == "noise":
            out = noise(out, s, rng)
        elif kind == "gain":
            out = exposure(out, s)
        elif kind == "gamma":
            out = exposure(out, 1.0, s)
        elif kind == "contrast":
            out = contrast(out, s)
        else:
            raise EmoLensError(f"unknown degradation step {kind!r}")
    return out


# The evaluation family. The strengths in the first row of each kind match the measurements that
# motivated it (24/16 px, blur 1.5, JPEG 15, noise 12, gamma 2.2 at half exposure, contrast 40%).
# Sensors add noise before compression; a scene's light and contrast come before both.
FAMILY: dict[str, tuple[Op, ...]] = {
    "scale-32px": (("scale", 32),),
    "scale-24px": (("scale", 24),),
    "scale-16px": (("scale", 16),),
    "blur-1.0": (("blur", 1.0),),
    "blur-1.5": (("blur", 1.5),),
    "blur-2.0": (("blur", 2.0),),
    "jpeg-30": (("jpeg", 30),),
    "jpeg-15": (("jpeg", 15),),
    "jpeg-8": (("jpeg", 8),),
    "noise-6": (("noise", 6),),
    "noise-12": (("noise", 12),),
    "noise-20": (("noise", 20),),
    "dark": (("gamma", 2.2), ("gain", 0.5)),
    "very-dark": (("gamma", 2.2), ("gain", 0.3)),
    "bright": (("gamma", 0.5),),
    "contrast-0.6": (("contrast", 0.6),),
    "contrast-0.4": (("contrast", 0.4),),
    "contrast-0.25": (("contrast", 0.25),),
    # a laptop webcam in an office: small face, dim, sensor noise, stream compression
    "webcam": (("gamma", 1.5), ("gain", 0.7), ("scale", 28), ("noise", 8), ("jpeg", 35)),
    # a ceiling CCTV camera: tiny soft face, flat contrast, heavy compression
    "cctv": (("contrast", 0.6), ("scale", 20), ("blur", 0.8), ("noise", 6), ("jpeg", 20)),
}
COMBINATIONS = ("webcam", "cctv")


def degrade(images: np.ndarray, name: str, seed: int = 0) -> np.ndarray:
    """One member of ``FAMILY`` applied to every crop; the same seed gives the same pixels."""
    if name not in FAMILY:
        raise EmoLensError(f"unknown degradation {name!r}; choose one of: {', '.join(FAMILY)}")
    return apply_ops(images, FAMILY[name], np.random.default_rng([seed, *name.encode()]))


# Training ranges: wider than the family so that its strengths sit inside what training saw.
TRAIN_RANGES: dict[str, tuple[float, float]] = {
    "scale": (12, 36),
    "blur": (0.4, 2.2),
    "jpeg": (6, 60),
    "noise": (2, 22),
    "gain": (0.25, 1.3),
    "gamma": (0.45, 2.5),
    "contrast": (0.2, 0.9),
}
# order in which sampled steps are applied: light, optics, sensor, compression
_ORDER = ("gamma", "gain", "contrast", "scale", "blur", "noise", "jpeg")


def kind_odds(weights: dict[str, float] | None) -> np.ndarray | None:
    """The chance of drawing each kind of ``TRAIN_RANGES`` first, from relative ``weights`` (a kind left
    out weighs 1); None when all weigh the same, so equal weights draw what no weights draw."""
    if not weights:
        return None
    refusal = f"degradation weights are non-negative numbers for the kinds {', '.join(_ORDER)}, not {weights}"
    try:
        w = np.array([float(weights.get(k, 1.0)) for k in _ORDER])
    except (TypeError, ValueError):
        raise EmoLensError(refusal) from None
    if set(weights) - set(TRAIN_RANGES) or (w < 0).any():
        raise EmoLensError(refusal)
    if np.count_nonzero(w) < 3:
        raise EmoLensError(f"degradation weights must leave at least three kinds above 0, not {weights}")
    return None if np.all(w == w[0]) else w / w.sum()


def random_ops(rng: np.random.Generator, odds: np.ndarray | None = None) -> list[Op]:
    """One to three kinds at random strengths, in camera order; ``odds`` (from ``kind_odds``) favour some kinds."""
    kinds = rng.choice(len(_ORDER), size=int(rng.integers(1, 4)), replace=False, p=odds)
    return [(_ORDER[k], float(rng.uniform(*TRAIN_RANGES[_ORDER[k]]))) for k in sorted(kinds)]


def random_degrade(
    images: np.ndarray, p: float, rng: np.random.Generator, weights: dict[str, float] | None = None
) -> np.ndarray:
    """Training augmentation: each crop degraded with probability ``p`` by ``random_ops``, its kinds
    drawn with the relative ``weights`` (e.g. ``{"scale": 3}``: small faces three times as often)."""
    out = np.array(images, dtype=np.uint8, copy=True)
    if p <= 0:
        return out
    odds = kind_odds(weights)
    for i in np.flatnonzero(rng.random(len(out)) < p):
        out[i] = apply_ops(out[i : i + 1], random_ops(rng, odds), rng)[0]
    return out
