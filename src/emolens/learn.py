"""Learning from corrections: fine-tune the active model on feedback, and promote it only if it is better.

The candidate trains on the training part of the feedback, mixed with a replay sample of the
base model's own training data so it does not forget, with augmentation and a low learning
rate. It is then judged beside the active model on two sets it never trained on: a fixed base
validation set and the held-out part of the feedback. It becomes active only when every gate
passes (and the caller agrees); otherwise it stays in the registry, unpromoted, with its report.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from emolens.errors import ModelError, RefusedError, require


@dataclass
class Gates:
    """When a candidate may replace the active model."""

    min_feedback_gain: float = 0.0  # held-out feedback accuracy must rise by more than this
    max_base_drop: float = 0.01  # base validation accuracy may fall by at most this (1 point)
    # With a confidence (e.g. 0.95), the held-out feedback gain must also be beyond noise (see below).
    confidence: float | None = None

    def check(self, parent: dict, candidate: dict) -> dict[str, dict]:
        gain = candidate["feedback"]["accuracy"] - parent["feedback"]["accuracy"]
        drop = parent["base"]["accuracy"] - candidate["base"]["accuracy"]
        return {
            "feedback_improves": {"passed": gain > self.min_feedback_gain, "change": gain},
            "base_holds": {"passed": drop <= self.max_base_drop + 1e-9, "change": -drop},
        }


@dataclass
class FinetuneOptions:
    # Defaults from benchmarks/feedback_loop.py: of the recipes tried, the one that gave up the
    # least base accuracy for its gain on the new domain.
    epochs: int = 6
    lr: float = 2e-4
    replay_size: int = 6000  # replayed base-training faces
    feedback_share: float = 0.2  # share of each epoch drawn (with repeats) from the feedback
    batch_size: int = 128
    seed: int = 0
    threads: int = 0


@dataclass
class FinetuneOutcome:
    parent: str
    candidate: str
    passed: bool
    promoted: bool
    gates: dict[str, dict]
    metrics: dict[str, dict]  # {"parent"|"candidate": {"base": {...}, "feedback": {...}}}
    counts: dict[str, int]
    report: str
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _sample(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A class-stratified random sample of ``n`` indices (all of them when there are fewer)."""
    if n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        picked.append(rng.choice(idx, size=max(1, round(n * len(idx) / len(labels))), replace=False))
    return np.sort(np.concatenate(picked))


def _crops(dataset, spec: dict) -> tuple[np.ndarray, np.ndarray]:
    from emolens.data.datasets import to_crops

    x, y, _ = to_crops(dataset, spec["size"], spec["channels"], detect=False)
    return x, y


def _measure(model: Path, sets: dict[str, tuple[np.ndarray, np.ndarray, list[str]]]) -> dict[str, dict]:
    from emolens.evaluate import evaluate_arrays

    out = {}
    for name, (x, y, classes) in sets.items():
        m = evaluate_arrays(str(model), x, y, classes)
        out[name] = {k: m[k] for k in ("accuracy", "macro_f1", "n", "per_class_recall")}
    return out


def finetune_from_feedback(
    *,
    store=None,
    registry=None,
    replay: str | Path | None = None,
    base_val: str | Path | None = None,
    min_feedback: int | None = None,
    options: FinetuneOptions | None = None,
    gates: Gates | None = None,
    promote: bool | Callable[[FinetuneOutcome], bool] = False,
    progress: bool = True,
) -> FinetuneOutcome:
    """Fine-tune the active model on the stored feedback; register the candidate; promote it when
    the gates pass and ``promote`` is True (or returns True when called with the outcome)."""
    from emolens.data.datasets import load_dataset
    from emolens.registry import Registry
    from emolens.settings import get_settings
    from emolens.store.feedback import FeedbackStore

    require("torch", "train")
    s = get_settings()
    store = store or FeedbackStore()
    registry = registry or Registry()
    options, gates = options or FinetuneOptions(), gates or Gates()
    minimum = s.min_feedback if min_feedback is None else min_feedback
    corrections = store.count(corrections_only=True)
    if corrections < minimum:
        raise RefusedError(
            f"only {corrections} correction(s) stored; fine-tuning needs at least {minimum} "
            "(collect more, or lower the minimum with --min / EMOLENS_MIN_FEEDBACK)"
        )
    replay, base_val = replay or s.replay_data, base_val or s.base_val_data
    missing = [f"{flag} ({env})" for flag, env, v in (("--replay", "EMOLENS_REPLAY_DATA", replay),
               ("--base-val", "EMOLENS_BASE_VAL_DATA", base_val)) if not v]  # fmt: skip
    if missing:
        raise RefusedError(
            "fine-tuning needs a replay sample of the base model's training data and a fixed base "
            f"validation set (e.g. FER2013 train.npz and val.npz): set {' and '.join(missing)}"
        )

    parent = registry.ensure_base()
    if parent.checkpoint is None:
        raise ModelError(f"model {parent.name} has no PyTorch weights (model.pt) to fine-tune from")
    import torch

    state = torch.load(parent.checkpoint, map_location="cpu", weights_only=False)
    labels, spec = list(state["labels"]), state["input"]

    fb_train, fb_hold = store.dataset("train", labels), store.dataset("holdout", labels)
    if len(fb_hold) == 0 or len(fb_train) == 0:
        raise RefusedError(
            f"the feedback has {len(fb_train)} training and {len(fb_hold)} held-out record(s) with labels "
            f"the model knows ({', '.join(labels)}); both parts are needed: collect more feedback"
        )
    replay_ds, base_ds = load_dataset(replay), load_dataset(base_val)
    replay_ds = replay_ds.subset(_sample(replay_ds.labels, options.replay_size, options.seed)).remap(labels)
    base_ds = base_ds.remap(labels)
    xf, yf = _crops(fb_train, spec)
    xr, yr = _crops(replay_ds, spec)
    xb, yb = _crops(base_ds, spec)
    xh, yh = _crops(fb_hold, spec)
    # Repeat the (few) corrections so they make up feedback_share of every epoch.
    repeats = max(1, math.ceil(options.feedback_share * len(xr) / ((1 - options.feedback_share) * len(xf))))
    x_train = np.concatenate([xr, np.repeat(xf, repeats, axis=0)])
    y_train = np.concatenate([yr, np.repeat(yf, repeats)])

    from emolens.train.export import export_onnx
    from emolens.train.loop import TrainConfig, fit, lineage_of

    base_cfg = {k: v for k, v in state["config"].items() if k in TrainConfig.__dataclass_fields__}
    cfg = replace(
        TrainConfig(**{k: v for k, v in base_cfg.items() if k != "augment"}),
        epochs=options.epochs,
        lr=options.lr,
        batch_size=options.batch_size,
        seed=options.seed,
        threads=options.threads,
        ema_decay=0.99,  # few steps: a long EMA would barely move from the parent
        select_on="last",
        patience=0,
        stages="",  # one plain stage: the parent's staged schedule (if any) does not apply
        mixup_alpha=0.0,
        cutmix_alpha=0.0,
        weighted_sampling=False,
    )
    # The training feedback is identified by its crops' content hashes (their file names) and labels.
    feedback = sorted(zip((p.name for p in fb_train.paths), fb_train.labels.tolist(), strict=True))
    data_hash = _hash({"feedback": feedback, "replay": str(replay), "base_val": str(base_val), "o": asdict(options)})
    counts = {
        "corrections": corrections,
        "feedback_train": len(xf),
        "feedback_holdout": len(xh),
        "replay": len(xr),
        "feedback_repeats": repeats,
        "base_val": len(xb),
    }
    with tempfile.TemporaryDirectory(prefix="emolens-finetune-") as tmp:
        tmp = Path(tmp)
        val_idx = _sample(yb, 1000, options.seed)  # per-epoch progress only; the gates use all of it
        val = (xb[val_idx], yb[val_idx])
        fit(
            (x_train, y_train), val, cfg, tmp / "run", progress=progress, init=state["model"], lineage=lineage_of(state)
        )
        card = {
            "name": "fine-tuned from feedback",
            "parent": parent.name,
            "data": f"{len(xf)} feedback faces (x{repeats}) + {len(xr)} replayed from {replay}",
        }
        onnx = tmp / "model.onnx"
        export_onnx(tmp / "run" / "best.pt", onnx, card)
        sets_parent = {"base": (xb, yb, labels), "feedback": (xh, yh, labels)}
        metrics = {"parent": _measure(parent.path, sets_parent), "candidate": _measure(onnx, sets_parent)}
        verdict = gates.check(metrics["parent"], metrics["candidate"])
        if gates.confidence:  # issue 23: a paired test (bootstrap + McNemar) that the gain is not noise
            from emolens.evaluate import confidence_gate

            verdict.update(confidence_gate(parent.path, onnx, (xh, yh, labels), gates.confidence))
        passed = all(g["passed"] for g in verdict.values())
        outcome = FinetuneOutcome(
            parent=parent.name,
            candidate="",
            passed=passed,
            promoted=False,
            gates=verdict,
            metrics=metrics,
            counts=counts,
            report="",
            options=asdict(options),
        )
        (tmp / "report.md").write_text(render_report(outcome))
        (tmp / "report.json").write_text(json.dumps(outcome.to_dict(), indent=2))
        candidate = registry.register(
            onnx,
            checkpoint=tmp / "run" / "best.pt",
            parent=parent.name,
            source="finetune:feedback",
            metrics={
                "base_accuracy": metrics["candidate"]["base"]["accuracy"],
                "feedback_accuracy": metrics["candidate"]["feedback"]["accuracy"],
                "gates_passed": passed,
            },
            data_hash=data_hash,
            config_hash=_hash(asdict(cfg)),
            extra_files={
                "report.md": tmp / "report.md",
                "report.json": tmp / "report.json",
                "log.csv": tmp / "run" / "log.csv",
            },
        )
    outcome.candidate, outcome.report = candidate.name, str(candidate.folder / "report.md")
    if passed and (promote(outcome) if callable(promote) else promote):
        registry.promote(candidate.name)
        outcome.promoted = True
    return outcome


def render_report(o: FinetuneOutcome) -> str:
    def pct(v: float) -> str:
        return f"{v:.2%}"

    lines = [
        f"# Fine-tuning from feedback: candidate of {o.parent}",
        "",
        f"Verdict: **{'gates passed' if o.passed else 'gates failed: the active model stays'}**",
        "",
        "| set | faces | active model | candidate | change |",
        "|---|---|---|---|---|",
    ]
    for name in ("feedback", "base"):
        p, c = o.metrics["parent"][name], o.metrics["candidate"][name]
        title = "held-out feedback" if name == "feedback" else "base validation"
        diff = c["accuracy"] - p["accuracy"]
        lines.append(f"| {title} | {p['n']} | {pct(p['accuracy'])} | {pct(c['accuracy'])} | {diff:+.2%} |")
    lines += ["", "| gate | passed | change |", "|---|---|---|"]
    lines += [f"| {k} | {'yes' if g['passed'] else 'no'} | {g['change']:+.2%} |" for k, g in o.gates.items()]
    lines += ["", "Data: " + ", ".join(f"{k} {v}" for k, v in o.counts.items())]
    lines += ["", "Options: " + ", ".join(f"{k}={v}" for k, v in o.options.items()), ""]
    return "\n".join(lines)
