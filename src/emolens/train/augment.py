"""Batch augmentation on the training device: one call transforms a whole batch of tensors.

Working on batches (not per-image PIL transforms) keeps a CPU-only run fast and lets a GPU run
do the augmentation on the GPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from emolens.train.config import AugmentConfig


def random_affine(x: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    n = x.shape[0]
    dev = x.device
    angle = (torch.rand(n, device=dev) * 2 - 1) * math.radians(cfg.rotate_deg)
    scale = torch.empty(n, device=dev).uniform_(*cfg.scale)
    flip = torch.where(torch.rand(n, device=dev) < cfg.hflip, -1.0, 1.0)
    tx, ty = (torch.rand(2, n, device=dev) * 2 - 1) * cfg.translate * 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def photometric(x: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Brightness and contrast jitter on images in [0, 1]."""
    n = x.shape[0]
    shape = (n,) + (1,) * (x.dim() - 1)
    b = (torch.rand(shape, device=x.device) * 2 - 1) * cfg.brightness
    c = 1 + (torch.rand(shape, device=x.device) * 2 - 1) * cfg.contrast
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * c + mean + b).clamp(0, 1)


def random_erase(x: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    n, _, h, w = x.shape
    dev = x.device
    area = torch.empty(n, device=dev).uniform_(*cfg.erase_area) * h * w
    aspect = torch.exp(torch.empty(n, device=dev).uniform_(math.log(0.5), math.log(2.0)))
    eh = (area * aspect).sqrt().clamp(max=h)
    ew = (area / aspect).sqrt().clamp(max=w)
    y0 = torch.rand(n, device=dev) * (h - eh)
    x0 = torch.rand(n, device=dev) * (w - ew)
    ys = torch.arange(h, device=dev).view(1, h, 1)
    xs = torch.arange(w, device=dev).view(1, 1, w)
    inside = (
        (ys >= y0.view(n, 1, 1))
        & (ys < (y0 + eh).view(n, 1, 1))
        & (xs >= x0.view(n, 1, 1))
        & (xs < (x0 + ew).view(n, 1, 1))
    )
    chosen = (torch.rand(n, device=dev) < cfg.erase_p).view(n, 1, 1)
    mask = (inside & chosen).unsqueeze(1)
    return torch.where(mask, torch.rand_like(x), x)


def augment_batch(x: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """x: float tensor in [0, 1], NCHW. Returns an augmented batch of the same shape."""
    x = random_affine(x, cfg)
    x = photometric(x, cfg)
    if cfg.erase_p > 0:
        x = random_erase(x, cfg)
    return x


def mixup_cutmix(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns mixed inputs and soft targets; ``y`` is class indices or (N, classes) distributions.
    With both alphas at 0 the inputs are returned as they are."""
    target = y.float() if y.dim() == 2 else F.one_hot(y, num_classes).float()
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return x, target
    perm = torch.randperm(x.shape[0], device=x.device)
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or torch.rand(()) < 0.5)
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    if use_cutmix:
        _, _, h, w = x.shape
        ch, cw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        x = x.clone()
        x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        x = lam * x + (1 - lam) * x[perm]
    return x, lam * target + (1 - lam) * target[perm]
