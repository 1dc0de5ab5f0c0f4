"""Attribution methods: which pixels of a face crop made the model say what it said.

Every method is ``fn(model, x, target) -> (H, W) float32 map in [0, 1]``: ``model`` a PyTorch
classifier in eval mode returning logits, ``x`` one normalised crop (1, C, H, W), ``target`` the
class index to explain. 1 marks the most important pixel, 0 the least (or a negative one).

``integrated-gradients`` and ``occlusion`` use Captum when it is installed and an equivalent
implementation of their own otherwise. ``occlusion_onnx`` needs no gradients at all, so it also
explains ONNX-only models. ``lime`` and ``shap`` (model-agnostic, optional extras ``lime`` and
``shap``) live in ``emolens.explain.blackbox``, with ONNX variants there too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from emolens.classify.emotion import to_input
from emolens.classify.modelfile import InputSpec
from emolens.core.errors import EmoLensError
from emolens.explain import blackbox

Method = Callable[[nn.Module, torch.Tensor, int], np.ndarray]
PATCH, STRIDE = 8, 4  # occlusion: an 8x8 mid-grey square slid in steps of 4 px (121 positions at 48 px)
IG_STEPS = 32


def normalize_map(m: np.ndarray) -> np.ndarray:
    """Negative evidence clipped to 0, then scaled to [0, 1]; an all-equal map becomes all zeros."""
    m = np.maximum(np.nan_to_num(np.asarray(m, dtype=np.float32)), 0)
    lo, hi = float(m.min()), float(m.max())
    return ((m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)).astype(np.float32)


def to_tensor(crops: np.ndarray, spec) -> torch.Tensor:
    """uint8 crop(s) → the normalised NCHW tensor; ``spec`` is the model's input spec (dict or InputSpec).

    Grey models take (H, W) or (N, H, W), colour models (H, W, C) or (N, H, W, C)."""
    spec = InputSpec(**{**(spec if isinstance(spec, dict) else dataclasses.asdict(spec)), "layout": "NCHW"})
    a = np.asarray(crops)
    if a.ndim == (2 if spec.channels == 1 else 3):
        a = a[None]
    return torch.from_numpy(to_input(a, spec))


def feature_layer(model: nn.Module) -> nn.Module:
    """The last ``nn.Conv2d`` before the global pooling (or the last one of all, when there is no such pooling)."""
    last = None
    for m in model.modules():
        if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) and last is not None:
            return last
        if isinstance(m, nn.Conv2d):
            last = m
    if last is None:
        raise EmoLensError(f"{type(model).__name__} has no Conv2d layer: Grad-CAM needs one")
    return last


def _pooling(model: nn.Module) -> nn.Module | None:
    return next((m for m in model.modules() if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d))), None)


def _activations_and_grads(model: nn.Module, x: torch.Tensor, target: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature maps of the last conv stage and d logit[target] / d maps.

    The maps are those the global pooling reads (the last conv layer after its BN/ReLU, or the
    residual sum in a ResNet), caught by a pre-hook on the pooling layer; without such a layer,
    the output of the last Conv2d.
    """
    store: dict[str, torch.Tensor] = {}
    pool = _pooling(model)

    def keep(t: torch.Tensor) -> None:
        store["a"] = t
        t.register_hook(lambda g: store.__setitem__("g", g))

    if pool is not None:
        handle = pool.register_forward_pre_hook(lambda mod, inp: keep(inp[0]))
    else:
        handle = feature_layer(model).register_forward_hook(lambda mod, inp, out: keep(out))
    try:
        with torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)  # makes the graph reach the hooked maps
            logits = model(x)
            model.zero_grad(set_to_none=True)
            logits[0, target].backward()
    finally:
        handle.remove()
    return store["a"].detach()[0], store["g"].detach()[0]  # (K, h, w) each


def _upsample(cam: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    up = F.interpolate(cam[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    return normalize_map(up.numpy())


def gradcam(model: nn.Module, x: torch.Tensor, target: int) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017): feature maps weighted by their spatially averaged gradients."""
    a, g = _activations_and_grads(model, x, target)
    cam = torch.relu((g.mean(dim=(1, 2))[:, None, None] * a).sum(0))
    return _upsample(cam, tuple(x.shape[-2:]))


def gradcam_pp(model: nn.Module, x: torch.Tensor, target: int) -> np.ndarray:
    """Grad-CAM++ (Chattopadhay et al. 2018): per-location weights from 2nd/3rd-order gradient terms."""
    a, g = _activations_and_grads(model, x, target)
    g2, g3 = g**2, g**3
    denom = 2 * g2 + a.sum(dim=(1, 2), keepdim=True) * g3
    alpha = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)), torch.zeros_like(g))
    weights = (alpha * torch.relu(g)).sum(dim=(1, 2))
    cam = torch.relu((weights[:, None, None] * a).sum(0))
    return _upsample(cam, tuple(x.shape[-2:]))


def _captum():
    try:
        import captum.attr as attr

        return attr
    except ImportError:
        return None


def integrated_gradients(model: nn.Module, x: torch.Tensor, target: int, n_steps: int = IG_STEPS) -> np.ndarray:
    """Integrated Gradients (Sundararajan et al. 2017) from a mid-grey baseline (0 after normalisation).

    The map is the positive attribution summed over channels."""
    x = x.detach()
    attr = _captum()
    with torch.enable_grad():
        if attr is not None:
            ig = attr.IntegratedGradients(model)
            a = ig.attribute(
                x, baselines=torch.zeros_like(x), target=target, n_steps=n_steps, method="riemann_trapezoid"
            )
        else:  # the same Riemann-trapezoid sum, in one batch
            alphas = torch.linspace(0, 1, n_steps, dtype=x.dtype).view(-1, 1, 1, 1)
            path = (alphas * x).requires_grad_(True)
            model(path)[:, target].sum().backward()
            grads = path.grad
            avg = (grads[:-1] + grads[1:]).sum(0, keepdim=True) / (2 * (n_steps - 1))
            a = x * avg
    return normalize_map(a.detach()[0].sum(0).numpy())


def _occlusion_maps(scores: np.ndarray, base: float, h: int, w: int, positions, patch: int) -> np.ndarray:
    total = np.zeros((h, w), np.float32)
    count = np.zeros((h, w), np.float32)
    for (y, x0), s in zip(positions, scores, strict=True):
        total[y : y + patch, x0 : x0 + patch] += base - s
        count[y : y + patch, x0 : x0 + patch] += 1
    return normalize_map(total / np.maximum(count, 1))


def _positions(h: int, w: int, patch: int, stride: int) -> list[tuple[int, int]]:
    ys = list(range(0, max(h - patch, 0) + 1, stride))
    xs = list(range(0, max(w - patch, 0) + 1, stride))
    return [(y, x) for y in ys for x in xs]


def occlusion(model: nn.Module, x: torch.Tensor, target: int, patch: int = PATCH, stride: int = STRIDE) -> np.ndarray:
    """Occlusion (Zeiler & Fergus 2014): the drop in the target's probability when an 8x8 patch turns mid-grey."""
    x = x.detach()
    probs = nn.Sequential(model, nn.Softmax(dim=1)).eval()
    attr = _captum()
    c, h, w = x.shape[1:]
    if attr is not None:
        a = attr.Occlusion(probs).attribute(
            x,
            sliding_window_shapes=(c, patch, patch),
            strides=(c, stride, stride),
            baselines=0,
            target=target,
            perturbations_per_eval=128,
        )
        return normalize_map(a[0].sum(0).numpy())
    positions = _positions(h, w, patch, stride)
    batch = x.repeat(len(positions) + 1, 1, 1, 1)
    for i, (y, x0) in enumerate(positions, start=1):
        batch[i, :, y : y + patch, x0 : x0 + patch] = 0
    with torch.no_grad():
        p = probs(batch)[:, target].numpy()
    return _occlusion_maps(p[1:], float(p[0]), h, w, positions, patch)


def occlusion_onnx(
    emotion_model, crop: np.ndarray, target: int, patch: int = PATCH, stride: int = STRIDE
) -> np.ndarray:
    """Occlusion on any ``EmotionModel`` (ONNX, no gradients): all occluded crops in one predict call.

    ``crop`` is the aligned uint8 crop, (H, W) or (H, W, C); patches are set to mid-grey (128)."""
    crop = np.asarray(crop, dtype=np.uint8)
    h, w = crop.shape[:2]
    positions = _positions(h, w, patch, stride)
    batch = np.repeat(crop[None], len(positions) + 1, axis=0)
    for i, (y, x0) in enumerate(positions, start=1):
        batch[i, y : y + patch, x0 : x0 + patch] = 128
    p = emotion_model.predict(batch, batch_size=len(batch))[:, target]
    return _occlusion_maps(p[1:], float(p[0]), h, w, positions, patch)


METHODS: dict[str, Method] = {
    "gradcam": gradcam,
    "gradcam++": gradcam_pp,
    "integrated-gradients": integrated_gradients,
    "occlusion": occlusion,
    "lime": blackbox.lime,  # optional extras: the libraries are imported on first use
    "shap": blackbox.shap,
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise EmoLensError(f"unknown explanation method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]
