"""FER+ crowd votes (Barsoum et al. 2016) joined with FER2013 crops.

A votes file (``train_ferplus.npz``) holds, row for row with its image file (``train.npz``), how
many of 10 annotators chose each of ``neutral, happiness, surprise, sadness, anger, disgust, fear,
contempt, unknown, NF``. ``load_ferplus`` joins the two (checking ``names``), keeps the faces the
FER+ paper keeps, and returns an 8-class ``FaceDataset`` in EmoLens names (``FERPLUS8``) whose
``labels`` are the majority label and whose ``soft`` rows are the vote distribution.

Training modes of the FER+ paper: ``majority`` (one-hot majority label), ``probability`` (a label
drawn from the votes each time a face is seen), ``distribution`` (cross-entropy on the votes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emolens.core.errors import BadLabelError, EmoLensError
from emolens.data.datasets import FaceDataset, load_npz
from emolens.data.schemas import FERPLUS8, canonical

VOTE_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF")
MODES = ("majority", "probability", "distribution")
DROPPED_STATUS = (2, 3)  # 2: no FER+ row (blank frames), 3: not a face per FER+


def votes_path_for(images: str | Path) -> Path:
    """Where the votes of an image file are by convention: ``val.npz`` → ``val_ferplus.npz``."""
    p = Path(images)
    return p.with_name(f"{p.stem}_ferplus.npz")


def majority(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The FER+ paper's rule on (N, 10) vote counts: single votes are ignored (one annotator's
    outlier), and a face has a majority when one column holds more than half of the rest; faces
    whose majority is ``unknown`` or ``NF`` have none. Returns (column index, has-majority mask)."""
    v = np.where(votes == 1, 0, votes).astype(np.int64)
    top = v.argmax(1)
    best = v.max(1)
    ok = (best * 2 > v.sum(1)) & (best > 0) & (top < 8)
    return top, ok


def vote_distribution(votes: np.ndarray) -> np.ndarray:
    """(N, 8) probabilities in ``FERPLUS8`` order from the emotion votes (single votes ignored)."""
    v = np.where(votes == 1, 0, votes)[:, :8].astype(np.float32)
    order = [VOTE_COLUMNS.index(_column_of(c)) for c in FERPLUS8]
    v = v[:, order]
    return v / np.maximum(v.sum(1, keepdims=True), 1)


def _column_of(label: str) -> str:
    return next(c for c in VOTE_COLUMNS[:8] if canonical(c) == label)


def load_ferplus(images: str | Path, votes: str | Path | None = None) -> FaceDataset:
    """FER2013 crops with FER+ labels: 8 classes, majority ``labels`` and vote ``soft`` rows.

    Rows are dropped when FER+ has no row or calls them not a face (status 2/3), or when the votes
    have no majority or it is ``unknown``/``NF``; ``kept`` (in ``source``) says how many remain."""
    votes = Path(votes) if votes is not None else votes_path_for(images)
    if not votes.is_file():
        raise EmoLensError(f"no FER+ votes file {votes}: give its path (the votes of {Path(images).name}, row for row)")
    x, _, _ = load_npz(images)
    try:
        with np.load(votes, allow_pickle=False) as z:
            counts, columns, vnames = z["votes"], [str(c) for c in z["columns"]], z["names"]
            status = z["status"] if "status" in z.files else np.zeros(len(counts), dtype=np.int8)
        with np.load(images, allow_pickle=False) as z:
            inames = z["names"] if "names" in z.files else None
    except (KeyError, ValueError, OSError) as exc:
        raise EmoLensError(f"{votes} is not a FER+ votes file (votes, columns, names): {exc}") from None
    if tuple(columns) != VOTE_COLUMNS:
        raise BadLabelError(f"{votes} has vote columns {columns}, expected {list(VOTE_COLUMNS)}")
    if len(counts) != len(x):
        raise BadLabelError(f"{votes} has {len(counts)} rows but {images} has {len(x)}: they must match row for row")
    if inames is not None and not np.array_equal(np.asarray(inames).astype(str), np.asarray(vnames).astype(str)):
        bad = int(np.flatnonzero(np.asarray(inames).astype(str) != np.asarray(vnames).astype(str))[0])
        raise BadLabelError(f"row {bad} of {votes} is {vnames[bad]!r} but {images} has {inames[bad]!r} there")
    top, ok = majority(counts)
    ok &= ~np.isin(status, DROPPED_STATUS)
    col_to_label = {i: FERPLUS8.index(canonical(c)) for i, c in enumerate(VOTE_COLUMNS[:8])}
    keep = np.flatnonzero(ok)
    labels = np.array([col_to_label[int(c)] for c in top[keep]], dtype=np.int64)
    return FaceDataset(
        classes=list(FERPLUS8),
        labels=labels,
        images=x[keep],
        soft=vote_distribution(counts[keep]),
        source=f"{images} with FER+ votes {votes.name} ({len(keep)} of {len(x)} faces kept)",
    )


def blend_votes(dataset: FaceDataset, votes: str | Path, weight: float) -> FaceDataset:
    """``dataset`` (its own labels, e.g. FER2013's 7) with each face's FER+ vote distribution
    blended into a one-hot of its label: ``soft = (1 - weight) * one_hot + weight * votes``.

    Votes go to the dataset's own classes (a class it lacks, such as ``contempt`` for FER2013, is
    left out and the rest renormalised); faces without usable votes (status 2/3, or no emotion of
    the dataset's with two or more votes) keep their one-hot label. Every row is kept, so the
    labels that pick an epoch stay the dataset's own."""
    if not 0 <= weight <= 1:
        raise EmoLensError(f"the votes' weight is in [0, 1], not {weight}")
    votes = Path(votes)
    with np.load(votes, allow_pickle=False) as z:
        counts = z["votes"]
        status = z["status"] if "status" in z.files else np.zeros(len(counts), dtype=np.int8)
    if len(counts) != len(dataset):
        raise BadLabelError(f"{votes} has {len(counts)} rows but the dataset has {len(dataset)}: they must match")
    dist = vote_distribution(counts)  # FERPLUS8 order
    cols = [FERPLUS8.index(c) for c in dataset.classes if c in FERPLUS8]
    if len(cols) != len(dataset.classes):
        missing = sorted(set(dataset.classes) - set(FERPLUS8))
        raise BadLabelError(f"FER+ votes have no column for {missing}: they can blend into FER2013's classes only")
    mine = dist[:, cols]
    total = mine.sum(1, keepdims=True)
    usable = (total[:, 0] > 0) & ~np.isin(status, DROPPED_STATUS)
    one_hot = np.eye(len(dataset.classes), dtype=np.float32)[dataset.labels]
    voted = np.where(usable[:, None], mine / np.maximum(total, 1e-9), one_hot)
    out = dataset.subset(np.arange(len(dataset)))
    out.soft = ((1 - weight) * one_hot + weight * voted).astype(np.float32)
    out.source = f"{dataset.source} with FER+ votes {votes.name} blended in at {weight:g} ({int(usable.sum())} faces)"
    return out


def training_targets(dataset: FaceDataset, mode: str) -> np.ndarray:
    """What ``fit`` learns from, for a FER+ training mode: integer labels (``majority``) or the
    (N, C) vote distribution (``probability``: sampled each time; ``distribution``: used as is)."""
    if mode not in MODES:
        raise EmoLensError(f"FER+ label mode must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "majority" or dataset.soft is None:
        return dataset.labels
    return dataset.soft
