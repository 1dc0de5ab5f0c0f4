"""A model read with fewer labels: an 8-class model's 7-class answer.

``fast8:7`` is the 8-class ``fast8`` answering with FER2013's 7 classes: the labels the 7 lack
(``contempt``) are dropped before the argmax and the rest renormalised, as ``emolens evaluate`` scores an
8-class model on 7-class labels. Any model spec member may carry the suffix ``:7``
(``v3:7``, ``my8.onnx:7``, ``fast8:7+accurate``). Like an ensemble it has the interface of an
``EmotionModel``; the thresholds and rules of the model it reads belong to its 8 outputs and are not
carried over.
"""

from __future__ import annotations

import numpy as np

from emolens.classify.modelfile import DescribedByMeta, ModelMeta
from emolens.core.errors import BadLabelError
from emolens.data.schemas import FER7

SUFFIX = ":7"  # a model spec member's suffix asking for its 7-class answer
SEVEN = FER7


def split_suffix(name: str) -> tuple[str, bool]:
    """``("fast8", True)`` for ``"fast8:7"``; the name unchanged and False otherwise."""
    return (name[: -len(SUFFIX)], True) if name.endswith(SUFFIX) else (name, False)


class SubsetModel(DescribedByMeta):
    def __init__(self, model, name: str, labels: tuple[str, ...] | list[str] = SEVEN):
        missing = [label for label in labels if label not in model.labels]
        if missing:
            raise BadLabelError(
                f"{name} has no {', '.join(missing)} (its labels: {model.labels}): it cannot answer with {SUFFIX}"
            )
        self.model, self.name = model, f"{name}{SUFFIX}"
        self.path = None  # not the file's answer: explanations and registration need one model
        self._cols = [model.labels.index(label) for label in labels]
        dropped = [label for label in model.labels if label not in labels]
        card = {**model.card, "name": self.name, "dropped_labels": dropped}
        self.meta = ModelMeta(labels=list(labels), input=model.meta.input, output="probabilities", card=card)

    @property
    def digest(self) -> str | None:
        return getattr(self.model, "digest", None)

    def predict(self, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Probabilities over the kept labels: the model's, without the dropped ones, renormalised."""
        kept = self.model.predict(crops, batch_size=batch_size)[:, self._cols]
        return (kept / np.maximum(kept.sum(1, keepdims=True), 1e-12)).astype(np.float32)
