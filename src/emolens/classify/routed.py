"""Two emotion models answering as one, each for the faces it reads best.

A ``RoutedModel`` sends every face whose aligned crop is clear to one model and every poor face
(soft, or noisy: below 1 on the ``sharpness`` or ``noise`` factor of ``emolens.image.quality``) to the
other. The shipped name ``adaptive`` is ``fast`` for clear faces and ``robust`` for poor ones: the
speed of ``fast`` on sharp photos, the robustness of ``robust`` on webcam and CCTV faces
(``benchmarks/results/robustness.md``), which reads each poor face mirrored too (its route's model
is ``robust`` with mirror TTA). The factors' limits were set from clean FER2013 Training crops and
the degradation family, not from any test set's labels.

It has the interface of an ``EmotionModel`` (``labels``, ``meta``, ``predict``), like an ensemble,
so every pipeline takes it unchanged; like an ensemble it carries no thresholds or rules, which
belong to one model's outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emolens.classify.modelfile import DescribedByMeta, InputSpec, ModelMeta
from emolens.core.errors import BadLabelError

ROUTED_ON = ("sharpness", "noise")  # the quality factors that route a face; 1 means fine


@dataclass
class Route:
    name: str  # as resolved: a model name (fast), a version (v3) or a path
    model: object  # an EmotionModel or an EnsembleModel (one member with ``tta``: a model with mirror TTA)


def poor_faces(crops: np.ndarray) -> np.ndarray:
    """True for each crop (N, H, W[, 3]) below 1 on a routing factor of ``emolens.image.quality``."""
    from emolens.image.quality import face_qualities

    qualities = face_qualities(list(crops))
    return np.array([min(q[k] for k in ROUTED_ON) < 1.0 for q in qualities], dtype=bool)


class RoutedModel(DescribedByMeta):
    def __init__(self, clear: Route, poor: Route, name: str | None = None):
        if sorted(clear.model.labels) != sorted(poor.model.labels):
            raise BadLabelError(
                f"routed models must share labels: {clear.name} has {clear.model.labels}, "
                f"{poor.name} has {poor.model.labels}"
            )
        self.clear, self.poor = clear, poor
        self.name = name or f"{clear.name}|{poor.name}"
        self.path = None  # no single file: explanations and registration need one model
        a, b = clear.model.meta.input, poor.model.meta.input
        # Crops are aligned once, at the larger input (colour if either wants it), and fitted to each model.
        spec = InputSpec(size=max(a.size, b.size), channels=max(a.channels, b.channels))
        card = {"name": self.name, "routed": self.describe()}
        self.meta = ModelMeta(labels=list(clear.model.labels), input=spec, output="probabilities", card=card)

    def describe(self) -> list[dict]:
        """Both models' versions and which faces each reads (what results record)."""
        return [
            {
                "name": r.name,
                "sha256": getattr(r.model, "digest", None),
                "card": r.model.card.get("name"),
                "faces": k,
                **({"tta": "mirror"} if getattr(r.model, "tta", False) else {}),
            }
            for r, k in ((self.clear, "clear"), (self.poor, "poor"))
        ]

    def predict(self, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Probabilities (N, n_labels) in ``labels`` order, each row from the model its face was routed to."""
        from emolens.data.datasets import fit_crops  # fitting crops to a model's input lives with the data

        labels = self.labels
        out = np.zeros((len(crops), len(labels)), dtype=np.float32)
        if not len(crops):
            return out
        poor = poor_faces(crops)
        for route, mask in ((self.clear, ~poor), (self.poor, poor)):
            if mask.any():
                spec = route.model.meta.input
                p = route.model.predict(fit_crops(crops[mask], spec.size, spec.channels), batch_size=batch_size)
                out[mask] = p[:, [route.model.labels.index(label) for label in labels]]
        return out
