"""Plots of an evaluation: confusion matrix, reliability diagram, accuracy against coverage (matplotlib)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    from emolens.core.errors import require

    require("matplotlib", "train")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(confusion: list[list[int]], labels: list[str], path: str | Path) -> Path:
    """Row-normalised confusion matrix (the diagonal is each class's recall), counts in the cells."""
    plt = _pyplot()
    cm = np.asarray(confusion, dtype=float)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    k = len(labels)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * k, 0.8 + 0.7 * k))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                f"{norm[i, j]:.2f}\n{int(cm[i, j])}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if norm[i, j] > 0.55 else "black",
            )
    ax.set_xticks(range(k), labels, rotation=45, ha="right")
    ax.set_yticks(range(k), labels)
    ax.set(xlabel="predicted", ylabel="true", title="confusion (row share, count)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_reliability(cal: dict, path: str | Path) -> Path:
    """Accuracy against confidence per bin (a calibrated model follows the diagonal), with the
    number of faces per bin below."""
    plt = _pyplot()
    bins = cal["bins"]
    width = bins[0]["hi"] - bins[0]["lo"]
    full = [b for b in bins if b["count"]]
    centers = [(b["lo"] + b["hi"]) / 2 for b in full]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(4.8, 5.4), height_ratios=[3, 1], sharex=True)
    top.bar(centers, [b["accuracy"] for b in full], width=width * 0.95, color="#4477aa", label="accuracy")
    top.bar(
        centers,
        [b["confidence"] for b in full],
        width=width * 0.95,
        fill=False,
        edgecolor="#cc3344",
        label="mean confidence",
    )
    top.plot([0, 1], [0, 1], "k--", lw=1)
    top.set(
        ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=f"reliability (ECE {cal['ece']:.3f}, {cal['n_bins']} bins)"
    )
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centers, [b["count"] for b in full], width=width * 0.95, color="#999999")
    bottom.set(xlabel="confidence (top probability)", ylabel="faces")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_coverage(sel: dict, path: str | Path, thresholds: dict | None = None) -> Path:
    """Accuracy against coverage (answering only the most confident faces); the per-class thresholds'
    operating point when there is one."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    curve = sel["curve"]
    ax.plot(curve["coverage"], curve["accuracy"], color="#4477aa", label="one global threshold")
    for row in sel["by_coverage"]:
        ax.plot(row["coverage"], row["accuracy"], "o", color="#4477aa", ms=3)
    if thresholds and thresholds.get("accuracy") is not None:
        ax.plot(
            thresholds["coverage"],
            thresholds["accuracy"],
            "*",
            color="#ee6677",
            ms=12,
            label=f"per-class thresholds ({thresholds['rule']} {thresholds['target']:g})",
        )
    ax.set(
        xlabel="coverage (share of faces answered)",
        ylabel="accuracy on answered faces",
        xlim=(0, 1.02),
        title="accuracy against coverage",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
