"""Label schemas and explicit mapping between them.

Datasets name emotions differently ("happiness", "Happy", "3") and hold different sets (FER2013's
7, FER+'s 8 with contempt, 6 without disgust). Every name is normalised through one alias table,
and moving between schemas takes an explicit mapping for any class the target lacks: nothing is
merged or dropped silently.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from emolens.core.errors import BadLabelError

FER7 = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
FERPLUS8 = (*FER7, "contempt")
SIX = ("angry", "fear", "happy", "neutral", "sad", "surprise")
SCHEMAS: dict[str, tuple[str, ...]] = {"fer7": FER7, "ferplus8": FERPLUS8, "six": SIX}

ALIASES = {
    "anger": "angry",
    "mad": "angry",
    "disgusted": "disgust",
    "fearful": "fear",
    "afraid": "fear",
    "scared": "fear",
    "happiness": "happy",
    "joy": "happy",
    "smile": "happy",
    "calm": "neutral",
    "none": "neutral",
    "sadness": "sad",
    "unhappy": "sad",
    "surprised": "surprise",
    "contemptuous": "contempt",
}


def canonical(name: str) -> str:
    """Lower-case, trimmed, aliases resolved: ``" Happiness "`` → ``"happy"``."""
    key = str(name).strip().lower()
    return ALIASES.get(key, key)


def schema(name_or_labels: str | Sequence[str]) -> tuple[str, ...]:
    """A schema by name (``fer7``, ``ferplus8``, ``six``) or a custom list of class names."""
    if isinstance(name_or_labels, str):
        if name_or_labels not in SCHEMAS:
            raise BadLabelError(f"unknown label schema {name_or_labels!r}; choose {', '.join(SCHEMAS)} or give a list")
        return SCHEMAS[name_or_labels]
    labels = tuple(canonical(x) for x in name_or_labels)
    if len(set(labels)) != len(labels):
        raise BadLabelError(f"label list has duplicates after normalising names: {list(labels)}")
    return labels


def encode(names: Iterable[str], classes: Sequence[str]) -> np.ndarray:
    """Class names → indices into ``classes``; every unknown name is reported at once."""
    names = [canonical(n) for n in names]
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({n for n in names if n not in index})
    if unknown:
        raise BadLabelError(f"labels {unknown} are not in the schema {list(classes)}")
    return np.array([index[n] for n in names], dtype=np.int64)


def map_labels(
    labels: np.ndarray,
    source: Sequence[str],
    target: Sequence[str],
    mapping: dict[str, str | None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Re-index ``labels`` from ``source`` classes to ``target`` classes.

    A source class that is missing from the target must appear in ``mapping``, either to another
    target class (``{"disgust": "angry"}``) or to None (drop those samples). Returns the new labels
    and a boolean mask of the samples kept.
    """
    mapping = {canonical(k): (None if v is None else canonical(v)) for k, v in (mapping or {}).items()}
    source = [canonical(c) for c in source]
    target_index = {canonical(c): i for i, c in enumerate(target)}
    lookup = np.full(len(source), -1, dtype=np.int64)
    present = set(np.unique(labels).tolist())
    unplaced = []
    for i, name in enumerate(source):
        dest = mapping.get(name, name)
        if dest is None:
            continue
        if dest in target_index:
            lookup[i] = target_index[dest]
        elif i in present:
            unplaced.append(name if dest == name else f"{name} -> {dest}")
    if unplaced:
        raise BadLabelError(
            f"classes {unplaced} have no place in {list(target)}; map them explicitly, "
            "e.g. mapping={'disgust': 'angry'}, or to None to drop them"
        )
    new = lookup[labels]
    keep = new >= 0
    return new[keep], keep
