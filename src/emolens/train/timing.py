"""How long a training run will take, estimated before it starts from a few timed steps.

The cost of a step depends on the model and on how busy the machine is (fine-tuning 462 crops
took 2.6 minutes on a quiet 2-core machine and 13 under load), so the steps are timed here and
now rather than taken from a table: still an estimate, since the load can change while it runs.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from emolens.train.archs import create_arch
from emolens.train.augment import augment_batch
from emolens.train.loop import normalize, to_tensor


def step_seconds(cfg, x: np.ndarray) -> tuple[float, float]:
    """Seconds per crop of one training step and of inference, timed on this machine now (the
    median of three steps after two warm-up steps): what the time estimate is made of."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dev = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else "cpu")
    model = create_arch(cfg.arch, len(cfg.labels), cfg.channels, dropout=cfg.dropout)
    model = model.to(dev, memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=0.0)
    raw = to_tensor(x[: cfg.batch_size])
    y = torch.zeros(len(raw), dtype=torch.long, device=dev)
    steps = []
    for _ in range(5):  # a step as train.loop.fit takes it: augment, forward, backward, update
        t = time.perf_counter()
        xb = normalize(augment_batch(raw.to(dev).float() / 255, cfg.augment))
        F.cross_entropy(model(xb.contiguous(memory_format=torch.channels_last)), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        steps.append(time.perf_counter() - t)
    model.eval()
    clean = normalize(raw.to(dev).float() / 255).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        for _ in range(2):  # the second pass: the first sets up the inference kernels
            t = time.perf_counter()
            model(clean)
            infer = time.perf_counter() - t
    return float(np.median(steps[2:])) / len(raw), infer / len(raw)


def estimate_seconds(cfg, x_train: np.ndarray, n_judged: int, n_val: int = 1000) -> float:
    """Expected seconds of fine-tuning: the training steps of every epoch, each epoch's batch-norm
    refresh (up to 20 x 256 training crops) and check on ``n_val`` faces, and judging both models
    on ``n_judged`` faces."""
    train_s, infer_s = step_seconds(cfg, x_train)
    steps = max(len(x_train) // cfg.batch_size, 1) * cfg.batch_size
    per_epoch = steps * train_s + (min(len(x_train), 20 * 256) + n_val) * infer_s  # see train.loop.fit
    return cfg.epochs * per_epoch + 2 * n_judged * infer_s + 5.0  # + export and registration
