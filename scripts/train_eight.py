"""Grow the shipped 7-class `fast` into an 8-class model (contempt added) taught by the FER+ votes.

The held-out faces are `emolens train`'s own split of train.npz (a stratified 10% by FER2013 label,
seed 0), the same faces every shipped model is measured on; training uses the other 90%, keeping the
faces with a FER+ majority (the FER+ paper's rule) and learning their vote distribution. The head keeps
`fast`'s 7 rows; contempt's row is new. Epoch figures are monitored, never used to pick weights (the final
weights are kept). PublicTest is not read.

    python scripts/train_eight.py --out runs/fast8 --epochs 8 [--threads 1]
    emolens export runs/fast8/best.pt fast8.onnx --val ../shared/datasets/fer2013/val.npz
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch

from emolens.data import load_npz_dataset, split
from emolens.data.ferplus import DROPPED_STATUS, majority, vote_distribution
from emolens.data.schemas import FER7, FERPLUS8
from emolens.train.config import TrainConfig, dump_config
from emolens.train.loop import fit, lineage_of

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "fer2013"


def own_split_indices(train_npz: Path, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of train.npz that `emolens train` trains on and holds out (10%, stratified, seed)."""
    full = load_npz_dataset(train_npz)
    full.paths = [Path(str(i)) for i in range(len(full))]  # row numbers ride along through the split
    parts = split(full, val=0.1, seed=seed)
    return tuple(np.array([int(str(p)) for p in parts[k].paths]) for k in ("train", "val"))


def ferplus_rows(votes_npz: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(majority label in FERPLUS8 order, has-majority mask, vote distribution) for every row."""
    with np.load(votes_npz, allow_pickle=False) as z:
        counts, status = z["votes"], z["status"]
    top, ok = majority(counts)
    ok &= ~np.isin(status, DROPPED_STATUS)
    from emolens.data.ferplus import VOTE_COLUMNS, _column_of

    col_to_label = {VOTE_COLUMNS.index(_column_of(c)): i for i, c in enumerate(FERPLUS8)}
    labels = np.array([col_to_label.get(int(t), -1) for t in top])
    return labels, ok, vote_distribution(counts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/fast8"))
    ap.add_argument("--init", type=Path, default=Path("src/emolens/assets/fast.pt"))
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args()
    train_npz = args.data / "train.npz"
    images = np.load(train_npz)["images"]
    tr, va = own_split_indices(train_npz)
    lab8, ok, dist = ferplus_rows(args.data / "train_ferplus.npz")
    tr, va = tr[ok[tr]], va[ok[va]]
    start = torch.load(args.init, map_location="cpu", weights_only=False)
    assert list(start["labels"]) == list(FER7), start["labels"]
    base = {k: v for k, v in start["config"].items() if k != "augment"}
    base.update(
        labels=list(FERPLUS8), epochs=args.epochs, lr=args.lr, threads=args.threads, teacher="", vote_blend=0.0,
        label_mode="distribution", label_smoothing=0.0, select_on="last", schedule="cosine", warmup_epochs=0.5,
    )  # fmt: skip
    cfg = TrainConfig(**{k: v for k, v in base.items() if k in {f.name for f in dataclasses.fields(TrainConfig)}})
    cfg.augment = dataclasses.replace(cfg.augment, **start["config"]["augment"])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "config.yaml").write_text(dump_config(cfg))
    print(f"training {len(tr)} faces (FER+ vote distributions), monitoring {len(va)} held-out faces", flush=True)
    fit(
        (images[tr], dist[tr]),
        (images[va], lab8[va]),
        cfg,
        args.out,
        progress=False,
        init=start["model"],
        init_labels=list(start["labels"]),
        lineage=lineage_of(start),
        validation="a stratified 10% of train.npz held out by FER2013 label (seed 0), faces with a FER+ majority, "
        "scored on the FER+ majority labels",
    )


if __name__ == "__main__":
    main()
