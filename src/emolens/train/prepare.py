"""From a dataset on disk to face crops for training: load, hold out validation, fit the labels
to the config, detect and align photos. Shared by cross-validation and tuning."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emolens.data import load_dataset, split
from emolens.data.datasets import FaceDataset, to_crops


@dataclass
class Crops:
    x: np.ndarray
    y: np.ndarray
    classes: list[str]
    groups: np.ndarray | None = None
    skipped: list[str] = field(default_factory=list)  # "path: reason" for files with no usable face


def crops_of(dataset: FaceDataset, labels: list[str], size: int, channels: int, progress: bool = False) -> Crops:
    if dataset.classes != labels:
        dataset = dataset.remap(labels)
    x, y, skipped = to_crops(dataset, size, channels, progress=progress)
    groups = None
    if dataset.groups is not None:
        # to_crops leaves out files without a usable face (listed as "path: reason"): keep the
        # groups of the others, in order
        gone = {line for line in skipped}
        kept = [
            i
            for i in range(len(dataset))
            if dataset.paths is None or not any(g.startswith(f"{dataset.paths[i]}: ") for g in gone)
        ]
        groups = np.asarray(dataset.groups)[kept]
    return Crops(x, y, list(labels), groups, skipped)


def load_train_val(
    data: str | Path,
    val: str | Path | None,
    labels: list[str] | None,
    size: int,
    channels: int,
    val_fraction: float = 0.1,
    seed: int = 0,
    progress: bool = False,
) -> tuple[Crops, Crops]:
    """Training and validation crops: ``val`` if given, else a stratified (group-aware) share of ``data``."""
    train_ds = load_dataset(data)
    labels = labels or train_ds.classes
    if val is not None:
        val_ds = load_dataset(val)
    else:
        parts = split(train_ds, val=val_fraction, seed=seed)
        train_ds, val_ds = parts["train"], parts["val"]
    return crops_of(train_ds, labels, size, channels, progress), crops_of(val_ds, labels, size, channels, progress)
