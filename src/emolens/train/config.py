"""The training recipe (``TrainConfig``) and its checks; read from YAML with ``key=value`` overrides
(dotted keys reach nested fields).

With ``stages`` (e.g. ``head:2,all:8``) the number of epochs follows from the stages."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from emolens.core.errors import EmoLensError, require
from emolens.image.degrade import kind_odds
from emolens.train.pretrained import SOURCES as PRETRAINED_SOURCES


@dataclass
class AugmentConfig:
    hflip: float = 0.5
    rotate_deg: float = 10.0
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.08  # fraction of the side
    brightness: float = 0.25
    contrast: float = 0.25
    erase_p: float = 0.25
    erase_area: tuple[float, float] = (0.02, 0.12)
    degrade: float = 0.0  # share of crops given camera degradations (emolens.image.degrade.random_degrade)
    degrade_weights: dict[str, float] = field(default_factory=dict)  # relative odds of each kind; missing: 1


@dataclass
class TrainConfig:
    arch: str = "vgg-tiny"
    labels: list[str] = field(
        default_factory=lambda: ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    )
    size: int = 48
    channels: int = 1
    epochs: int = 40
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-2
    label_smoothing: float = 0.1
    focal_gamma: float = 0.0
    class_weights: list[float] | None = None
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    ema_decay: float = 0.999
    grad_clip: float = 5.0
    dropout: float = 0.3
    seed: int = 0
    threads: int = 0  # 0: leave torch's default
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    weighted_sampling: bool = False  # draw batches with class-balanced probabilities
    accumulate: int = 1  # gradient accumulation: optimizer step every N batches
    device: str = "auto"  # "auto": CUDA when present, else CPU
    amp: bool = True  # bfloat16 autocast where the device supports it (CUDA)
    select_on: str = "accuracy"  # or "macro_f1", or "last" (keep the final weights)
    patience: int = 0  # early stopping in epochs without improvement; 0 = off
    optimizer: str = "adamw"  # or "sgd"; weight_decay is decoupled for AdamW, an L2 term for SGD (try 5e-4 there)
    momentum: float = 0.9  # SGD
    nesterov: bool = True  # SGD
    schedule: str = "onecycle"  # or "cosine": linear warm-up over warmup_epochs, then cosine decay to 0
    warmup_epochs: float = 0.0  # cosine only (OneCycle warms up over its first 15%); restarts with each stage
    vote_blend: float = 0.0  # with --votes: keep the data's own labels, blend this share of FER+ votes into each
    label_mode: str = "distribution"  # soft labels (FER+ votes): distribution (cross-entropy), probability, majority
    stages: str = ""  # fine-tuning stages, e.g. "head:2,all:8": epochs training only the head, then all layers
    layer_decay: float = 1.0  # in "all" stages, the LR is multiplied by this once per block away from the head
    pretrained: str = ""  # "imagenet": start from weights a package carries (emolens.train.pretrained)
    teacher: str = ""  # distillation: a model name/path/ensemble whose probabilities join the labels
    distill_weight: float = 0.5  # the teacher's share of each target distribution
    distill_temperature: float = 2.0

    @property
    def input_spec(self) -> dict:
        return {
            "size": self.size,
            "channels": self.channels,
            "mean": [0.5] * self.channels,
            "std": [0.5] * self.channels,
            "layout": "NCHW",
            "range": 255,
        }


OPTIMIZERS, SCHEDULES, STAGE_KINDS = ("adamw", "sgd"), ("onecycle", "cosine"), ("head", "all")
LABEL_MODES = ("distribution", "probability", "majority")


def parse_stages(text: str) -> list[tuple[str, int]]:
    """``"head:2,all:8"`` → ``[("head", 2), ("all", 8)]``; raises EmoLensError for anything else."""
    plan = []
    for part in (p.strip() for p in str(text or "").split(",")):
        if not part:
            continue
        kind, _, n = part.partition(":")
        if kind.strip() not in STAGE_KINDS or not n.strip().isdigit() or int(n) < 1:
            raise EmoLensError(
                f"bad stage {part!r}: stages are {'|'.join(STAGE_KINDS)}:EPOCHS, comma-separated (e.g. head:2,all:8)"
            )
        plan.append((kind.strip(), int(n)))
    return plan


def check_config(cfg: TrainConfig) -> list[tuple[str, int]]:
    """Validate the choices a typo could break; returns the stage plan (one "all" stage by default)."""
    if cfg.optimizer not in OPTIMIZERS:
        raise EmoLensError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {cfg.optimizer!r}")
    if cfg.schedule not in SCHEDULES:
        raise EmoLensError(f"schedule must be one of {', '.join(SCHEDULES)}, not {cfg.schedule!r}")
    if cfg.label_mode not in LABEL_MODES:
        raise EmoLensError(f"label_mode must be one of {', '.join(LABEL_MODES)}, not {cfg.label_mode!r}")
    if not 0 <= cfg.vote_blend <= 1:
        raise EmoLensError(f"vote_blend is the FER+ votes' share of each target, in [0, 1], not {cfg.vote_blend}")
    if not 0 <= cfg.augment.degrade <= 1:
        raise EmoLensError(f"augment.degrade is a share of crops in [0, 1], not {cfg.augment.degrade}")
    kind_odds(cfg.augment.degrade_weights)  # raises for an unknown kind or a bad weight
    if cfg.pretrained and cfg.pretrained not in PRETRAINED_SOURCES:
        choices = ", ".join(PRETRAINED_SOURCES)
        raise EmoLensError(f"pretrained must be one of {choices} (or empty), not {cfg.pretrained!r}")
    if not 0 < cfg.layer_decay <= 1:
        raise EmoLensError(f"layer_decay is in (0, 1], not {cfg.layer_decay}")
    plan = parse_stages(cfg.stages) or [("all", cfg.epochs)]
    if sum(n for _, n in plan) != cfg.epochs:
        raise EmoLensError(
            f"stages {cfg.stages!r} add up to {sum(n for _, n in plan)} epochs but epochs is {cfg.epochs}"
        )
    for _, n in plan:
        if cfg.warmup_epochs > n and cfg.schedule == "cosine":
            raise EmoLensError(f"warmup_epochs {cfg.warmup_epochs} is longer than a {n}-epoch stage")
    return plan


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, base: dict | None = None
) -> TrainConfig:
    """Defaults < ``base`` (what the data imply, e.g. its labels) < YAML file < overrides such as
    ``epochs=10`` or ``augment.rotate_deg=15``."""
    data: dict = dict(base or {})
    if path is not None:
        yaml = require("yaml", "train", package="pyyaml")
        try:
            from_file = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise EmoLensError(f"cannot read training config {path}: {exc}") from None
        if not isinstance(from_file, dict):
            raise EmoLensError(f"{path}: a training config is a mapping of settings")
        data.update(from_file)
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise EmoLensError(f"override {item!r} is not key=value")
        yaml = require("yaml", "train", package="pyyaml")
        node = data
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw)
    if isinstance(data.get("stages"), list):  # YAML list form: [head:2, all:8]
        data["stages"] = ",".join(str(x) for x in data["stages"])
    if data.get("stages"):  # staged fine-tuning: the stages say how many epochs there are
        total = sum(n for _, n in parse_stages(data["stages"]))
        if "epochs" in data and data["epochs"] != total:
            raise EmoLensError(f"stages {data['stages']!r} add up to {total} epochs but epochs is {data['epochs']}")
        data["epochs"] = total
    cfg = _build(TrainConfig, data)
    check_config(cfg)
    return cfg


def _build(cls, data: dict):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise EmoLensError(f"unknown {cls.__name__} settings {unknown}; known: {', '.join(sorted(fields))}")
    kwargs = dict(data)
    if isinstance(kwargs.get("augment"), dict):
        kwargs["augment"] = _build(AugmentConfig, kwargs["augment"])
    for name, value in kwargs.items():
        default = fields[name].default
        if isinstance(default, tuple) and isinstance(value, list):  # YAML has no tuples
            kwargs[name] = tuple(value)
        elif isinstance(default, float) and isinstance(value, int | str) and not isinstance(value, bool):
            kwargs[name] = _number(name, value)  # YAML reads 5e-4 (no dot) as a string
    return cls(**kwargs)


def _number(name: str, value: int | str) -> float:
    try:
        return float(value)
    except ValueError:
        raise EmoLensError(f"{name} is a number, not {value!r}") from None


def dump_config(cfg: TrainConfig) -> str:
    yaml = require("yaml", "train", package="pyyaml")
    return yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False)
