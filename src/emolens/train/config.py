"""Training configuration from YAML with ``key=value`` overrides (dotted keys reach nested fields).

With ``stages`` (e.g. ``head:2,all:8``) the number of epochs follows from the stages."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from emolens.errors import EmoLensError, require
from emolens.train.augment import AugmentConfig
from emolens.train.loop import TrainConfig, check_config, parse_stages


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
    for name, value in kwargs.items():  # YAML has no tuples: restore them where the default is one
        if isinstance(fields[name].default, tuple) and isinstance(value, list):
            kwargs[name] = tuple(value)
    return cls(**kwargs)


def dump_config(cfg: TrainConfig) -> str:
    yaml = require("yaml", "train", package="pyyaml")
    return yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False)
