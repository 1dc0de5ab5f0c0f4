"""Training throughput (images/s) of each architecture, on the CPU and on a GPU when present.

Method: the real training step of `emolens.train.loop` (batched augmentation, forward, loss,
backward, AdamW step) on random 48x48 grey batches of --batch images; --warmup untimed steps,
then the median of --steps timed steps. CPU threads: torch's default (all cores).

    python benchmarks/train_speed.py [--archs vgg-tiny,vgg-small] [--batch 128] [--steps 8]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from emolens.train.archs import create_arch, list_archs
from emolens.train.augment import AugmentConfig, augment_batch
from emolens.train.loop import TrainConfig, normalize
from emolens.train.optim import loss_fn


def step_time(arch: str, device: torch.device, batch: int, steps: int, warmup: int) -> float:
    model = create_arch(arch).to(device, memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    cfg, aug = TrainConfig(), AugmentConfig()
    x = torch.randint(0, 255, (batch, 1, 48, 48), dtype=torch.uint8, device=device)
    y = torch.nn.functional.one_hot(torch.randint(0, 7, (batch,), device=device), 7).float()
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        xb = normalize(augment_batch(x.float() / 255, aug)).contiguous(memory_format=torch.channels_last)
        loss = loss_fn(model(xb), y, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return batch / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", default=",".join(list_archs()))
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"## Training throughput, batch {args.batch}, 48x48 grey\n")
    print("| architecture | parameters | " + " | ".join(f"{d.type} images/s" for d in devices) + " |")
    print("|---|---|" + "---|" * len(devices))
    for arch in args.archs.split(","):
        n = sum(p.numel() for p in create_arch(arch).parameters())
        speeds = [step_time(arch, d, args.batch, args.steps, args.warmup) for d in devices]
        print(f"| {arch} | {n:,} | " + " | ".join(f"{s:,.0f}" for s in speeds) + " |")
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    print(
        f"\nMedian of {args.steps} steps after {args.warmup} warm-up; torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads, {platform.machine()} with {os.cpu_count()} cores{gpu}."
    )


if __name__ == "__main__":
    main()
