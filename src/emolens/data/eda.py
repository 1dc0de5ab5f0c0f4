"""Exploratory data analysis of a face dataset: balance, sizes, quality, duplicates, corrupt files.

``explore(dataset)`` measures; ``write_report(stats, out_dir)`` writes report.md, report.html and
the plots. Perceptual hashes find near-duplicates (the same photo re-encoded, resized or
slightly edited), which inflate accuracy when they straddle a train/test split.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np

from emolens.core.errors import EmoLensError
from emolens.data.datasets import FaceDataset


def phash(gray: np.ndarray) -> int:
    """64-bit DCT perceptual hash: low frequencies above/below their median (the DC term left out of
    the median, which keeps a darkened copy within a few bits; ``imagehash.phash`` counts it and let
    such copies through the data filter's duplicate gate)."""
    small = cv2.resize(gray.astype(np.float32), (32, 32), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:8, :8].ravel()
    bits = low > np.median(low[1:])
    return int(np.packbits(bits).view(">u8")[0])


def near_duplicate_pairs(hashes: list[int | None], max_distance: int = 4) -> list[tuple[int, int, int]]:
    """(i, j, distance) for hashes within ``max_distance`` bits.

    Split each hash into max_distance+1 bands: two hashes that close agree exactly on at least one
    band (pigeonhole), so only those candidates are compared — no all-pairs loop.
    """
    bands = max_distance + 1
    width = 64 // bands
    buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, h in enumerate(hashes):
        if h is None:
            continue
        for b in range(bands):
            buckets[(b, (h >> (b * width)) & ((1 << width) - 1))].append(i)
    pairs: dict[tuple[int, int], int] = {}
    for members in buckets.values():
        if len(members) < 2:
            continue
        for a_pos, a in enumerate(members):
            for b in members[a_pos + 1 :]:
                if (a, b) not in pairs:
                    d = (hashes[a] ^ hashes[b]).bit_count()
                    if d <= max_distance:
                        pairs[(a, b)] = d
    return sorted((a, b, d) for (a, b), d in pairs.items())


def explore(dataset: FaceDataset, max_distance: int = 4, progress: bool = False) -> dict:
    """Measure every image once; returns a JSON-able dict of statistics."""
    from rich.progress import track

    n = len(dataset)
    if n == 0:
        raise EmoLensError("the dataset is empty")
    sizes, modes, blur, brightness, contrast, hashes, corrupt = [], Counter(), [], [], [], [], []
    raw_hashes: dict[bytes, list[int]] = defaultdict(list)
    for i in track(range(n), description="measuring", disable=not progress):
        try:
            img = dataset.image(i)
        except EmoLensError as exc:
            corrupt.append({"index": i, "path": str(dataset.paths[i]) if dataset.paths else "", "error": str(exc)})
            hashes.append(None)
            continue
        gray = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        sizes.append(gray.shape[:2])
        modes["grey" if img.ndim == 2 or _is_grey(img) else "colour"] += 1
        blur.append(float(cv2.Laplacian(gray, cv2.CV_64F).var()))
        brightness.append(float(gray.mean()))
        contrast.append(float(gray.std()))
        hashes.append(phash(gray))
        raw_hashes[gray.tobytes()].append(i)

    counts = dataset.counts()
    nonzero = [c for c in counts.values() if c]
    exact = [g for g in raw_hashes.values() if len(g) > 1]
    near = near_duplicate_pairs(hashes, max_distance)
    labels = dataset.labels
    conflicting = [(a, b) for a, b, _ in near if labels[a] != labels[b]]
    heights, widths = (np.array([s[0] for s in sizes]), np.array([s[1] for s in sizes])) if sizes else ([0], [0])
    blur_arr = np.array(blur) if blur else np.zeros(1)
    return {
        "source": dataset.source,
        "n": n,
        "classes": dataset.classes,
        "counts": counts,
        "imbalance_ratio": (max(nonzero) / min(nonzero)) if nonzero else None,
        "sizes": {
            "min": [int(np.min(heights)), int(np.min(widths))],
            "max": [int(np.max(heights)), int(np.max(widths))],
            "distinct": len(set(sizes)),
        },
        "modes": dict(modes),
        "quality": {
            "blur_variance": _summary(blur_arr),
            "brightness": _summary(np.array(brightness or [0])),
            "contrast": _summary(np.array(contrast or [0])),
            "blurry": int((blur_arr < 20).sum()),  # Laplacian variance under 20: visibly soft at 48 px
            "too_dark": int((np.array(brightness or [128]) < 40).sum()),
            "too_bright": int((np.array(brightness or [128]) > 215).sum()),
            "flat": int((np.array(contrast or [64]) < 10).sum()),
        },
        "duplicates": {
            "exact_groups": [g for g in exact],
            "exact_images": int(sum(len(g) - 1 for g in exact)),
            "near_pairs": len(near),
            "near_pairs_with_different_labels": len(conflicting),
            "examples": near[:20],
        },
        "corrupt": corrupt,
        "_series": {"blur": blur, "brightness": brightness, "contrast": contrast},
    }


def _is_grey(img: np.ndarray) -> bool:
    return bool((img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all())


def _summary(a: np.ndarray) -> dict:
    return {
        "mean": round(float(a.mean()), 2),
        "p05": round(float(np.percentile(a, 5)), 2),
        "median": round(float(np.median(a)), 2),
        "p95": round(float(np.percentile(a, 95)), 2),
    }


def write_report(stats: dict, out_dir: str | Path) -> dict[str, Path]:
    """report.md, report.html, stats.json and PNG plots in ``out_dir``."""
    from emolens.core.errors import require

    require("matplotlib", "train")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    series = stats["_series"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(list(stats["counts"]), list(stats["counts"].values()), color="#4477aa")
    ax.set_title("images per class")
    fig.tight_layout()
    fig.savefig(out / "class_counts.png", dpi=100)
    plt.close(fig)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for ax, key in zip(axes, ("blur", "brightness", "contrast"), strict=True):
        ax.hist(series[key], bins=40, color="#66aa55")
        ax.set_title(key)
    fig.tight_layout()
    fig.savefig(out / "quality.png", dpi=100)
    plt.close(fig)

    public = {k: v for k, v in stats.items() if not k.startswith("_")}
    (out / "stats.json").write_text(json.dumps(public, indent=1))
    q, d = stats["quality"], stats["duplicates"]
    ratio = stats["imbalance_ratio"]
    md = [
        f"# Dataset report: {stats['source'] or 'dataset'}",
        "",
        f"{stats['n']} images, {len(stats['classes'])} classes, imbalance ratio (largest / smallest class) "
        f"{'n/a' if ratio is None else f'{ratio:.1f}'}.",
        "",
        "| class | images | share |",
        "|---|---|---|",
        *[f"| {c} | {k} | {k / stats['n']:.1%} |" for c, k in stats["counts"].items()],
        "",
        "![class counts](class_counts.png)",
        "",
        "## Images",
        "",
        f"- sizes: {stats['sizes']['min']} to {stats['sizes']['max']} (height, width), "
        f"{stats['sizes']['distinct']} distinct",
        f"- modes: {stats['modes']}",
        f"- corrupt or unreadable: {len(stats['corrupt'])}",
        *[f"  - {c['path'] or c['index']}: {c['error']}" for c in stats["corrupt"][:20]],
        "",
        "## Quality",
        "",
        "| measure | mean | 5th pct | median | 95th pct |",
        "|---|---|---|---|---|",
        *[
            f"| {name} | {q[key]['mean']} | {q[key]['p05']} | {q[key]['median']} | {q[key]['p95']} |"
            for name, key in (
                ("blur (Laplacian variance)", "blur_variance"),
                ("brightness", "brightness"),
                ("contrast (std)", "contrast"),
            )
        ],
        "",
        f"Blurry (variance < 20): {q['blurry']}; too dark (mean < 40): {q['too_dark']}; too bright (mean > 215): "
        f"{q['too_bright']}; flat (std < 10): {q['flat']}.",
        "",
        "![quality](quality.png)",
        "",
        "## Duplicates",
        "",
        f"- exact duplicates: {d['exact_images']} images in {len(d['exact_groups'])} groups",
        f"- near-duplicate pairs (perceptual hash within a few bits): {d['near_pairs']}, of which "
        f"{d['near_pairs_with_different_labels']} carry different labels",
        "",
    ]
    (out / "report.md").write_text("\n".join(md))
    (out / "report.html").write_text(_markdown_to_html("\n".join(md)))
    return {"markdown": out / "report.md", "html": out / "report.html", "json": out / "stats.json"}


def _markdown_to_html(md: str) -> str:
    from emolens.core.errors import require

    markdown = require("markdown", "train")
    style = "body{font-family:sans-serif;max-width:60em;margin:2em auto}td,th{padding:2px 8px;border:1px solid #ccc}"
    converter = markdown.Markdown(extensions=["tables"])
    # Raw HTML in the text (from a file or class name) is shown as text, never rendered or run.
    converter.preprocessors.deregister("html_block")
    converter.inlinePatterns.deregister("html")
    body = converter.convert(md)
    return f"<!doctype html><html><head><meta charset='utf-8'><style>{style}</style></head><body>{body}</body></html>"
