"""The self-describing emotion model: an ONNX file whose metadata says how to use it.

Keys in the ONNX ``metadata_props``:
- ``emolens.labels``: JSON list of class names in output order;
- ``emolens.input``: JSON ``{"size", "channels", "mean", "std", "layout", "range"}``; an aligned
  uint8 crop becomes the input tensor as ``x = (crop / range - mean) / std`` (``range`` is the
  pixel value that maps to 1.0, so 255 for models trained on [0, 1] inputs);
- ``emolens.output``: ``"logits"`` or ``"probabilities"``;
- ``emolens.card``: JSON model card (name, version, data, recipe, metrics, MFLOPs, ...).

Reading needs only ONNX Runtime; writing (``annotate``) needs the ``onnx`` package.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from emolens.errors import ModelError

LABELS_KEY = "emolens.labels"
INPUT_KEY = "emolens.input"
OUTPUT_KEY = "emolens.output"
CARD_KEY = "emolens.card"


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

    def to_props(self) -> dict[str, str]:
        return {
            LABELS_KEY: json.dumps(self.labels),
            INPUT_KEY: json.dumps(self.input.__dict__),
            OUTPUT_KEY: self.output,
            CARD_KEY: json.dumps(self.card),
        }

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
        except (ValueError, TypeError) as exc:
            raise ModelError(f"{source} has malformed EmoLens metadata: {exc}") from None
        output = props.get(OUTPUT_KEY, "logits")
        if output not in ("logits", "probabilities"):
            raise ModelError(f"{source}: {OUTPUT_KEY} must be 'logits' or 'probabilities', not {output!r}")
        if not isinstance(labels, list) or not labels or not all(isinstance(s, str) for s in labels):
            raise ModelError(f"{source}: {LABELS_KEY} must be a non-empty JSON list of names")
        return cls(labels=labels, input=spec, output=output, card=card)


def annotate(path: str | Path, meta: ModelMeta, out: str | Path | None = None) -> Path:
    """Write EmoLens metadata into an ONNX file (in place unless ``out`` is given)."""
    from emolens.errors import require

    onnx = require("onnx", "export")
    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    props.update(meta.to_props())
    del model.metadata_props[:]
    for k, v in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    target = Path(out or path)
    tmp = target.with_suffix(target.suffix + ".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(target)  # atomic: a crash never leaves a half-written model
    return target
