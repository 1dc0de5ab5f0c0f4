"""The training loop: batched augmentation, label smoothing / focal loss, AdamW or SGD, OneCycle or
cosine with warm-up, EMA, and staged fine-tuning (head first, then all layers with layer-wise LR decay).
The recipe is a ``TrainConfig`` (``emolens.train.config``); the loss, optimizers and schedules are in
``emolens.train.optim``.

`fit` takes arrays (uint8 images N,H,W[,C] and int labels) so any dataset loader can feed it, and
writes a checkpoint that `emolens.train.export` turns into the analyzer's ONNX format.
"""

from __future__ import annotations

import copy
import csv
import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score

from emolens.core.errors import EmoLensError
from emolens.image.degrade import random_degrade
from emolens.train.archs import create_arch, layer_blocks
from emolens.train.augment import augment_batch, mixup_cutmix
from emolens.train.config import AugmentConfig, TrainConfig, check_config
from emolens.train.optim import (
    draw_targets,
    epoch_order,
    loss_fn,
    make_optimizer,
    make_schedule,
    param_groups,
    soft_targets,
)
from emolens.train.pretrained import imagenet_weights


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 N,H,W or N,H,W,C → uint8 NCHW tensor (kept uint8 in memory: 4x smaller)."""
    t = torch.from_numpy(np.ascontiguousarray(images))
    return t.unsqueeze(1) if t.dim() == 3 else t.permute(0, 3, 1, 2).contiguous()


def normalize(x01: torch.Tensor) -> torch.Tensor:
    return (x01 - 0.5) / 0.5


@torch.no_grad()
def predict_proba(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    model.eval()
    dev = next(model.parameters()).device
    out = []
    for i in range(0, len(images), batch_size):
        x = normalize(images[i : i + batch_size].to(dev).float() / 255)
        out.append(F.softmax(model(x).float(), 1).cpu())
    return torch.cat(out).numpy()


def score(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    pred = probs.argmax(1)
    return {"accuracy": float((pred == labels).mean()), "macro_f1": float(f1_score(labels, pred, average="macro"))}


def fit(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    cfg: TrainConfig,
    out_dir: str | Path,
    resume: str | Path | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    init: dict | None = None,
    init_labels: list[str] | None = None,
    lineage: list[dict] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    validation: str = "",
) -> dict:
    """Train, keep the best EMA weights on the validation metric, write best.pt/last.pt + log.

    ``on_epoch`` is called with each epoch's log row (``val_accuracy``, ``val_macro_f1``...) after
    the checkpoints are written; an exception it raises ends training (a tuner pruning a trial).

    ``stop_after`` ends this call after that many epochs (a time-boxed run); ``resume`` with the
    written last.pt continues the same schedule where it stopped. ``init`` (a state dict) starts
    from trained weights: fine-tuning; when ``init_labels`` differ from ``cfg.labels`` (or the head's
    shape differs) the head starts afresh. ``lineage`` (``lineage_of`` the checkpoint ``init`` came
    from) is kept in the checkpoints, so a model card can tell every run that made the model.
    ``validation`` says where ``val`` came from (for the model card's validation protocol).
    ``cfg.select_on="last"`` keeps the final weights. ``train[1]`` may be label distributions
    (N, classes), such as FER+ votes: ``cfg.label_mode`` says how they are learnt.
    ``cfg.stages`` (e.g. ``"head:2,all:8"``) trains only the classifier head first, then all layers,
    each stage with its own optimizer and schedule; ``cfg.layer_decay`` < 1 gives the layers further
    from the head smaller learning rates.
    """
    plan = check_config(cfg)
    stage_of = [i for i, (_, n) in enumerate(plan) for _ in range(n)]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    dev = torch.device(
        "cuda"
        if cfg.device == "auto" and torch.cuda.is_available()
        else ("cpu" if cfg.device == "auto" else cfg.device)
    )
    xtr, ysoft = to_tensor(train[0]), soft_targets(train[1], len(cfg.labels))
    ytr = ysoft.argmax(1) if ysoft is not None else torch.from_numpy(np.asarray(train[1], dtype=np.int64))
    xva, yva = to_tensor(val[0]), np.asarray(val[1], dtype=np.int64)
    # channels_last runs convolutions about 1.4x faster on CPU (measured on the 2-core machine)
    model = create_arch(cfg.arch, len(cfg.labels), cfg.channels, dropout=cfg.dropout).to(
        dev, memory_format=torch.channels_last
    )
    if init is not None:
        _load_init(model, init, init_labels=init_labels, labels=cfg.labels)
    elif cfg.pretrained and not resume:
        _load_init(model, imagenet_weights(cfg.arch), fresh_head=True)
    ema = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema_decay)
    )
    steps_per_epoch = max(len(xtr) // cfg.batch_size, 1)
    updates_per_epoch = max(steps_per_epoch // cfg.accumulate, 1)

    def begin_stage(i: int) -> tuple[torch.optim.Optimizer, object, int]:
        kind, epochs = plan[i]
        opt = make_optimizer(param_groups(model, kind, cfg), cfg)
        sched, total = make_schedule(opt, cfg, epochs, updates_per_epoch)
        return opt, sched, total

    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.amp and dev.type == "cuda")
    start_epoch, best, history = 0, -1.0, []
    if resume:
        state = torch.load(resume, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        start_epoch, best, history = state["epoch"] + 1, state["best"], state["history"]
        lineage = state.get("lineage", lineage)
    stage = stage_of[min(start_epoch, len(stage_of) - 1)]
    opt, sched, total_updates = begin_stage(stage)
    if resume and state.get("stage", 0) == stage:  # stopped inside this stage: carry on its schedule
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])

    def checkpoint(epoch: int, weights: dict) -> dict:
        return {
            "model": weights,
            "ema": ema.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "stage": stage,
            "epoch": epoch,
            "best": best,
            "history": history,
            "config": asdict(cfg),
            "labels": cfg.labels,
            "input": cfg.input_spec,
            "versions": {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()},
            "n_train": len(xtr),
            "n_val": len(xva),
            "validation": validation,
            "hardware": _hardware(),
            "lineage": lineage or [],
            "rng": _rng_state(),  # so --resume draws the same batches and augmentations as one unbroken run
        }

    if resume and "rng" in state:
        _set_rng_state(state["rng"])
    bar = _progress(progress)
    with bar:
        task = bar.add_task("training", total=(cfg.epochs - start_epoch) * steps_per_epoch)
        stale = 0
        end = cfg.epochs if stop_after is None else min(cfg.epochs, start_epoch + stop_after)
        for epoch in range(start_epoch, end):
            if stage_of[epoch] != stage:
                stage = stage_of[epoch]
                opt, sched, total_updates = begin_stage(stage)
            _train_mode(model)
            t0, seen, loss_sum = time.time(), 0, 0.0
            order = epoch_order(ytr, len(cfg.labels), cfg.weighted_sampling)
            for step in range(steps_per_epoch):
                idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
                xb = xtr[idx]
                if cfg.augment.degrade > 0:  # on the uint8 CPU batch: JPEG and resizing need OpenCV
                    rng = np.random.default_rng(np.random.randint(2**31))  # from the checkpointed global state
                    xb = _degrade_nchw(xb, cfg.augment, rng)
                x = augment_batch(xb.to(dev).float() / 255, cfg.augment)
                y = ytr[idx] if ysoft is None else draw_targets(ysoft[idx], cfg.label_mode)
                x, target = mixup_cutmix(x, y.to(dev), len(cfg.labels), cfg.mixup_alpha, cfg.cutmix_alpha)
                with autocast:
                    logits = model(normalize(x).contiguous(memory_format=torch.channels_last))
                loss = loss_fn(logits.float(), target, cfg)
                (loss / cfg.accumulate).backward()
                if (step + 1) % cfg.accumulate == 0 and sched.last_epoch < total_updates:
                    if cfg.grad_clip:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                    sched.step()
                    ema.update_parameters(model)
                seen += len(idx)
                loss_sum += float(loss.detach()) * len(idx)
                bar.advance(task)
            _refresh_bn(ema.module, xtr)
            metrics = score(predict_proba(ema.module, xva), yva)
            opt.zero_grad(set_to_none=True)  # a partial accumulation never leaks into the next epoch
            row = {
                "epoch": epoch,
                "loss": loss_sum / seen,
                "lr": sched.get_last_lr()[-1],  # the head's (the last group's) learning rate
                "train_images_per_s": seen / (time.time() - t0),
                **({"stage": plan[stage][0]} if len(plan) > 1 else {}),
                **{f"val_{k}": v for k, v in metrics.items()},
            }
            history.append(row)
            bar.console.print(
                f"epoch {epoch + 1}/{cfg.epochs}  loss {row['loss']:.4f}  val acc {metrics['accuracy']:.4f}  "
                f"macro-F1 {metrics['macro_f1']:.4f}  {row['train_images_per_s']:.0f} img/s"
                + (f"  ({plan[stage][0]} stage)" if len(plan) > 1 else "")
            )
            current = epoch if cfg.select_on == "last" else metrics[cfg.select_on]
            ema_weights = copy.deepcopy(ema.module.state_dict())
            if current > best:
                best, stale = current, 0
                _save(checkpoint(epoch, ema_weights), out / "best.pt")
            else:
                stale += 1
            _save(checkpoint(epoch, model.state_dict()), out / "last.pt")
            _write_log(out, history)
            _plot_curves(out, history)
            if on_epoch is not None:
                on_epoch(row)
            if cfg.patience and stale >= cfg.patience:
                bar.console.print(f"early stop: no {cfg.select_on} gain for {stale} epochs")
                break
    for p in model.parameters():
        p.requires_grad_(True)
    return {"best": best, "history": history, "checkpoint": str(out / "best.pt")}


def run_summary(state: dict) -> dict:
    """One training run as a checkpoint records it: best epoch, its validation scores, time, machine."""
    history = state.get("history", [])
    best = next((row for row in history if row["epoch"] == state["epoch"]), {})
    n_train = state.get("n_train")
    seconds = sum(n_train / row["train_images_per_s"] for row in history) if history and n_train else None
    return {
        "epochs_planned": state["config"]["epochs"],
        "best_epoch": int(state["epoch"]) + 1,
        "val_accuracy": best.get("val_accuracy"),
        "val_macro_f1": best.get("val_macro_f1"),
        "train_seconds": None if seconds is None else round(seconds),
        "hardware": state.get("hardware") or f"{platform.machine()} CPU",
        "validation": state.get("validation") or None,
        "n_val": state.get("n_val"),
    }


def lineage_of(state: dict) -> list[dict]:
    """The runs that made a checkpoint, oldest first: what a run started from it passes to ``fit``."""
    return [*state.get("lineage", []), {"recipe": state["config"], **run_summary(state)}]


def final_weights(last: str | Path, images: np.ndarray, out: str | Path) -> Path:
    """A checkpoint of a finished run's own last weights instead of their EMA, with BatchNorm
    statistics re-estimated on clean ``images``: for short fine-tunes, where an EMA with decay
    0.999 still holds mostly the starting weights (after 800 updates, 45% of them). The
    checkpoint's config records ``weights: "final"`` so the model card says so."""
    state = torch.load(last, map_location="cpu", weights_only=False)
    cfg = state["config"]
    model = create_arch(cfg["arch"], len(state["labels"]), cfg["channels"], dropout=cfg["dropout"])
    model.load_state_dict(state["model"])
    torch.manual_seed(cfg["seed"])
    _refresh_bn(model, to_tensor(images))
    state.update(model=model.state_dict(), config={**cfg, "weights": "final"})
    torch.save(state, out)
    return Path(out)


def _save(state: dict, path: Path) -> None:
    """``torch.save`` whole or not at all (``emolens.core.fileio.atomic_write``): a run stopped while
    saving (a time limit, Ctrl-C) keeps the previous checkpoint rather than a truncated one."""
    import io

    from emolens.core.fileio import atomic_write

    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write(path, buf.getvalue(), mode=0o644)  # weights, not faces: readable as torch.save left them


def _degrade_nchw(x: torch.Tensor, aug: AugmentConfig, rng: np.random.Generator) -> torch.Tensor:
    """``random_degrade`` on a uint8 NCHW batch (it works on N,H,W or N,H,W,3 crops)."""
    nhwc = x.permute(0, 2, 3, 1).numpy()
    crops = nhwc[..., 0] if nhwc.shape[-1] == 1 else nhwc
    out = random_degrade(crops, aug.degrade, rng, aug.degrade_weights).reshape(nhwc.shape)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _rng_state() -> dict:
    rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def _set_rng_state(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def _load_init(
    model: torch.nn.Module,
    init: dict,
    fresh_head: bool = False,
    init_labels: list[str] | None = None,
    labels: list[str] | None = None,
) -> None:
    """Start from ``init`` weights. Only the head may be left out (``fresh_head``, or a head whose
    shape differs: another number of classes); any other mismatch means another architecture.

    With ``init_labels`` and ``labels`` that differ, the head keeps the rows of the labels both have
    (an 8-class model grown from a 7-class one keeps the 7 trained rows); a new label's row starts as
    the architecture initialises it, with the lowest old bias, so that it starts rare; no common label
    means a fresh head."""
    head = {id(p) for p in layer_blocks(model)[-1]}
    head_names = {name for name, p in model.named_parameters() if id(p) in head}
    own = model.state_dict()
    unexpected = sorted(set(init) - set(own))
    take = {k: v for k, v in init.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    relabel = init_labels is not None and labels is not None and list(init_labels) != list(labels)
    common = [(i, list(init_labels).index(c)) for i, c in enumerate(labels or []) if c in (init_labels or [])]
    if fresh_head or relabel:
        take = {k: v for k, v in take.items() if k not in head_names}
    if relabel and common and not fresh_head:
        for k in head_names & set(init):
            old, new = init[k], own[k].clone()
            if old.shape[0] != len(init_labels) or new.shape[0] != len(labels) or old.shape[1:] != new.shape[1:]:
                continue  # not a per-class tensor (a hidden layer of the head): starts afresh
            if new.ndim == 1:  # a bias: new classes start as the rarest old one
                new[:] = old.min()
            for i, j in common:
                new[i] = old[j]
            take[k] = new
    left = sorted(set(own) - set(take))
    if unexpected or set(left) - head_names:
        bad = unexpected + sorted(set(left) - head_names)
        raise EmoLensError(
            f"the initial weights do not fit architecture {type(model).__name__}: {', '.join(bad[:6])}"
            + (" ..." if len(bad) > 6 else "")
        )
    model.load_state_dict(take, strict=False)


def _train_mode(model: torch.nn.Module) -> None:
    """Training mode, except that frozen blocks (a head-only stage) keep their BatchNorm statistics."""
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.weight is not None and not m.weight.requires_grad:
            m.eval()


@torch.no_grad()
def _refresh_bn(model: torch.nn.Module, images: torch.Tensor, batches: int = 20, batch_size: int = 256) -> None:
    """EMA averages weights but not BN statistics well: re-estimate them on clean training images."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    dev = next(model.parameters()).device
    idx = torch.randperm(len(images))[: batches * batch_size]
    for i in range(0, len(idx), batch_size):
        model(normalize(images[idx[i : i + batch_size]].to(dev).float() / 255))
    model.eval()


def _hardware() -> str:
    import os

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    n = torch.get_num_threads()
    return f"{platform.machine()} CPU, {n} thread{'s' if n > 1 else ''} of {os.cpu_count()} cores"


def _plot_curves(out: Path, history: list[dict]) -> None:
    """Learning curves (loss; validation accuracy and macro-F1) to curves.png, when matplotlib is there."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    epochs = [row["epoch"] + 1 for row in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    a.plot(epochs, [row["loss"] for row in history], marker=".")
    a.set(title="training loss", xlabel="epoch")
    for key in ("val_accuracy", "val_macro_f1"):
        b.plot(epochs, [row[key] for row in history], marker=".", label=key[4:])
    b.set(title="validation", xlabel="epoch")
    b.legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=90)
    plt.close(fig)


def _write_log(out: Path, history: list[dict]) -> None:
    (out / "log.json").write_text(json.dumps(history, indent=1))
    with open(out / "log.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), disable=not enabled
    )
