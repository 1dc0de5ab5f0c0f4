"""K-fold cross-validation: ``emolens train DATA --cv K``.

Stratified folds, or group-aware ones (no person in two folds) when the data has a group column.
Each fold trains a model of its own (kept, and exported to ONNX, so the folds can be evaluated as
an ensemble: ``emolens evaluate out/fold0.onnx+out/fold1.onnx+... DATA``), and every metric is
reported as mean ± standard deviation over the folds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emolens.core.errors import BadLabelError, require
from emolens.train.loop import TrainConfig, fit
from emolens.train.prepare import Crops


@dataclass
class CVReport:
    folds: list[dict[str, Any]]  # per fold: best epoch's validation metrics, checkpoint, onnx
    summary: dict[str, dict[str, float]]  # metric -> {"mean", "std"}
    grouped: bool

    def to_dict(self) -> dict[str, Any]:
        return {"grouped": self.grouped, "summary": self.summary, "folds": self.folds}


def fold_indices(
    labels: np.ndarray, k: int, groups: np.ndarray | None, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    ms = require("sklearn.model_selection", "train", package="scikit-learn")
    counts = np.bincount(labels)
    if k < 2:
        raise BadLabelError("--cv needs at least 2 folds")
    if counts[counts > 0].min() < k:
        raise BadLabelError(f"a class has only {counts[counts > 0].min()} examples: too few for {k} folds")
    idx = np.arange(len(labels))
    if groups is not None:
        splitter = ms.StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        return list(splitter.split(idx, labels, groups))
    return list(ms.StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(idx, labels))


def cross_validate(data: Crops, cfg: TrainConfig, k: int, out: str | Path, progress: bool = True) -> CVReport:
    from emolens.train.export import export_onnx

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    folds = []
    for i, (tr, va) in enumerate(fold_indices(data.y, k, data.groups, cfg.seed)):
        run = out / f"fold{i}"
        result = fit((data.x[tr], data.y[tr]), (data.x[va], data.y[va]), cfg, run, progress=progress)
        best = max(
            result["history"], key=lambda r: r[f"val_{cfg.select_on}"] if cfg.select_on != "last" else r["epoch"]
        )
        onnx = export_onnx(run / "best.pt", out / f"fold{i}.onnx", card={"name": f"fold{i}", "cv": {"fold": i, "k": k}})
        folds.append(
            {
                "fold": i,
                "train": int(len(tr)),
                "val": int(len(va)),
                "best_epoch": best["epoch"],
                **{k_[4:]: v for k_, v in best.items() if k_.startswith("val_")},
                "checkpoint": str(run / "best.pt"),
                "onnx": onnx["path"],
            }
        )
    metrics = [m for m in folds[0] if m not in ("fold", "train", "val", "best_epoch", "checkpoint", "onnx")]
    summary = {
        m: {"mean": float(np.mean([f[m] for f in folds])), "std": float(np.std([f[m] for f in folds], ddof=1))}
        for m in metrics
    }
    report = CVReport(folds, summary, data.groups is not None)
    (out / "cv.json").write_text(json.dumps(report.to_dict(), indent=1))
    return report
