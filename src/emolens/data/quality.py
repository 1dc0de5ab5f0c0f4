"""Quality gates for images before they join a training set, and merging synthetic images in.

``filter_images(folder, gates)`` decides, per image, whether it is kept and why not: exactly one
face of a minimum size, enough detail (variance of the Laplacian), exposure within limits, not a
perceptual-hash near-duplicate of an image kept before it or of the real training set, and
optionally the current model agreeing that the face shows the intended emotion. It works on any
folder (with class subfolders, the intended labels), not only on generated images.

``merge(real, synthetic, out)`` writes labels CSVs for training: the real images split into train
and validation, synthetic images only ever in train, capped per class and overall.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from emolens.core.errors import EmoLensError
from emolens.data.eda import _markdown_to_html, near_duplicate_pairs, phash
from emolens.data.schemas import canonical
from emolens.image.io import IMAGE_SUFFIXES, load_image

THUMB = 96  # side of the thumbnails of dropped images in the report


@dataclass
class Gates:
    """Thresholds of the gates; each can be switched off (``faces=False``, ``agreement=None``...)."""

    faces: bool = True  # exactly one face, found by EmoLens's detector
    min_face_size: int = 48  # px, the face box's shorter side (the models see 48 px crops)
    min_sharpness: float = 30.0  # variance of the Laplacian of the face (or image), seen at 128 px
    min_brightness: float = 40.0  # mean grey level of the face (or image), 0-255
    max_brightness: float = 215.0
    min_contrast: float = 12.0  # standard deviation of the grey levels
    duplicates: int | None = 4  # perceptual-hash distance (bits) that counts as a near-duplicate; None: off
    agreement: str | None = None  # a model name: it must give the intended label at least ``min_agreement``
    min_agreement: float = 0.5


@dataclass
class ImageCheck:
    path: str  # relative to the folder checked
    label: str | None  # the intended emotion (the class subfolder), if any
    kept: bool = True
    reasons: list[str] = field(default_factory=list)
    faces: int | None = None
    face_size: float | None = None
    sharpness: float | None = None
    brightness: float | None = None
    contrast: float | None = None
    agreement: float | None = None
    hash: int | None = field(default=None, repr=False)

    def drop(self, reason: str) -> None:
        self.kept = False
        self.reasons.append(reason)


@dataclass
class FilterReport:
    folder: Path
    gates: Gates
    checks: list[ImageCheck]

    @property
    def kept(self) -> list[ImageCheck]:
        return [c for c in self.checks if c.kept]

    def reason_counts(self) -> dict[str, int]:
        """Images dropped per gate (an image can fail several)."""
        return dict(Counter(r.split(":")[0] for c in self.checks for r in c.reasons).most_common())

    def kept_per_class(self) -> dict[str, int]:
        return dict(Counter(c.label for c in self.kept if c.label))

    def to_dict(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder),
            "gates": asdict(self.gates),
            "images": len(self.checks),
            "kept": len(self.kept),
            "dropped_by_reason": self.reason_counts(),
            "kept_per_class": self.kept_per_class(),
            "checks": [{k: v for k, v in asdict(c).items() if k != "hash"} for c in self.checks],
        }


def image_files(folder: Path) -> list[tuple[Path, str | None]]:
    """(file, intended label) for every image under ``folder``; the label is the class subfolder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EmoLensError(f"{folder}: not a folder")
    out = []
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    for f in refuse_links_out(folder, files):
        rel = f.relative_to(folder)
        out.append((f, canonical(rel.parts[0]) if len(rel.parts) > 1 else None))
    if not out:
        raise EmoLensError(f"{folder}: no image files")
    return out


def refuse_links_out(folder: Path, files: list[Path]) -> list[Path]:
    """``files``, when each lies inside ``folder`` once links are followed: a symbolic link named
    like an image may point anywhere (``/etc/shadow``), and its target would become a training row."""
    inside = Path(folder).resolve()
    for f in files:
        target = Path(f).resolve()
        if not target.is_relative_to(inside):
            raise EmoLensError(
                f"{f}: a symbolic link to {target}, outside {folder}; only files inside the folder are taken "
                "(copy the image in instead)"
            )
    return files


def _measure(grey: np.ndarray, check: ImageCheck) -> None:
    # Seen at a fixed size, so one sharpness threshold fits faces of any resolution.
    seen = cv2.resize(grey, (128, 128), interpolation=cv2.INTER_AREA)
    check.sharpness = round(float(cv2.Laplacian(seen, cv2.CV_64F).var()), 2)
    check.brightness = round(float(seen.mean()), 2)
    check.contrast = round(float(seen.std()), 2)
    check.hash = phash(seen)


def filter_images(
    folder: str | Path,
    gates: Gates | None = None,
    reference_hashes: list[int] | None = None,
    analyzer=None,
    progress: bool = False,
) -> FilterReport:
    """Check every image under ``folder`` against ``gates``; nothing is moved or deleted.

    ``reference_hashes``: perceptual hashes of the real training set (``reference_hashes_of``):
    an image too close to one of them is dropped. ``analyzer``: the ``Analyzer`` the face and
    agreement gates use (its model is the one that must agree), needed when those gates are on."""
    from rich.progress import track

    gates = gates or Gates()
    folder = Path(folder)
    files = image_files(folder)
    if (gates.faces or gates.agreement) and analyzer is None:
        raise ValueError("the face and agreement gates need an analyzer")
    checks: list[ImageCheck] = []
    for path, label in track(files, description="checking images", disable=not progress):
        check = ImageCheck(path=path.relative_to(folder).as_posix(), label=label)
        checks.append(check)
        try:
            image = load_image(path)
        except EmoLensError as exc:
            check.drop(f"unreadable: {exc}")
            continue
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        region = grey
        if analyzer is not None:
            results = analyzer(image)
            check.faces = len(results)
            if gates.faces and len(results) != 1:
                check.drop("no face" if not results else f"faces: {len(results)} faces, one needed")
            if len(results) >= 1:
                face = max(results, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
                x1, y1, x2, y2 = (int(round(v)) for v in face.box)
                check.face_size = round(float(min(x2 - x1, y2 - y1)), 1)
                h, w = grey.shape
                region = grey[max(0, y1) : min(h, y2), max(0, x1) : min(w, x2)]
                if region.size == 0:
                    region = grey
                if gates.faces and check.face_size < gates.min_face_size:
                    check.drop(f"small face: {check.face_size:.0f} px, at least {gates.min_face_size} needed")
                if gates.agreement and label:
                    check.agreement = round(float(face.probs.get(label, 0.0)), 4)
                    if check.agreement < gates.min_agreement:
                        check.drop(
                            f"disagreement: the model gives {label} {check.agreement:.2f} "
                            f"(at least {gates.min_agreement:g} needed; it says {face.top_label})"
                        )
        _measure(region, check)
        if check.sharpness < gates.min_sharpness:
            check.drop(f"blurry: sharpness {check.sharpness:.0f}, at least {gates.min_sharpness:g} needed")
        if not gates.min_brightness <= check.brightness <= gates.max_brightness:
            check.drop(
                f"exposure: brightness {check.brightness:.0f}, {gates.min_brightness:g}-{gates.max_brightness:g} needed"
            )
        if check.contrast < gates.min_contrast:
            check.drop(f"flat: contrast {check.contrast:.0f}, at least {gates.min_contrast:g} needed")
    if gates.duplicates is not None:
        _drop_duplicates(checks, gates.duplicates, reference_hashes or [])
    return FilterReport(folder, gates, checks)


def _drop_duplicates(checks: list[ImageCheck], distance: int, reference: list[int]) -> None:
    """Within the set, the first image of a near-duplicate group (in file order) is kept, unless it
    duplicates the real training set."""
    hashes = [c.hash for c in checks] + list(reference)
    n = len(checks)
    first_twin: dict[int, int] = {}
    for a, b, _ in near_duplicate_pairs(hashes, distance):
        if b >= n:  # a checked image against the reference set
            if a < n:
                checks[a].drop("duplicate: near-duplicate of a training image")
        elif a < n:
            first_twin[b] = min(first_twin.get(b, a), a)
    for b, a in sorted(first_twin.items()):
        checks[b].drop(f"duplicate: near-duplicate of {checks[a].path}")


def reference_hashes_of(dataset) -> list[int]:
    """Perceptual hashes of a dataset's images (the real training set), for the duplicate gate."""
    hashes = []
    for i in range(len(dataset)):
        try:
            img = dataset.image(i)
        except EmoLensError:
            continue
        grey = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        hashes.append(phash(cv2.resize(grey, (128, 128), interpolation=cv2.INTER_AREA)))
    return hashes


def write_filter_report(report: FilterReport, out_dir: str | Path) -> dict[str, Path]:
    """filter.json, kept.txt, report.md and report.html (counts per reason, thumbnails of drops)."""
    out = Path(out_dir)
    (out / "dropped").mkdir(parents=True, exist_ok=True)
    (out / "filter.json").write_text(json.dumps(report.to_dict(), indent=1))
    (out / "kept.txt").write_text("".join(f"{c.path}\n" for c in report.kept))
    dropped = [c for c in report.checks if not c.kept]
    md = [
        f"# Quality gates: {_md_text(str(report.folder))}",
        "",
        f"{len(report.checks)} images checked, {len(report.kept)} kept, {len(dropped)} dropped.",
        "",
        "| gate | images dropped |",
        "|---|---|",
        *[f"| {_md_text(reason)} | {n} |" for reason, n in report.reason_counts().items()],
        "",
        "| class | kept |",
        "|---|---|",
        *[f"| {label} | {n} |" for label, n in sorted(report.kept_per_class().items())],
        "",
        "## Dropped",
        "",
    ]
    for i, c in enumerate(dropped):
        thumb = f"dropped/{i:05d}.jpg"
        reasons = _md_text("; ".join(c.reasons))
        try:
            img = load_image(report.folder / c.path)
            h, w = img.shape[:2]
            scale = min(1.0, THUMB / max(h, w))  # a side of at least one pixel, however long and thin
            small = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(out / thumb), cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
            md.append(f"![thumbnail]({thumb}) {_md_text(c.path)}: {reasons}  ")
        except (EmoLensError, cv2.error):
            md.append(f"{_md_text(c.path)}: {reasons}  ")
    text = "\n".join(md) + "\n"
    (out / "report.md").write_text(text)
    (out / "report.html").write_text(_markdown_to_html(text))
    return {"markdown": out / "report.md", "html": out / "report.html", "json": out / "filter.json"}


def _md_text(text: str) -> str:
    """A file name (or a reason naming one) as literal Markdown text: its HTML escaped and the
    characters that would make a link, an image, emphasis or a table cell backslash-escaped."""
    import html
    import re

    return re.sub(r"([\\`*_\[\](){}#!|])", r"\\\1", html.escape(text, quote=False))


@dataclass
class MergeReport:
    out: Path
    train_csv: Path
    val_csv: Path
    counts: dict[str, dict[str, int]]  # class -> {"real_train", "real_val", "synthetic", "synthetic_offered"}

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "train": str(self.train_csv), "val": str(self.val_csv), "counts": self.counts}


def merge(
    real: str | Path,
    synthetic: str | Path,
    out: str | Path,
    kept: str | Path | list[str] | None = None,
    max_class_share: float = 0.5,
    max_total_share: float = 0.3,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> MergeReport:
    """Labels CSVs ``out/train.csv`` and ``out/val.csv``: the real images (class subfolders of
    ``real``) split stratified into train and validation, plus synthetic images (class subfolders of
    ``synthetic``; only those listed in ``kept``, e.g. a filter's ``kept.txt``) in train only, at
    most ``max_class_share`` of any class's training images and ``max_total_share`` of all of them.
    ``manifest.csv`` records every image's source and split."""
    from emolens.data.datasets import load_image_folder, split

    if not (0 <= max_class_share < 1 and 0 <= max_total_share < 1):
        raise EmoLensError("synthetic shares must be at least 0 and below 1")
    real_ds = load_image_folder(real)
    refuse_links_out(Path(real), list(real_ds.paths))
    parts = split(real_ds, val=val_fraction, seed=seed)
    offered = image_files(Path(synthetic))
    if kept is not None:
        names = set(Path(kept).read_text().split()) if isinstance(kept, (str, Path)) else set(kept)
        offered = [(p, lab) for p, lab in offered if p.relative_to(synthetic).as_posix() in names]
    unknown = sorted({lab for _, lab in offered if lab not in real_ds.classes})
    if unknown or any(lab is None for _, lab in offered):
        raise EmoLensError(f"synthetic images must sit in class folders of the real set's classes; not: {unknown}")
    rng = np.random.default_rng(seed)
    real_train = Counter(parts["train"].classes[y] for y in parts["train"].labels)
    total_real = sum(real_train.values())
    # Per class: s / (r + s) <= share  <=>  s <= r * share / (1 - share); overall likewise.
    budget_total = int(total_real * max_total_share / (1 - max_total_share))
    chosen: list[tuple[Path, str]] = []
    counts: dict[str, dict[str, int]] = {}
    by_class: dict[str, list[Path]] = {}
    for p, lab in offered:
        by_class.setdefault(lab, []).append(p)
    for lab in real_ds.classes:
        pool = by_class.get(lab, [])
        cap = int(real_train[lab] * max_class_share / (1 - max_class_share))
        take = [pool[i] for i in sorted(rng.permutation(len(pool))[:cap])]
        chosen += [(p, lab) for p in take]
        counts[lab] = {"real_train": real_train[lab], "synthetic_offered": len(pool), "synthetic": len(take)}
    if len(chosen) > budget_total:
        keep = set(rng.permutation(len(chosen))[:budget_total].tolist())
        chosen = [c for i, c in enumerate(chosen) if i in keep]
        for lab in counts:
            counts[lab]["synthetic"] = sum(1 for _, c in chosen if c == lab)
    for lab in real_ds.classes:
        counts[lab]["real_val"] = int(sum(1 for y in parts["val"].labels if parts["val"].classes[y] == lab))

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = {"train": [], "val": []}
    for name in ("train", "val"):
        ds = parts[name]
        rows[name] += [(Path(p).resolve(), ds.classes[y], "real") for p, y in zip(ds.paths, ds.labels, strict=True)]
    rows["train"] += [(p.resolve(), lab, "synthetic") for p, lab in chosen]
    for name in ("train", "val"):
        with open(out / f"{name}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label"])
            w.writerows((str(p), lab) for p, lab, _ in rows[name])
    with open(out / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "source", "split"])
        for name in ("train", "val"):
            w.writerows((str(p), lab, src, name) for p, lab, src in rows[name])
    return MergeReport(out, out / "train.csv", out / "val.csv", counts)
