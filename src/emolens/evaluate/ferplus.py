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
