"""The self-describing emotion model: an ONNX file whose metadata says how to use it.

Keys in the ONNX ``metadata_props``:
- ``emolens.labels``: JSON list of class names in output order;
- ``emolens.input``: JSON ``{"size", "channels", "mean", "std", "layout", "range"}``; an aligned
  uint8 crop becomes the input tensor as ``x = (crop / range - mean) / std`` (``range`` is the
  pixel value that maps to 1.0, so 255 for models trained on [0, 1] inputs);
- ``emolens.output``: ``"logits"`` or ``"probabilities"``;
- ``emolens.card``: JSON model card (name, version, data, recipe, metrics, MFLOPs, ...);
- ``emolens.thresholds`` (optional): JSON ``{label: threshold}``; a face whose top probability is
  below the threshold of its top label is answered "uncertain" (``emolens evaluate --save-thresholds``);
- ``emolens.temperature`` (optional): a positive number T; probabilities are ``softmax(logits / T)``
  (fitted on held-out feedback when a model is fine-tuned, so confidences stay calibrated).
- ``emolens.offsets`` (optional): JSON ``{label: offset}``, added to the (tempered) logits before the
  softmax: a shift of the class priors that lets a label win more (> 0) or less (< 0) often; labels not
  named get 0. Chosen on held-out faces (``benchmarks/offsets.py``); probabilities include it.
- ``emolens.rules`` (optional): JSON list of post-processing rules (``emolens.classify.rules``),
  written only when labelled data show they do not lower macro-F1 (``emolens evaluate --save-rules``).

Reading needs only ONNX Runtime; writing (``annotate``) needs the ``onnx`` package.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from emolens.classify.rules import RULES_KEY, Rule, check_rules
from emolens.classify.rules import answer as rules_answer
from emolens.core.errors import ModelError

LABELS_KEY = "emolens.labels"
INPUT_KEY = "emolens.input"
OUTPUT_KEY = "emolens.output"
CARD_KEY = "emolens.card"
THRESHOLDS_KEY = "emolens.thresholds"
TEMPERATURE_KEY = "emolens.temperature"
OFFSETS_KEY = "emolens.offsets"
UNCERTAIN = "uncertain"  # the answer of a model with thresholds when a face falls below them


@dataclass
class InputSpec:
    size: int = 48
    channels: int = 1
    mean: list[float] = field(default_factory=lambda: [0.5])
    std: list[float] = field(default_factory=lambda: [0.5])
    layout: str = "NCHW"
    range: float = 255.0

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ModelError(f"model input must have 1 or 3 channels, not {self.channels}")
        if self.layout not in ("NCHW", "NHWC"):
            raise ModelError(f"model input layout must be NCHW or NHWC, not {self.layout!r}")
        if len(self.mean) not in (1, self.channels) or len(self.std) not in (1, self.channels):
            raise ModelError("model input mean/std must have 1 or `channels` values")


@dataclass
class ModelMeta:
    labels: list[str]
    input: InputSpec
    output: str = "logits"
    card: dict = field(default_factory=dict)
    thresholds: dict[str, float] | None = None  # per-class confidence thresholds: below → "uncertain"
    temperature: float | None = None  # logits are divided by it before the softmax
    rules: list[Rule] | None = None  # post-processing rules, applied to answers above the thresholds
    offsets: dict[str, float] | None = None  # per-class logit offsets (prior shift), after the temperature

    def __post_init__(self) -> None:
        if self.thresholds is not None:
            self.thresholds = check_thresholds(self.thresholds, self.labels)
        if self.temperature is not None:
            t = self.temperature
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.01 <= t <= 100:
                raise ModelError(f"{TEMPERATURE_KEY} must be a number between 0.01 and 100, not {t!r}")
            self.temperature = float(t)
        if self.rules is not None:
            self.rules = check_rules(self.rules, self.labels)
        if self.offsets is not None:
            self.offsets = check_offsets(self.offsets, self.labels)

    def to_props(self) -> dict[str, str]:
        props = {
            LABELS_KEY: json.dumps(self.labels),
            INPUT_KEY: json.dumps(self.input.__dict__),
            OUTPUT_KEY: self.output,
            CARD_KEY: json.dumps(self.card),
        }
        if self.thresholds is not None:
            props[THRESHOLDS_KEY] = json.dumps(self.thresholds)
        if self.temperature is not None:
            props[TEMPERATURE_KEY] = json.dumps(self.temperature)
        if self.rules is not None:
            props[RULES_KEY] = json.dumps([r.to_dict() for r in self.rules])
        if self.offsets is not None:
            props[OFFSETS_KEY] = json.dumps(self.offsets)
        return props

    @classmethod
    def from_props(cls, props: dict[str, str], source: str = "model") -> ModelMeta:
        missing = [k for k in (LABELS_KEY, INPUT_KEY) if k not in props]
        if missing:
            raise ModelError(
                f"{source} lacks EmoLens metadata ({', '.join(missing)}); add it with "
                "`emolens annotate MODEL --labels angry,happy,... --size 48 --channels 1`"
            )
        try:
            labels = json.loads(props[LABELS_KEY])
            spec = InputSpec(**json.loads(props[INPUT_KEY]))
            card = json.loads(props.get(CARD_KEY, "{}") or "{}")
            thresholds = json.loads(props[THRESHOLDS_KEY]) if props.get(THRESHOLDS_KEY) else None
            temperature = json.loads(props[TEMPERATURE_KEY]) if props.get(TEMPERATURE_KEY) else None
            rules = json.loads(props[RULES_KEY]) if props.get(RULES_KEY) else None
            offsets = json.loads(props[OFFSETS_KEY]) if props.get(OFFSETS_KEY) else None
        except (ValueError, TypeError) as exc:
            raise ModelError(f"{source} has malformed EmoLens metadata: {exc}") from None
        output = props.get(OUTPUT_KEY, "logits")
        if output not in ("logits", "probabilities"):
            raise ModelError(f"{source}: {OUTPUT_KEY} must be 'logits' or 'probabilities', not {output!r}")
        if not isinstance(labels, list) or not labels or not all(isinstance(s, str) for s in labels):
            raise ModelError(f"{source}: {LABELS_KEY} must be a non-empty JSON list of names")
        try:
            return cls(
                labels=labels,
                input=spec,
                output=output,
                card=card,
                thresholds=thresholds,
                temperature=temperature,
                rules=rules,
                offsets=offsets,
            )
        except ModelError as exc:
            raise ModelError(f"{source}: {exc}") from None


class DescribedByMeta:
    """What a model tells from its metadata, for ``EmotionModel`` and ``EnsembleModel`` alike;
    a subclass provides ``meta`` (a ``ModelMeta``)."""

    meta: ModelMeta

    @property
    def labels(self) -> list[str]:
        return self.meta.labels

    @property
    def card(self) -> dict:
        return self.meta.card

    @property
    def thresholds(self) -> dict[str, float] | None:
        """Per-class confidence thresholds from the model's metadata, or None (an ensemble has none)."""
        return self.meta.thresholds


def _per_label(values, labels: list[str], key: str, what: str, lo: float, hi: float) -> dict[str, float]:
    """``{label: number}`` with known labels and numbers in [lo, hi]; raises ModelError otherwise."""
    if not isinstance(values, dict):
        raise ModelError(f"{key} must be a JSON object {{label: {what}}}")
    unknown = sorted(set(values) - set(labels))
    if unknown:
        raise ModelError(f"{key} names labels {unknown} that the model does not have ({labels})")
    out = {}
    for label, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            raise ModelError(f"{key}: the {what} of {label!r} must be a number in [{lo:g}, {hi:g}], not {value!r}")
        out[label] = float(value)
    return out


def check_thresholds(thresholds, labels: list[str]) -> dict[str, float]:
    """Per-class confidence thresholds: known labels, numbers in [0, 1]."""
    return _per_label(thresholds, labels, THRESHOLDS_KEY, "threshold", 0.0, 1.0)


def check_offsets(offsets, labels: list[str]) -> dict[str, float]:
    """Per-class logit offsets: known labels, finite numbers in [-10, 10]."""
    return _per_label(offsets, labels, OFFSETS_KEY, "offset", -10.0, 10.0)


def offset_vector(meta: ModelMeta) -> list[float] | None:
    """The offsets in output order (None without any)."""
    if not meta.offsets:
        return None
    return [meta.offsets.get(label, 0.0) for label in meta.labels]


def decide(probs: dict[str, float], thresholds: dict[str, float] | None, rules: list[Rule] | None = None) -> str | None:
    """The answer for one face: "uncertain" when the top probability is below that label's
    threshold, otherwise the top label as the post-processing rules may change it. ``None``
    without probabilities. Thresholds come first: they were chosen on the model's own answers."""
    if not probs:
        return None
    top = max(probs, key=probs.get)
    if thresholds and probs[top] < thresholds.get(top, 0.0):
        return UNCERTAIN
    return rules_answer(probs, rules)[0] if rules else top


def annotate(path: str | Path, meta: ModelMeta, out: str | Path | None = None) -> Path:
    """Write EmoLens metadata into an ONNX file (in place unless ``out`` is given)."""
    from emolens.core.errors import require
    from emolens.core.fileio import refuse_package

    refuse_package(out or path)  # the shipped models are never edited in place
    onnx = require("onnx", "export")
    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    props.update(meta.to_props())
    if meta.thresholds is None:  # thresholds belong to one set of labels and outputs: never keep stale ones
        props.pop(THRESHOLDS_KEY, None)
    if meta.temperature is None:
        props.pop(TEMPERATURE_KEY, None)
    if meta.rules is None:  # rules too: they were accepted on this model's outputs only
        props.pop(RULES_KEY, None)
    if meta.offsets is None:  # and offsets, chosen on this model's logits
        props.pop(OFFSETS_KEY, None)
    del model.metadata_props[:]
    for k, v in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    target = Path(out or path)
    tmp = target.with_suffix(target.suffix + ".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(target)  # atomic: a crash never leaves a half-written model
    return target
