"""Datasets a user may bring: an image folder, the FER2013 CSV, ``.npz`` arrays, a labels CSV.

Every loader returns a ``FaceDataset``: class names, integer labels, optional groups (a person
id: no person may sit in two splits) and either the pixel arrays (crops already) or the image
paths (decoded on demand, so a folder of 100,000 photos costs nothing until it is used).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emolens.core.errors import BadImageError, BadLabelError, EmoLensError
from emolens.data.schemas import canonical, encode, map_labels
from emolens.image.io import IMAGE_SUFFIXES, load_image

FER_USAGES = ("Training", "PublicTest", "PrivateTest")


@dataclass
class FaceDataset:
    classes: list[str]
    labels: np.ndarray
    images: np.ndarray | None = None  # uint8 (N, H, W) or (N, H, W, 3) when the data are crops
    paths: list[Path] = field(default_factory=list)  # otherwise one image file per sample
    groups: np.ndarray | None = None
    source: str = ""
    soft: np.ndarray | None = None  # (N, classes) label distributions (FER+ votes), when the data have them

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> np.ndarray:
        """Sample ``i`` as an RGB (or grey, for crop arrays) uint8 array."""
        return self.images[i] if self.images is not None else load_image(self.paths[i])

    def counts(self) -> dict[str, int]:
        return {c: int((self.labels == i).sum()) for i, c in enumerate(self.classes)}

    def subset(self, index: np.ndarray) -> FaceDataset:
        index = np.asarray(index)
        return FaceDataset(
            classes=list(self.classes),
            labels=self.labels[index],
            images=None if self.images is None else self.images[index],
            paths=[self.paths[i] for i in index] if self.paths else [],
            groups=None if self.groups is None else self.groups[index],
            source=self.source,
            soft=None if self.soft is None else self.soft[index],
        )

    def remap(self, classes: Sequence[str], mapping: dict[str, str | None] | None = None) -> FaceDataset:
        """The same data under another label schema (see ``schemas.map_labels``)."""
        labels, keep = map_labels(self.labels, self.classes, list(classes), mapping)
        if self.soft is not None and sorted(classes) != sorted(self.classes):
            raise BadLabelError("label distributions (soft labels) can be reordered, not mapped to other classes")
        out = self.subset(np.flatnonzero(keep))
        if out.soft is not None:
            out.soft = out.soft[:, [self.classes.index(c) for c in classes]]
        out.classes, out.labels = list(classes), labels
        return out


def load_dataset(path: str | Path, **kwargs) -> FaceDataset:
    """Pick the loader from what ``path`` is: a folder, ``.npz``, or a CSV (FER2013 or labels)."""
    p = Path(path)
    if p.is_dir():
        return load_image_folder(p, **kwargs)
    if not p.is_file():
        raise EmoLensError(f"{p}: no such file or folder")
    if p.suffix == ".npz":
        return load_npz_dataset(p)
    if p.suffix == ".csv":
        with open(p, newline="") as f:
            header = [h.strip().lower() for h in next(csv.reader(f), [])]
        if {"emotion", "pixels"} <= set(header):
            return load_fer_csv(p, **kwargs)
        return load_labels_csv(p, **kwargs)
    raise EmoLensError(f"{p}: not a dataset (expected a folder, .npz or .csv)")


def load_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """An .npz with ``images`` (N, H, W[, C]) uint8, ``labels`` (N,) int and ``classes`` (names)."""
    p = Path(path)
    if not p.is_file():
        raise BadImageError(f"{p}: no such file")
    try:
        with np.load(p, allow_pickle=False) as z:
            images, labels, classes = z["images"], z["labels"], [str(c) for c in z["classes"]]
    except KeyError as exc:
        raise BadImageError(f"{p}: missing array {exc}; expected images, labels, classes") from None
    except (OSError, ValueError) as exc:
        raise BadImageError(f"{p}: not a readable .npz ({exc})") from None
    if len(images) != len(labels):
        raise BadLabelError(f"{p}: {len(images)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise BadLabelError(f"{p}: labels must be indices 0..{len(classes) - 1} into classes {classes}")
    return images, labels, classes


def load_npz_dataset(path: str | Path) -> FaceDataset:
    images, labels, classes = load_npz(path)
    return FaceDataset(
        classes=[canonical(c) for c in classes], labels=labels.astype(np.int64), images=images, source=str(path)
    )


def load_fer_csv(path: str | Path, usage: str | None = None, classes: Sequence[str] | None = None) -> FaceDataset:
    """The FER2013 CSV (``emotion,pixels[,Usage]``; 48x48 grey as 2304 space-separated values)."""
    from emolens.data.schemas import FER7

    classes = list(classes or FER7)
    if usage is not None and usage not in FER_USAGES:
        raise EmoLensError(f"usage must be one of {FER_USAGES}, not {usage!r}")
    images, labels = [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields = {k.strip().lower(): k for k in reader.fieldnames or []}
        for line, row in enumerate(reader, start=2):
            if usage is not None and row.get(fields.get("usage", ""), "").strip() != usage:
                continue
            try:
                label = int(row[fields["emotion"]])
                pixels = np.array(row[fields["pixels"]].split(), dtype=np.int64)
            except (ValueError, TypeError) as exc:
                raise BadImageError(f"{path}:{line}: unreadable row ({exc})") from None
            side = int(round(np.sqrt(len(pixels))))
            if side * side != len(pixels) or pixels.min(initial=0) < 0 or pixels.max(initial=0) > 255:
                raise BadImageError(f"{path}:{line}: pixels are not a square image of 0-255 values")
            if not 0 <= label < len(classes):
                raise BadLabelError(f"{path}:{line}: emotion {label} is not an index into {classes}")
            images.append(pixels.astype(np.uint8).reshape(side, side))
            labels.append(label)
    if not images:
        raise EmoLensError(f"{path}: no rows{f' with Usage {usage}' if usage else ''}")
    return FaceDataset(
        classes=classes, labels=np.array(labels, dtype=np.int64), images=np.stack(images), source=str(path)
    )


def load_image_folder(root: str | Path, classes: Sequence[str] | None = None) -> FaceDataset:
    """``root/<class>/*.jpg``; class names are normalised (``Happiness`` → ``happy``).

    With ``classes`` given, folders must match them (an unknown folder is an error naming it);
    otherwise the sorted folder names are the classes.
    """
    root = Path(root)
    folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not folders:
        # A folder of dataset files (FER2013's train.npz and val.npz, say) is not one dataset: name them.
        files = sorted(p.name for p in root.iterdir() if p.suffix.lower() in (".npz", ".csv"))
        listed = ", ".join(files[:4]) + (", ..." if len(files) > 4 else "")
        hint = f"; it holds {listed}: give one of those files" if files else ""
        raise EmoLensError(
            f"{root}: no class folders (a dataset is a folder of class folders {root}/<class>/<image files>, "
            f"a FER2013 or labels CSV, or an .npz file){hint}"
        )
    names = [canonical(d.name) for d in folders]
    classes = list(classes) if classes is not None else sorted(set(names))
    encode(names, classes)  # raises on an unknown folder name, naming it
    paths, labels = [], []
    for folder, name in zip(folders, names, strict=True):
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        paths += files
        labels += [classes.index(name)] * len(files)
    return FaceDataset(classes=classes, labels=np.array(labels, dtype=np.int64), paths=paths, source=str(root))


def load_labels_csv(path: str | Path, classes: Sequence[str] | None = None) -> FaceDataset:
    """A CSV with ``path,label`` and optionally ``group`` (a person id); paths relative to the CSV."""
    path = Path(path)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields = {k.strip().lower(): k for k in reader.fieldnames or []}
        if not {"path", "label"} <= set(fields):
            raise EmoLensError(f"{path}: a labels CSV needs the columns path,label (and optionally group)")
        rows = list(reader)
    names = [canonical(r[fields["label"]]) for r in rows]
    classes = list(classes) if classes is not None else sorted(set(names))
    labels = encode(names, classes)
    paths = [(path.parent / r[fields["path"]].strip()) for r in rows]
    groups = np.array([r[fields["group"]] for r in rows]) if "group" in fields else None
    return FaceDataset(classes=classes, labels=labels, paths=paths, groups=groups, source=str(path))


def split(dataset: FaceDataset, val: float = 0.1, test: float = 0.0, seed: int = 0) -> dict[str, FaceDataset]:
    """Stratified train/val(/test) splits; with groups, no group (person) lands in two splits."""
    from emolens.core.errors import require

    ms = require("sklearn.model_selection", "train", package="scikit-learn")
    idx = np.arange(len(dataset))

    def cut(index: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
        y = dataset.labels[index]
        present, counts = np.unique(y, return_counts=True)
        sizes = ", ".join(f"{dataset.classes[c]} {n}" for c, n in zip(present, counts, strict=True))
        rare = [dataset.classes[c] for c, n in zip(present, counts, strict=True) if n < 2]
        if rare:
            raise BadLabelError(
                f"classes {rare} have fewer than 2 samples ({sizes}): too few to split; "
                "add photos, merge or drop those classes, or give the validation data yourself (--val)"
            )
        # A small dataset still gets a usable split: at least one face of every class held out.
        held_n = max(int(np.ceil(fraction * len(index))), len(present))
        if len(index) - held_n < len(present):
            raise BadLabelError(
                f"{len(index)} faces ({sizes}) are too few to hold out {fraction:.0%} with every class on both "
                "sides; add photos or give the validation data yourself (--val)"
            )
        try:
            if dataset.groups is None:
                splitter = ms.StratifiedShuffleSplit(n_splits=1, test_size=held_n, random_state=seed)
                keep, held = next(splitter.split(index, y))
            else:
                n_groups = len(np.unique(dataset.groups[index]))
                folds = min(max(2, round(1 / fraction)), n_groups)
                if folds < 2:
                    raise ValueError("only one group")
                splitter = ms.StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
                keep, held = next(splitter.split(index, y, dataset.groups[index]))
        except ValueError as exc:  # scikit-learn's word for "too few" of something
            raise BadLabelError(
                f"cannot split {len(index)} faces ({sizes}) into training and validation: {exc}; "
                "add photos or give the validation data yourself (--val)"
            ) from None
        return index[keep], index[held]

    out = {}
    if test:
        idx, test_idx = cut(idx, test)
        out["test"] = dataset.subset(test_idx)
    train_idx, val_idx = cut(idx, val / (1 - test))
    out["train"], out["val"] = dataset.subset(train_idx), dataset.subset(val_idx)
    return out


def fit_crop(img: np.ndarray, size: int, channels: int) -> np.ndarray:
    """One crop (H, W) or (H, W, 3) in the model's size and colour mode."""
    import cv2

    if img.ndim == 3 and channels == 1:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    elif img.ndim == 2 and channels == 3:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[:2] != (size, size):
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return img


def fit_crops(images: np.ndarray, size: int, channels: int) -> np.ndarray:
    """A batch of crops in the model's size and colour mode; returned as is when it already fits."""
    wanted = (size, size) if channels == 1 else (size, size, 3)
    if images.shape[1:] == wanted:
        return images
    return np.stack([fit_crop(im, size, channels) for im in images])


def to_crops(
    dataset: FaceDataset, size: int = 48, channels: int = 1, detect: bool = True, progress: bool = False
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Face crops (N, size, size[, 3]) uint8 and their labels, ready for training or evaluation.

    Crop arrays are only fitted to size and colour mode. From image files, the largest face is
    detected and aligned the way the analyzer does it (or, with ``detect=False``, the files are
    taken as crops already). Files that fail to decode or hold no face are skipped and listed in the
    third return value ("path: reason"), never silently counted.
    """
    from emolens.image.align import align_face

    if dataset.images is not None:
        return fit_crops(dataset.images, size, channels), dataset.labels.copy(), []
    detector = None
    if detect:
        from emolens.detect import create_detector

        detector = create_detector("retinaface")
    from rich.progress import track

    crops, labels, skipped = [], [], []
    for i in track(range(len(dataset)), description="preparing faces", disable=not progress):
        try:
            img = dataset.image(i)
        except EmoLensError as exc:
            skipped.append(f"{dataset.paths[i]}: {exc}")
            continue
        if detector is not None:
            faces = detector(img)
            if not faces:
                skipped.append(f"{dataset.paths[i]}: no face found")
                continue
            face = max(faces, key=lambda f: f.width * f.height)
            crop = align_face(img, face.box, face.landmarks, size, channels)
        else:
            crop = fit_crop(img, size, channels)
        crops.append(crop)
        labels.append(dataset.labels[i])
    if not crops:
        raise EmoLensError(f"{dataset.source}: no usable face in {len(dataset)} images")
    return np.stack(crops), np.array(labels, dtype=np.int64), skipped
