"""Scoring on the FER+ label set: the majority of 10 annotators' votes, 8 classes with contempt."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emolens.data.ferplus import load_ferplus, votes_path_for
from emolens.evaluate.core import load_members, member_probs, model_names, summarize, target_labels


def ferplus_votes_for(data: str | Path, votes: str | Path | None = None) -> Path | None:
    """The votes file to score ``data`` with: the one given, else ``<stem>_ferplus.npz`` beside an
    ``.npz`` when it exists, else None (the data have one label set)."""
    if votes is not None:
        return Path(votes)
    p = Path(data)
    guess = votes_path_for(p)
    return guess if p.suffix == ".npz" and guess.is_file() else None


def evaluate_ferplus(model, images_npz: str | Path, votes: str | Path, *, tta: bool = False) -> dict:
    """A model (or ensemble) on FER+ majority labels. A 7-class model has no contempt output:
    faces whose majority is contempt are then not scored (``n_unscorable`` says how many)."""
    names = model_names(model)
    members = load_members(names)
    data = load_ferplus(images_npz, votes)
    ref, y_true, keep = target_labels(members[0].labels, data.labels, data.classes, drop_rows=True)
    probs = np.mean([member_probs(m, data.images[keep], ref, tta=tta) for m in members], axis=0)
    out = summarize(probs, y_true, ref)
    out.pop("selective", None)
    out.update(labels=ref, n_unscorable=int((~keep).sum()), votes=str(votes), source=data.source)
    return out


def subtle_faces(images_npz: str | Path, votes: str | Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The subtle expressions of a FER2013 file: faces whose FER2013 label is an emotion while the FER+
    majority says neutral (posed anger or fear that crowd annotators read as neutral). Returns their
    crops, their FER2013 labels and the file's classes."""
    from emolens.data.datasets import load_npz
    from emolens.data.ferplus import DROPPED_STATUS, VOTE_COLUMNS, majority

    images, labels, classes = load_npz(images_npz)
    with np.load(votes, allow_pickle=False) as z:
        counts, status = z["votes"], z["status"] if "status" in z.files else np.zeros(len(z["votes"]), np.int8)
    top, ok = majority(counts)
    subtle = ok & ~np.isin(status, DROPPED_STATUS) & (top == VOTE_COLUMNS.index("neutral"))
    subtle &= np.asarray(labels) != classes.index("neutral")
    return images[subtle], np.asarray(labels)[subtle], list(classes)


def evaluate_subtle(model, images_npz: str | Path, votes: str | Path) -> dict:
    """A model on the subtle expressions (``subtle_faces``), scored on their FER2013 labels: how often
    it sees the emotion, how often it reads neutral instead, and its recall of each emotion there."""
    from emolens.evaluate import evaluate_arrays

    images, labels, classes = subtle_faces(images_npz, votes)
    r = evaluate_arrays(model, images, labels, classes)
    neutral = r["labels"].index("neutral") if "neutral" in r.get("labels", []) else None
    cm = np.asarray(r["confusion"]) if "confusion" in r else None
    read_neutral = float(cm[:, neutral].sum() / cm.sum()) if cm is not None and neutral is not None else None
    recall = {c: v for c, v in r["per_class_recall"].items() if c != "neutral"}
    return {"accuracy": r["accuracy"], "n": r["n"], "read_neutral": read_neutral, "per_class_recall": recall}
