"""Several emotion models answering as one: the weighted mean of their probabilities.

An ``EnsembleModel`` has the interface of an ``EmotionModel`` (``labels``, ``meta``, ``predict``),
so the analyzer, the video pipeline, the server and the evaluator take it unchanged. Members must
share their labels by name (in any order: each member's columns are put in the first member's
order) and may differ in input size and colour mode (each gets the crops fitted to its own input).
With ``tta`` every member also sees the mirrored crops. One member with ``tta`` is a single
model with mirror test-time augmentation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emolens.classify.emotion import EmotionModel
from emolens.classify.modelfile import DescribedByMeta, InputSpec, ModelMeta
from emolens.core.errors import BadLabelError


@dataclass
class Member:
    name: str  # as resolved: a registry version (v3), a model name (accurate) or a path
    model: EmotionModel
    weight: float  # normalised: the weights of an ensemble sum to 1


class EnsembleModel(DescribedByMeta):
    def __init__(self, members: list[Member], tta: bool = False, name: str = ""):
        """``name``: the spec's canonical text (``emolens.models.ModelSpec``), what results show."""
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = members
        self.tta = tta
        self.name = name or "+".join(m.name for m in members)
        self._meta: ModelMeta | None = None
        self.path = None  # no single file: explanations and registration need one model

    @property
    def digest(self) -> str | None:
        """The file hash of a one-member ensemble (a model with mirror TTA); several files have none."""
        return self.members[0].model.digest if len(self.members) == 1 else None

    @property
    def meta(self) -> ModelMeta:
        if self._meta is None:
            ref = self.members[0].model.labels
            for m in self.members[1:]:
                if sorted(m.model.labels) != sorted(ref):
                    raise BadLabelError(
                        f"an ensemble's models must share labels: {self.members[0].name} has {ref}, "
                        f"{m.name} has {m.model.labels}"
                    )
            specs = [m.model.meta.input for m in self.members]
            # Crops are aligned once, at the largest input (colour if any member wants colour), and
            # fitted to each member from there.
            spec = InputSpec(size=max(s.size for s in specs), channels=max(s.channels for s in specs))
            card = {"name": self.name, "ensemble": self.describe(), "tta": self.tta}
            # Thresholds and rules belong to one model's outputs, so an ensemble carries none.
            self._meta = ModelMeta(labels=list(ref), input=spec, output="probabilities", card=card)
        return self._meta

    def describe(self) -> list[dict]:
        """Every member's version: its name, file hash, card name and weight (what results record)."""
        return [
            {
                "name": m.name,
                "sha256": m.model.digest,
                "card": m.model.card.get("name"),
                "weight": round(m.weight, 6),
                **({"tta": "mirror"} if self.tta else {}),
            }
            for m in self.members
        ]

    def predict(self, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """The weighted mean of the members' probabilities (N, n_labels), in ``labels`` order."""
        from emolens.data.datasets import fit_crops  # fitting crops to a model's input lives with the data

        labels = self.labels
        total = np.zeros((len(crops), len(labels)), dtype=np.float64)
        for m in self.members:
            spec = m.model.meta.input
            x = fit_crops(crops, spec.size, spec.channels) if len(crops) else crops
            p = m.model.predict(x, batch_size=batch_size)
            if self.tta:
                p = (p + m.model.predict(np.ascontiguousarray(x[:, :, ::-1]), batch_size=batch_size)) / 2
            total += m.weight * p[:, [m.model.labels.index(label) for label in labels]]
        return total.astype(np.float32)
