"""What one training step is made of: the loss, the targets it is given (soft labels, FER+ modes),
the optimizer with its parameter groups (staged fine-tuning, layer-wise LR decay), the learning-rate
schedule, and the order in which an epoch draws the training images. ``fit`` (``emolens.train.loop``)
puts them together."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from emolens.core.errors import EmoLensError
from emolens.train.archs import layer_blocks
from emolens.train.config import LABEL_MODES, TrainConfig


def param_groups(model: torch.nn.Module, kind: str, cfg: TrainConfig) -> list[dict]:
    """Optimizer parameter groups for a stage: the head alone, or every block with its learning rate
    (``lr * layer_decay ** blocks-from-the-head``). Parameters outside the stage are frozen."""
    blocks = layer_blocks(model)
    if kind == "head":
        groups = [{"params": blocks[-1], "lr": cfg.lr}]
    elif cfg.layer_decay == 1.0:
        groups = [{"params": list(model.parameters()), "lr": cfg.lr}]
    else:
        depth = len(blocks) - 1
        groups = [{"params": b, "lr": cfg.lr * cfg.layer_decay ** (depth - i)} for i, b in enumerate(blocks)]
    trainable = {id(p) for g in groups for p in g["params"]}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    return groups


def make_optimizer(groups: list[dict], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
        )
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_schedule(opt: torch.optim.Optimizer, cfg: TrainConfig, epochs: int, updates_per_epoch: int):
    """OneCycle (per-group peak = the group's LR) or linear warm-up then cosine decay; stepped once per update.
    Returns the scheduler and the number of updates it covers."""
    total = epochs * updates_per_epoch
    if cfg.schedule == "onecycle":
        peaks = [g["lr"] for g in opt.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=peaks, epochs=epochs, steps_per_epoch=updates_per_epoch, pct_start=0.15
        ), total
    warm = min(total, round(cfg.warmup_epochs * updates_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: cosine_warmup(step, warm, total)), total


def cosine_warmup(step: int, warm: int, total: int) -> float:
    """LR factor after ``step`` updates: rises linearly to 1 over ``warm`` updates, then falls to 0 on a cosine."""
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))


def loss_fn(logits: torch.Tensor, soft_target: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    n_cls = logits.shape[1]
    target = soft_target * (1 - cfg.label_smoothing) + cfg.label_smoothing / n_cls
    logp = F.log_softmax(logits, 1)
    per_class = -target * logp
    if cfg.focal_gamma > 0:
        per_class = per_class * (1 - logp.exp()).pow(cfg.focal_gamma)
    if cfg.class_weights is not None:
        per_class = per_class * torch.tensor(cfg.class_weights, device=logits.device)
    return per_class.sum(1).mean()


def soft_targets(y, n_classes: int) -> torch.Tensor | None:
    """(N, classes) label distributions as a float tensor, or None for integer labels."""
    y = np.asarray(y)
    if y.ndim != 2:
        return None
    if y.shape[1] != n_classes:
        raise EmoLensError(f"soft labels have {y.shape[1]} columns but the model has {n_classes} classes")
    return torch.from_numpy((y / np.maximum(y.sum(1, keepdims=True), 1e-12)).astype(np.float32))


def draw_targets(dist: torch.Tensor, mode: str) -> torch.Tensor:
    """The FER+ paper's modes: the distribution itself, one label drawn from it each time, or its majority."""
    if mode == "majority":
        return dist.argmax(1)
    if mode == "distribution":
        return dist
    if mode == "probability":
        return torch.multinomial(dist, 1).squeeze(1)
    raise EmoLensError(f"label_mode must be one of {', '.join(LABEL_MODES)}, not {mode!r}")


def epoch_order(labels: torch.Tensor, n_classes: int, weighted: bool) -> torch.Tensor:
    """A shuffled epoch, or with ``weighted`` a class-balanced draw (with replacement) of the same size."""
    if not weighted:
        return torch.randperm(len(labels))
    counts = torch.bincount(labels, minlength=n_classes).clamp(min=1).float()
    return torch.multinomial((1.0 / counts)[labels], len(labels), replacement=True)
