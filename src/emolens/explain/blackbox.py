"""Model-agnostic explanations: LIME and SHAP, built only on a batch probability function.

Both libraries are optional (``pip install -e '.[lime]'`` / ``'.[shap]'``) and imported
lazily. The core functions ``lime_map`` and ``shap_map`` take an (H, W, C) image (uint8 or
normalised floats), a ``predict`` from (N, H, W, C) images to probabilities (N, classes), and the
target class; ``lime``/``shap`` wrap a PyTorch model (same signature as every method in
``emolens.explain.methods``), ``lime_onnx``/``shap_onnx`` an ``EmotionModel`` (ONNX, no torch).

Grey crops are shown to the libraries as three identical channels (their segmenters and maskers
expect colour) and reduced back to one channel before the model sees them.

LIME (Ribeiro et al. 2016): ~30 SLIC superpixels of the crop, ``LIME_SAMPLES`` random on/off
patterns (off = mid-grey), a weighted linear fit; the map is each segment's positive weight.
SHAP (Lundberg & Lee 2017): the partition explainer with a ``blur(8,8)`` image masker,
``SHAP_EVALS`` model calls; the map is the target's SHAP values summed over channels, positive part.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable

import numpy as np

from emolens.core.errors import require

Predict = Callable[[np.ndarray], np.ndarray]
LIME_SEGMENTS, LIME_SAMPLES, SEED = 30, 300, 0
SHAP_EVALS, BATCH = 300, 64


def _normalize(m: np.ndarray) -> np.ndarray:
    m = np.maximum(np.nan_to_num(np.asarray(m, dtype=np.float32)), 0)
    lo, hi = float(m.min()), float(m.max())
    return ((m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)).astype(np.float32)


def _rgb(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 1|3) → (H, W, 3) float64 (grey replicated)."""
    a = np.asarray(image, dtype=np.float64)
    if a.ndim == 2:
        a = a[..., None]
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a


def _channels(predict: Predict, channels: int) -> Predict:
    """A ``predict`` over (N, H, W, 3) batches for a model that takes ``channels`` channels."""
    if channels == 3:
        return predict
    return lambda batch: predict(np.asarray(batch)[..., :1])


def segments(image: np.ndarray, n_segments: int = LIME_SEGMENTS) -> np.ndarray:
    """SLIC superpixels (labels from 0) of an (H, W[, C]) image of any scale, suited to 48 px faces."""
    from skimage.segmentation import slic

    a = np.asarray(image, dtype=np.float64)
    a = (a - a.min()) / max(float(a.max() - a.min()), 1e-8)
    if a.ndim == 2 or a.shape[2] == 1:
        return slic(
            a.reshape(a.shape[:2]), n_segments=n_segments, compactness=0.1, sigma=0.5, channel_axis=None, start_label=0
        )
    return slic(a, n_segments=n_segments, compactness=10, sigma=0.5, channel_axis=-1, start_label=0)


def lime_map(
    image: np.ndarray,
    predict: Predict,
    target: int,
    hide: float = 0.0,
    num_samples: int = LIME_SAMPLES,
    seed: int = SEED,
) -> np.ndarray:
    """LIME on one (H, W, C) image: positive superpixel weights for ``target``, scaled to [0, 1].

    ``predict`` takes (N, H, W, C) images like ``image``; ``hide`` is the value of a switched-off
    superpixel (mid-grey: 128 for uint8, 0 for normalised crops)."""
    lime_image = require("lime.lime_image", "lime", package="lime")
    channels = np.asarray(image).shape[2] if np.asarray(image).ndim == 3 else 1
    rgb = _rgb(image)
    segs = segments(image)
    explainer = lime_image.LimeImageExplainer(random_state=seed)
    with contextlib.redirect_stderr(io.StringIO()):  # lime prints a tqdm bar per explanation
        exp = explainer.explain_instance(
            rgb,
            _channels(predict, channels),
            labels=(target,),
            hide_color=hide,
            top_labels=None,
            num_features=int(segs.max()) + 1,
            num_samples=num_samples,
            batch_size=num_samples,
            segmentation_fn=lambda _img: segs,
            random_seed=seed,
        )
    weights = np.zeros(int(segs.max()) + 1, np.float32)
    for seg, w in exp.local_exp[target]:
        weights[seg] = w
    return _normalize(weights[segs])


def shap_map(image: np.ndarray, predict: Predict, target: int, max_evals: int = SHAP_EVALS) -> np.ndarray:
    """SHAP (partition explainer, blurred-image masker) on one (H, W, C) image for ``target``, in [0, 1]."""
    shap = require("shap", "shap")
    channels = np.asarray(image).shape[2] if np.asarray(image).ndim == 3 else 1
    rgb = _rgb(image).astype(np.float32)
    masker = shap.maskers.Image("blur(8,8)", rgb.shape)
    f = _channels(predict, channels)
    explainer = shap.Explainer(lambda batch: np.asarray(f(np.asarray(batch, np.float32))), masker)
    sv = explainer(rgb[None], max_evals=max_evals, batch_size=BATCH, outputs=[target], silent=True)
    values = np.asarray(sv.values)[0, ..., 0]  # (H, W, 3)
    return _normalize(values.sum(-1) if channels == 3 else values[..., 0])


# --- PyTorch models: the ``fn(model, x, target)`` signature of emolens.explain.methods ------------


def _torch_predict(model) -> Predict:
    import torch

    def predict(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(np.asarray(batch, np.float32).transpose(0, 3, 1, 2)))
        with torch.no_grad():
            return torch.softmax(model(x), dim=1).numpy()

    return predict


def _hwc(x) -> np.ndarray:
    return x.detach()[0].permute(1, 2, 0).numpy()


def lime(model, x, target: int) -> np.ndarray:
    """LIME on a normalised crop (1, C, H, W); switched-off superpixels are 0 (mid-grey)."""
    return lime_map(_hwc(x), _torch_predict(model), int(target), hide=0.0)


def shap(model, x, target: int) -> np.ndarray:
    """SHAP (partition explainer, ``blur(8,8)`` masker) on a normalised crop (1, C, H, W)."""
    return shap_map(_hwc(x), _torch_predict(model), int(target))


# --- ONNX models (``EmotionModel``): uint8 crops, no torch --------------------------------------


def _onnx_predict(emotion_model, grey: bool) -> Predict:
    def predict(batch: np.ndarray) -> np.ndarray:
        b = np.clip(np.rint(np.asarray(batch)), 0, 255).astype(np.uint8)
        return np.asarray(emotion_model.predict(b[..., 0] if grey else b, batch_size=len(b)))

    return predict


def lime_onnx(emotion_model, crop: np.ndarray, target: int) -> np.ndarray:
    """LIME on any ``EmotionModel``: ``crop`` the aligned uint8 crop, (H, W) or (H, W, C)."""
    crop = np.asarray(crop, dtype=np.uint8)
    grey = crop.ndim == 2
    return lime_map(crop[..., None] if grey else crop, _onnx_predict(emotion_model, grey), int(target), hide=128.0)


def shap_onnx(emotion_model, crop: np.ndarray, target: int) -> np.ndarray:
    """SHAP on any ``EmotionModel``: ``crop`` the aligned uint8 crop, (H, W) or (H, W, C)."""
    crop = np.asarray(crop, dtype=np.uint8)
    grey = crop.ndim == 2
    return shap_map(crop[..., None] if grey else crop, _onnx_predict(emotion_model, grey), int(target))


ONNX_METHODS = {"lime": lime_onnx, "shap": shap_onnx}
