"""Knowledge distillation: a stronger model (or an ensemble) teaches a smaller one.

The teacher's probabilities on the training crops are computed once (with mirror test-time
augmentation) and mixed with the true labels into one target distribution per face, which the
training loop learns like FER+ votes (``label_mode=distribution``). Computing them once keeps a
CPU run cheap: the teacher never runs inside the training loop.
"""

from __future__ import annotations

import numpy as np

from emolens.core.errors import EmoLensError


def soften(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities as a softmax at ``temperature`` would give them (p^(1/T), renormalised)."""
    if temperature <= 0:
        raise EmoLensError(f"the distillation temperature must be positive, not {temperature}")
    logp = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    logp -= logp.max(1, keepdims=True)
    p = np.exp(logp)
    return p / p.sum(1, keepdims=True)


def distill_targets(
    teacher,
    images: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    weight: float = 0.5,
    temperature: float = 2.0,
    tta: bool = True,
) -> np.ndarray:
    """(N, classes) targets: ``weight`` of the teacher's softened probabilities, the rest the true
    label (one-hot, or the row's own distribution when ``labels`` are already soft, such as FER+
    votes). ``teacher`` is a model name, path or ensemble (``"a+b"``) with the same labels."""
    from emolens.evaluate.compare import model_probs

    if not 0 <= weight <= 1:
        raise EmoLensError(f"the teacher's weight is in [0, 1], not {weight}")
    labels = np.asarray(labels)
    truth = labels / labels.sum(1, keepdims=True) if labels.ndim == 2 else np.eye(len(classes))[labels]
    taught = soften(model_probs(teacher, images, classes, tta=tta), temperature)
    return (weight * taught + (1 - weight) * truth).astype(np.float32)
