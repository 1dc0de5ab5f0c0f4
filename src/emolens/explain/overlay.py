"""Explain every face of a photo and paint the heat maps back onto it.

Each face is detected, aligned and classified as the ``Analyzer`` does; the attribution method
explains the predicted class on the aligned crop; the crop's heat map is warped back into the
photo with the inverse of the alignment matrix and blended over it with the JET colormap, so only
pixels under a face's crop change.
"""

from __future__ import annotations

import time
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from emolens.core.errors import EmoLensError, require
from emolens.image.align import align_face, alignment_matrix
from emolens.image.io import ImageInput, load_image

METHOD_NAMES = ("gradcam", "gradcam++", "integrated-gradients", "occlusion", "lime", "shap")
ONNX_FALLBACK = "occlusion-onnx"
MODEL_AGNOSTIC = ("lime", "shap")  # also run on an ONNX-only model, as "<name>-onnx"
# On the ONNX model itself, even where PyTorch weights exist (what an INT8 or foreign model gets).
ONNX_METHOD_NAMES = (ONNX_FALLBACK, *(f"{m}-onnx" for m in MODEL_AGNOSTIC))


def torch_weights(onnx_path: str | Path) -> Path | None:
    """The PyTorch weights of an ONNX model: ``<name>.pt`` beside it, else among the shipped assets."""
    from emolens.models import ASSETS

    p = Path(onnx_path)
    for candidate in (p.with_suffix(".pt"), ASSETS / f"{p.stem}.pt"):
        if candidate.is_file():
            return candidate
    return None


@lru_cache(maxsize=4)
def load_torch_model(path: str):
    """(model in eval mode, checkpoint state) for a ``.pt`` checkpoint; loaded once per path."""
    require("torch", "explain")
    from emolens.train.export import load_checkpoint

    return load_checkpoint(path)


def explain_crop(crop: np.ndarray, target: int, method: str = "gradcam", torch_model=None, spec=None, onnx_model=None):
    """(H, W) map in [0, 1] for one aligned uint8 crop: a PyTorch method when ``torch_model`` is
    given (``spec`` = its input spec), else on ``onnx_model`` (an ``EmotionModel``): LIME or SHAP
    when ``method`` is one of them, occlusion otherwise."""
    if torch_model is None:
        if onnx_model is None:
            raise EmoLensError("explain_crop needs a PyTorch model or an ONNX EmotionModel")
        if method in MODEL_AGNOSTIC:
            from emolens.explain.blackbox import ONNX_METHODS

            return ONNX_METHODS[method](onnx_model, crop, target)
        from emolens.explain.methods import occlusion_onnx

        return occlusion_onnx(onnx_model, crop, target)
    require("torch", "explain")
    from emolens.explain.methods import get_method, to_tensor

    return get_method(method)(torch_model, to_tensor(crop, spec), int(target))


def colorize(heat: np.ndarray) -> np.ndarray:
    """[0, 1] map → RGB uint8 with the JET colormap (blue = unimportant, red = important)."""
    u8 = np.clip(np.asarray(heat) * 255, 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(u8, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def overlay_crop(crop: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The crop (grey or RGB) as RGB with the heat map blended over it."""
    rgb = cv2.cvtColor(crop, cv2.COLOR_GRAY2RGB) if crop.ndim == 2 else crop
    return cv2.addWeighted(rgb, 1 - alpha, colorize(heat), alpha, 0)


def overlay_photo(image: ImageInput, faces: list[dict], alpha: float = 0.5, labels: bool = True) -> np.ndarray:
    """The photo (RGB uint8) with every face's heat map warped back in place and blended over it,
    and, with ``labels``, each face's box and label numbered as ``emolens analyze`` draws them.

    Without ``labels``, pixels outside all faces' crops are returned unchanged."""
    img = load_image(image)
    h, w = img.shape[:2]
    heat = np.zeros((h, w), np.float32)
    cover = np.zeros((h, w), np.float32)
    for f in faces:
        inverse = cv2.invertAffineTransform(np.asarray(f["matrix"], dtype=np.float64))
        crop_heat = np.asarray(f["heatmap_crop"], dtype=np.float32)
        ones = np.ones_like(crop_heat)

        def warp(a: np.ndarray, m: np.ndarray = inverse) -> np.ndarray:
            return cv2.warpAffine(a, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)

        heat = np.maximum(heat, warp(crop_heat))
        cover = np.maximum(cover, warp(ones))
    weight = (alpha * cover)[..., None]
    out = img.astype(np.float32) * (1 - weight) + colorize(heat).astype(np.float32) * weight
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if labels and faces:
        from emolens.image.draw import draw_faces
        from emolens.pipeline.results import COLORS

        texts = [f"{f.get('index', i)}: {f['label']} {f['confidence']:.0%}" for i, f in enumerate(faces)]
        draw_faces(out, [f["box"] for f in faces], texts, [COLORS.get(f["label"], (255, 255, 255)) for f in faces])
    return out


def explain_image(
    image_or_path: ImageInput,
    method: str = "gradcam",
    model: str | Path | None = None,
    analyzer=None,
    alpha: float = 0.5,
    face: int | None = None,
) -> list[dict]:
    """Explain the predicted emotion of every face (or only face number ``face``); one dict per
    face, in detection order. ``model`` None: the active model, as ``Analyzer`` picks it.

    Each dict: ``index`` (the face's number, as ``emolens analyze`` counts them), ``box``, ``label``,
    ``target`` (class index), ``confidence``, ``probs``, ``method`` (the one used), ``note`` (why
    another method was used, else None), ``heatmap_crop`` ((S, S) float32 in [0, 1]),
    ``overlay_crop`` (RGB), ``crop`` (the aligned uint8 crop), ``matrix`` (the
    2x3 image → crop alignment matrix) and ``seconds`` (time spent explaining this face).
    ``analyzer`` (an ``Analyzer``) supplies detector and model, and then its model wins over ``model``.
    Pass the list to ``overlay_photo(image, faces)`` for the whole photo with its heat maps.

    Needs the model's PyTorch weights (``<name>.pt`` beside the ``.onnx``, or shipped); without
    them every face is explained by occlusion on the ONNX model, and ``note`` says so (``lime`` and
    ``shap`` need no weights: they run on the ONNX model itself, as ``lime-onnx``/``shap-onnx``).
    ``occlusion-onnx``, ``lime-onnx`` and ``shap-onnx`` always explain the ONNX model itself.
    """
    from emolens.pipeline.analyzer import Analyzer

    if method not in METHOD_NAMES + ONNX_METHOD_NAMES:
        choices = ", ".join(METHOD_NAMES + ONNX_METHOD_NAMES)
        raise EmoLensError(f"unknown explanation method {method!r}; choose one of {choices}")
    analyzer = analyzer or Analyzer(model=model)
    img = load_image(image_or_path)
    onnx_model = analyzer.model
    if onnx_model.path is None:  # an ensemble or TTA: no one network to explain
        raise EmoLensError(
            f"explanations need a single model, not {analyzer.model_name!r}"
            + (" with --tta" if analyzer.tta else "")
            + ": explain each member on its own"
        )
    spec = onnx_model.meta.input
    weights = None if method in ONNX_METHOD_NAMES else torch_weights(onnx_model.path)
    torch_model, used, note = None, method, None
    method = method.removesuffix("-onnx")
    if used in ONNX_METHOD_NAMES:
        pass
    elif weights is not None:
        torch_model, _ = load_torch_model(str(weights))
    elif method in MODEL_AGNOSTIC:
        used = f"{method}-onnx"  # model-agnostic: the ONNX model is explained by the same method
    else:
        used = ONNX_FALLBACK
        note = (
            f"no PyTorch weights ({onnx_model.path.stem}.pt) beside {onnx_model.path}: "
            f"explained by occlusion on the ONNX model instead of {method}"
        )
    detections = analyzer.detector(img)
    if face is not None and not 0 <= face < len(detections):
        raise EmoLensError(f"no face {face}: {len(detections)} face(s) found, numbered from 0")
    results = analyzer.classify_faces(img, detections)
    out = []
    for index, (det, res) in enumerate(zip(detections, results, strict=True)):
        if (face is not None and index != face) or res.error or not res.probs:
            continue
        crop = align_face(img, det.box, det.landmarks, spec.size, spec.channels)
        target = onnx_model.labels.index(res.label)
        t0 = time.perf_counter()
        heat = explain_crop(crop, target, method, torch_model, spec, onnx_model)
        seconds = time.perf_counter() - t0
        out.append(
            {
                "index": index,
                "box": [float(v) for v in det.box],
                "label": res.label,
                "target": target,
                "confidence": res.confidence,
                "probs": res.probs,
                "method": used,
                "note": note,
                "heatmap_crop": heat,
                "overlay_crop": overlay_crop(crop, heat, alpha),
                "crop": crop,
                "matrix": alignment_matrix(det.box, det.landmarks, spec.size),
                "seconds": seconds,
            }
        )
    return out
