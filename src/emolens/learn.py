"""Learning from corrections: fine-tune the active model on feedback, and promote it only if it is better.

The candidate trains on the training part of the feedback, mixed with a replay sample of the
base model's own training data so it does not forget, with augmentation and a low learning
rate. It is then judged beside the active model on two sets it never trained on: a fixed base
validation set and the held-out part of the feedback. The feedback is held out by group (person,
source, upload session, near-duplicates: see ``emolens.feedback.split``), and the gain is judged
by its confidence interval from a bootstrap over those groups, so a gain the held-out size cannot
support is not claimed. A temperature fitted on the held-out feedback goes into the candidate's
model file so its confidences stay calibrated. The candidate becomes active only when every gate
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
from typing import TYPE_CHECKING, Any

import numpy as np

from emolens.errors import ModelError, RefusedError, require

if TYPE_CHECKING:
    from emolens.settings import Settings


@dataclass
class Gates:
    """When a candidate may replace the active model."""

    # The lower end of the held-out feedback gain's confidence interval must be above this.
    min_feedback_gain: float = 0.0
    max_base_drop: float = 0.01  # base validation accuracy may fall by at most this (1 point)
    confidence: float = 0.95  # of the intervals
    min_holdout_groups: int = 10  # fewer independent held-out groups cannot support any claim
    bootstrap: int = 2000  # resamples

    def check(self, changes: dict[str, dict]) -> dict[str, dict]:
        """The promotion decision, all of it: ``changes`` holds ``paired_change`` for "feedback"
        and "base"; returns each gate with ``passed``, the change, its interval and why."""
        fb, base = changes["feedback"], changes["base"]
        interval = f"{fb['change']:+.2%} ({self.confidence:.0%} CI {fb['low']:+.2%} to {fb['high']:+.2%})"
        if fb["groups"] < self.min_holdout_groups:
            ok, why = (
                False,
                (
                    f"the held-out feedback comes from {fb['groups']} independent group(s); at least "
                    f"{self.min_holdout_groups} are needed to judge a gain: collect feedback on more people or photos"
                ),
            )
        elif fb["low"] <= self.min_feedback_gain:
            ok, why = (
                False,
                (
                    f"gain {interval} over {fb['groups']} held-out groups: the interval reaches "
                    f"{self.min_feedback_gain:+.2%}, so this much held-out feedback cannot show a gain"
                ),
            )
        else:
            ok, why = True, f"gain {interval} over {fb['groups']} held-out groups"
        drop = -base["change"]
        held = drop <= self.max_base_drop + 1e-9
        return {
            "feedback_improves": {**fb, "passed": ok, "why": why},
            "base_holds": {
                **base,
                "passed": held,
                "why": f"change {base['change']:+.2%} ({self.confidence:.0%} CI {base['low']:+.2%} to "
                f"{base['high']:+.2%}); allowed drop {self.max_base_drop:.2%}",
            },
        }


def paired_change(
    parent_ok: np.ndarray, candidate_ok: np.ndarray, groups: np.ndarray, confidence: float, n: int, seed: int = 0
) -> dict[str, float]:
    """Accuracy change from parent to candidate on the same faces, with a percentile bootstrap
    interval that resamples whole groups (faces of one group are not independent evidence)."""
    diff = candidate_ok.astype(np.float64) - parent_ok
    _, which = np.unique(groups, return_inverse=True)
    sums, sizes = np.bincount(which, weights=diff), np.bincount(which)
    picks = np.random.default_rng(seed).integers(0, len(sizes), (n, len(sizes)))
    boot = sums[picks].sum(1) / sizes[picks].sum(1)
    low, high = np.quantile(boot, [(1 - confidence) / 2, (1 + confidence) / 2])
    return {"change": float(diff.mean()), "low": float(low), "high": float(high), "groups": len(sizes), "n": len(diff)}


def fit_temperature(probs: np.ndarray, y: np.ndarray) -> float:
    """The temperature T (0.1 to 10) minimising the negative log-likelihood of ``softmax(log p / T)``."""
    from emolens.classify.emotion import scale_probabilities

    grid = np.exp(np.linspace(np.log(0.1), np.log(10.0), 241))
    nll = [-np.log(scale_probabilities(probs, "probabilities", t)[np.arange(len(y)), y] + 1e-12).mean() for t in grid]
    return float(grid[int(np.argmin(nll))])


def calibrate(probs: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Fit a temperature on held-out feedback. ECE after is cross-fitted (the temperature fitted on
    half of the groups is measured on the other half, both ways), so it is not judged on its own data."""
    from emolens.classify.emotion import scale_probabilities
    from emolens.evaluate.calibrate import expected_calibration_error as ece

    t = fit_temperature(probs, y)
    uniq = np.unique(groups)
    half = np.isin(groups, np.random.default_rng(seed).permutation(uniq)[: len(uniq) // 2])
    crossed = np.empty_like(probs)
    for fit_on in (half, ~half):
        if fit_on.any() and (~fit_on).any():
            crossed[~fit_on] = scale_probabilities(
                probs[~fit_on], "probabilities", fit_temperature(probs[fit_on], y[fit_on])
            )
        else:  # one group only: nothing to cross with
            crossed[~fit_on] = scale_probabilities(probs[~fit_on], "probabilities", t)
    return {"temperature": round(t, 4), "ece_before": ece(probs, y), "ece_after": ece(crossed, y)}


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
    # temperature, ECE of the held-out feedback before/after it (cross-fitted), base ECE with it
    calibration: dict[str, Any] = field(default_factory=dict)

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


def _metrics(probs: np.ndarray, y: np.ndarray, labels: list[str]) -> dict[str, Any]:
    from emolens.evaluate.core import summarize

    m = summarize(probs, y, labels)
    return {k: m[k] for k in ("accuracy", "macro_f1", "n", "per_class_recall", "ece")}


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
    settings: Settings | None = None,
) -> FinetuneOutcome:
    """Fine-tune the active model on the stored feedback; register the candidate; promote it when
    the gates pass and ``promote`` is True (or returns True when called with the outcome).
    ``settings`` (default: the process's) give the defaults and the stores not given."""
    from emolens.data.datasets import load_dataset
    from emolens.feedback import FeedbackService
    from emolens.registry import Registry

    if settings is None:
        from emolens.settings import get_settings

        settings = get_settings()
    s = settings
    # The feedback service, or the store it works on (the server hands its store).
    store = store if isinstance(store, FeedbackService) else FeedbackService(store, settings=s)
    registry = registry or Registry(settings=s)
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

    require("torch", "train")  # after the checks above: a refusal does not wait for PyTorch to load
    parent = registry.ensure_base()
    if parent.checkpoint is None:
        raise ModelError(f"model {parent.name} has no PyTorch weights (model.pt) to fine-tune from")
    import torch

    state = torch.load(parent.checkpoint, map_location="cpu", weights_only=False)
    labels, spec = list(state["labels"]), state["input"]

    split = store.split()
    fb_train = store.to_dataset(split.train, labels, "train")
    hold_records = [r for r in split.holdout if r.label in labels]
    fb_hold = store.to_dataset(hold_records, labels, "holdout")
    hold_groups = np.array([split.group[r.uid] for r in hold_records])
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
        "holdout_groups": len(np.unique(hold_groups)),
        "train_groups": split.groups("train"),
        "regrouped": split.moved,
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
        from emolens.classify.emotion import EmotionModel, scale_probabilities
        from emolens.classify.modelfile import annotate

        sets = {"feedback": (xh, yh), "base": (xb, yb)}
        old, new = EmotionModel(parent.path), EmotionModel(onnx)  # uncached: the file changes below
        probs = {
            (who, k): m.predict(x) for who, m in (("parent", old), ("candidate", new)) for k, (x, _) in sets.items()
        }
        metrics = {
            who: {k: _metrics(probs[who, k], y, labels) for k, (_, y) in sets.items()}
            for who in ("parent", "candidate")
        }
        groups = {"feedback": hold_groups, "base": np.arange(len(yb))}  # base faces are independent
        changes = {
            k: paired_change(
                probs["parent", k].argmax(1) == y, probs["candidate", k].argmax(1) == y, groups[k],
                gates.confidence, gates.bootstrap, options.seed,
            )
            for k, (_, y) in sets.items()
        }  # fmt: skip
        verdict = gates.check(changes)
        passed = all(g["passed"] for g in verdict.values())
        # Fine-tuning on a new domain makes a model right more often but overconfident: a
        # temperature fitted on held-out feedback keeps confidence (and "uncertain") meaningful.
        cal = calibrate(probs["candidate", "feedback"], yh, hold_groups, options.seed)
        cal["ece_parent"] = metrics["parent"]["feedback"]["ece"]
        cal["base_ece_parent"] = metrics["parent"]["base"]["ece"]
        cal["base_ece_before"] = metrics["candidate"]["base"]["ece"]
        base_scaled = scale_probabilities(probs["candidate", "base"], "probabilities", cal["temperature"])
        cal["base_ece_after"] = _metrics(base_scaled, yb, labels)["ece"]
        meta = new.meta
        meta.temperature = cal["temperature"]
        meta.card = {**meta.card, "calibration": {**cal, "fitted_on": f"{len(yh)} held-out feedback faces"}}
        annotate(onnx, meta)
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
            calibration=cal,
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
                "feedback_gain_low": changes["feedback"]["low"],
                "temperature": cal["temperature"],
                "feedback_ece": cal["ece_after"],
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
    """The whole report in Markdown: accuracy with intervals, gates with reasons, per-class
    changes, calibration, data and options."""

    def pct(v: float) -> str:
        return f"{v:.2%}"

    titles = {"feedback": "held-out feedback", "base": "base validation"}
    lines = [
        f"# Fine-tuning from feedback: candidate of {o.parent}",
        "",
        f"Verdict: **{'gates passed' if o.passed else 'gates failed: the active model stays'}**",
        "",
        "| set | faces | groups | active model | candidate | change | confidence interval |",
        "|---|---|---|---|---|---|---|",
    ]
    gate_of = {"feedback": "feedback_improves", "base": "base_holds"}
    for name, title in titles.items():
        p, c, g = o.metrics["parent"][name], o.metrics["candidate"][name], o.gates[gate_of[name]]
        lines.append(
            f"| {title} | {p['n']} | {g['groups']} | {pct(p['accuracy'])} | {pct(c['accuracy'])} | "
            f"{g['change']:+.2%} | {g['low']:+.2%} to {g['high']:+.2%} |"
        )
    lines += ["", "| gate | passed | why |", "|---|---|---|"]
    lines += [f"| {k} | {'yes' if g['passed'] else 'no'} | {g['why']} |" for k, g in o.gates.items()]
    lines += ["", "Recall per class (active → candidate):", "", "| class | " + " | ".join(titles.values()) + " |"]
    lines.append("|---|" + "---|" * len(titles))
    classes = list(o.metrics["parent"]["base"]["per_class_recall"])
    for c in classes:
        cells = []
        for name in titles:
            before = o.metrics["parent"][name]["per_class_recall"].get(c)
            after = o.metrics["candidate"][name]["per_class_recall"].get(c)
            cells.append(
                "" if before is None or after is None else f"{pct(before)} → {pct(after)} ({after - before:+.1%})"
            )
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    cal = o.calibration
    if cal:
        lines += [
            "",
            f"Calibration (ECE, 15 bins): held-out feedback {cal['ece_parent']:.3f} with the active model, "
            f"{cal['ece_before']:.3f} with the candidate, {cal['ece_after']:.3f} after temperature "
            f"{cal['temperature']:.2f} (fitted on one half of the groups, measured on the other); "
            f"base validation {cal['base_ece_parent']:.3f} → {cal['base_ece_before']:.3f} → "
            f"{cal['base_ece_after']:.3f}. "
            "The temperature is stored in the candidate's model file.",
        ]
    lines += ["", "Data: " + ", ".join(f"{k} {v}" for k, v in o.counts.items())]
    lines += ["", "Options: " + ", ".join(f"{k}={v}" for k, v in o.options.items()), ""]
    return "\n".join(lines)
