"""Training throughput (images/s) of each architecture, on the CPU and on a GPU when present.

Method: the real training step of `emolens.train.loop` (batched augmentation, forward, loss,
backward, AdamW step) on random 48x48 grey batches of --batch images; --warmup untimed steps,
then the median of --steps timed steps. CPU threads: torch's default (all cores).

The second table (``--settings ARCH``) changes one training setting at a time against the loop's
own (channels-last memory, batch 128, all threads, eager mode, 48x48): contiguous NCHW memory,
batches of 64 and 256, one thread, ``torch.compile``, and 40x40 random crops (Khaireddin & Chen's
recipe, tested with ten crops: 10x the evaluation cost, none in training).

    python benchmarks/train_speed.py [--archs vgg-tiny,vgg-small] [--batch 128] [--steps 8]
    python benchmarks/train_speed.py --archs "" --settings vgg-tiny,mobilenetv2-64
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


def step_time(
    arch: str,
    device: torch.device,
    batch: int,
    steps: int,
    warmup: int,
    channels_last: bool = True,
    compile_model: bool = False,
    size: int = 48,
) -> float:
    memory = torch.channels_last if channels_last else torch.contiguous_format
    model = create_arch(arch).to(device, memory_format=memory)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    if compile_model:
        model = torch.compile(model)
    cfg, aug = TrainConfig(), AugmentConfig()
    x = torch.randint(0, 255, (batch, 1, size, size), dtype=torch.uint8, device=device)
    y = torch.nn.functional.one_hot(torch.randint(0, 7, (batch,), device=device), 7).float()
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        xb = normalize(augment_batch(x.float() / 255, aug)).contiguous(memory_format=memory)
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
    ap.add_argument("--settings", default="", help="architectures to run the one-setting-at-a-time table for")
    args = ap.parse_args()
    if args.settings:
        settings_table(args.settings.split(","), args.batch, args.steps, args.warmup)
    if not args.archs:
        return
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


SETTINGS = {  # name → step_time keyword arguments, each one change from the loop's own settings
    "the loop's settings (channels-last, batch 128)": {},
    "contiguous NCHW memory": {"channels_last": False},
    "batch 64": {"batch": 64},
    "batch 256": {"batch": 256},
    "one thread": {"threads": 1},
    "torch.compile": {"compile_model": True},
    "40x40 random crops": {"size": 40},
}


def settings_table(archs: list[str], batch: int, steps: int, warmup: int) -> None:
    cpu, threads = torch.device("cpu"), torch.get_num_threads()
    print(f"## One setting at a time (CPU images/s, {threads} threads unless said)\n")
    print("| setting | " + " | ".join(archs) + " |")
    print("|---|" + "---|" * len(archs))
    for name, kw in SETTINGS.items():
        kw = dict(kw)
        torch.set_num_threads(kw.pop("threads", threads))
        b = kw.pop("batch", batch)
        try:
            row = [f"{step_time(a, cpu, b, steps, warmup, **kw):,.0f}" for a in archs]
        except Exception as exc:  # torch.compile needs a C++ compiler: report, do not stop
            row = [f"failed: {type(exc).__name__}"] * len(archs)
        torch.set_num_threads(threads)
        print(f"| {name} | " + " | ".join(row) + " |")
    print()


if __name__ == "__main__":
    main()
