"""Learning from corrections: fine-tune a model on feedback, and promote it only if it is better.

The base model is named by the caller, else it is the model most corrections were made against
(``choose_base``). The candidate trains on the training part of the feedback, mixed with a replay
sample of the base's training data so it does not forget, with augmentation and a low learning
rate. It is judged beside its base on two sets it never trained on: a fixed base validation set
and the held-out part of the feedback, held out by group (``emolens.feedback.split``), its gain
judged by a confidence interval from a bootstrap over those groups; too few groups are refused
before training. One temperature fitted on both sets goes into the candidate's model file. The
candidate becomes active only when every gate passes (and the caller agrees); otherwise it stays
in the registry, unpromoted, with its report.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from emolens.core.errors import ModelError, RefusedError, require
from emolens.evaluate.stats import cross_fitted_ece, fit_temperature
from emolens.evaluate.stats import paired_change as paired_change


@dataclass
class Gates:
    """When a candidate may replace the active model."""

    # The lower end of the held-out feedback gain's confidence interval must be above this.
    min_feedback_gain: float = 0.0
    max_base_drop: float = 0.01  # base validation accuracy may fall by at most this (1 point)
    # the base set's calibration error (ECE, with the candidate's temperature) may rise by at most this
    max_base_ece_rise: float = 0.02
    confidence: float = 0.95  # of the intervals
    min_holdout_groups: int = 10  # fewer independent held-out groups cannot support any claim
    bootstrap: int = 2000  # resamples

    def too_few_groups(self, groups: int) -> str | None:
        """Why ``groups`` independent held-out groups cannot judge a gain, or None when they can."""
        if groups >= self.min_holdout_groups:
            return None
        return (
            f"the held-out feedback comes from {groups} independent group(s); at least "
            f"{self.min_holdout_groups} are needed to judge a gain: collect feedback on more people or photos"
        )

    def check(self, changes: dict[str, dict], calibration: dict | None = None) -> dict[str, dict]:
        """The promotion decision, all of it: ``changes`` holds ``paired_change`` for "feedback"
        and "base"; ``calibration`` (``base_ece_parent`` and ``base_ece_after``) adds the base
        set's calibration gate. Returns each gate with ``passed``, the change, its interval and why."""
        fb, base = changes["feedback"], changes["base"]
        interval = f"{fb['change']:+.2%} ({self.confidence:.0%} CI {fb['low']:+.2%} to {fb['high']:+.2%})"
        if (few := self.too_few_groups(fb["groups"])) is not None:
            ok, why = False, few
        elif fb["low"] <= self.min_feedback_gain:
            ok, why = (
                False,
                f"gain {interval} over {fb['groups']} held-out groups: the interval reaches "
                f"{self.min_feedback_gain:+.2%}, so this much held-out feedback cannot show a gain",
            )
        else:
            ok, why = True, f"gain {interval} over {fb['groups']} held-out groups"
        drop = -base["change"]
        held = drop <= self.max_base_drop + 1e-9
        verdict = {
            "feedback_improves": {**fb, "passed": ok, "why": why},
            "base_holds": {
                **base,
                "passed": held,
                "why": f"change {base['change']:+.2%} ({self.confidence:.0%} CI {base['low']:+.2%} to "
                f"{base['high']:+.2%}); allowed drop {self.max_base_drop:.2%}",
            },
        }
        if calibration is not None:
            before, after = calibration["base_ece_parent"], calibration["base_ece_after"]
            verdict["base_calibration_holds"] = {
                "change": after - before,
                "passed": after - before <= self.max_base_ece_rise + 1e-9,
                "why": f"base ECE {before:.3f} → {after:.3f}; allowed rise {self.max_base_ece_rise:.3f}",
            }
        return verdict


def calibrate(
    probs: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    seed: int = 0,
    base: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """A temperature for held-out feedback ``probs`` (with ``base``: fitted on both domains, so
    that neither gets worse: ``fit_temperature``). ECE after is cross-fitted on the feedback (the
    temperature fitted with one half of its groups is measured on the other half, both ways)."""
    from emolens.evaluate.calibrate import expected_calibration_error as ece

    also = [base] if base is not None else []
    t = fit_temperature(probs, y, *also)
    after = cross_fitted_ece(probs, y, groups, lambda p, yy: fit_temperature(p, yy, *also), seed)
    return {"temperature": round(t, 4), "ece_before": ece(probs, y), "ece_after": after}


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
class FinetunePlan:
    """What a fine-tuning run will do, known before it trains: shown first, then it starts."""

    base: str  # the registry version fine-tuned and judged against
    base_named: str  # the model as the corrections name it (accurate, v3...)
    why_base: str
    counts: dict[str, int]  # the split fine-tuning uses: feedback_train, feedback_holdout, holdout_groups...
    estimate_s: float  # expected time, from timed training steps of this model on this machine

    def describe(self) -> str:
        c = self.counts
        minutes = self.estimate_s / 60
        return (
            f"base model: {self.base_named}" + (f" ({self.base})" if self.base != self.base_named else "")
            + f", {self.why_base}\n"
            f"feedback: {c['feedback_train']} face(s) to train on, {c['feedback_holdout']} held out in "
            f"{c['holdout_groups']} group(s) to judge on; {c['replay']} replayed, {c['base_val']} base faces\n"
            f"expected time: about {minutes:.1f} min (an estimate from timed training steps of this model "
            "on this machine; load changes it)"
        )  # fmt: skip


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
    timing: dict[str, float] = field(default_factory=dict)  # estimated and taken seconds

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


def choose_base(by_model: dict[str, int], registry, base: str | None = None) -> tuple[Any, str, str]:
    """The registry version to fine-tune, the name the corrections know it by, and why.

    ``base`` when given (``v3``, or a model by name such as ``accurate``, registered first); else
    the model most corrections (``by_model``: corrections per model that answered) were made
    against, where those made against the active version, a version it descends from or the model
    it was registered from, or with no model known, count for the active version, as does a tie."""
    from emolens.models.registry import BASE_MODEL, is_version_name

    active = registry.active()
    active_named = active.name if active else BASE_MODEL
    if base:
        why = "as asked"
    else:
        family, v = {"active", BASE_MODEL} if active is None else {"active"}, active
        while v is not None:  # the active version, its ancestors and the named models they came from
            family |= {v.name, v.source.removeprefix("shipped:")}
            v = registry.get(v.parent) if v.parent else None
        counts: dict[str, int] = {}
        for model, n in by_model.items():
            key = active_named if not model or model in family else model
            counts[key] = counts.get(key, 0) + n
        base = max(counts, key=lambda m: (counts[m], m == active_named)) if counts else active_named
        total, unknown = sum(counts.values()), by_model.get("", 0)
        why = (
            f"the active model: {counts.get(base, 0) - unknown} of {total} correction(s) were made against it "
            "or a model it descends from" + (f", {unknown} with no model recorded" if unknown else "")
            if base == active_named
            else f"the model {counts[base]} of {total} correction(s) were made against (the active one: {active_named})"
        ) + "; choose another with --base"
    if any(ch in base for ch in "+,/\\") or base.endswith(".onnx"):
        raise RefusedError(
            f"fine-tuning starts from one named model or registry version, not {base!r}: choose it with --base"
        )
    if base == "active" or (active is None and base == BASE_MODEL) or (active and base == active.name):
        version = registry.ensure_base()
    elif is_version_name(base):
        version = registry.get(base)
    else:
        version = registry.register_named(base)
    return version, base, why


def finetune_from_feedback(
    feedback,
    registry,
    *,
    replay: str | Path | None,
    base_val: str | Path | None,
    min_feedback: int,
    base: str | None = None,
    options: FinetuneOptions | None = None,
    gates: Gates | None = None,
    promote: bool | Callable[[FinetuneOutcome], bool] = False,
    progress: bool = True,
    on_plan: Callable[[FinetunePlan], None] | None = None,
) -> FinetuneOutcome:
    """Fine-tune ``base`` (default: ``choose_base``) on the feedback of ``feedback`` (a
    ``FeedbackService``); register the candidate in ``registry``; promote it when the gates pass
    and ``promote`` is True (or returns True when called with the outcome). Every refusal that
    can be known before training (too few corrections or held-out groups, missing data, a base
    without weights) comes first; ``on_plan`` then sees the plan, with its time estimate, before
    training starts. ``replay``, ``base_val`` and ``min_feedback`` are the caller's settings."""
    from emolens.data.datasets import load_dataset

    require("torch", "train")
    options, gates = options or FinetuneOptions(), gates or Gates()
    stats = feedback.store.stats()
    corrections = stats["corrections"]
    if corrections < min_feedback:
        raise RefusedError(
            f"only {corrections} correction(s) stored; fine-tuning needs at least {min_feedback} "
            "(collect more, or lower the minimum with --min / EMOLENS_MIN_FEEDBACK)"
        )
    missing = [f"{flag} ({env})" for flag, env, v in (("--replay", "EMOLENS_REPLAY_DATA", replay),
               ("--base-val", "EMOLENS_BASE_VAL_DATA", base_val)) if not v]  # fmt: skip
    if missing:
        raise RefusedError(
            "fine-tuning needs a replay sample of the base model's training data and a fixed base "
            f"validation set (e.g. FER2013 train.npz and val.npz): set {' and '.join(missing)}"
        )

    parent, base_named, why_base = choose_base(stats["by_model"], registry, base)
    if parent.checkpoint is None:
        raise ModelError(f"model {base_named} has no PyTorch weights (model.pt) to fine-tune from")
    import torch

    state = torch.load(parent.checkpoint, map_location="cpu", weights_only=False)
    labels, spec = list(state["labels"]), state["input"]

    split = feedback.split(labels)  # the one split: `feedback stats` shows the same parts
    hold_groups = np.array([split.group[r.uid] for r in split.holdout])
    if not split.holdout or not split.train:
        raise RefusedError(
            f"the feedback has {len(split.train)} training and {len(split.holdout)} held-out record(s) with labels "
            f"the model knows ({', '.join(labels)}); both parts are needed: collect more feedback"
        )
    if (few := gates.too_few_groups(split.groups("holdout"))) is not None:
        raise RefusedError(f"{few} (refused before fine-tuning {base_named}, before training)")
    fb_train = feedback.to_dataset(split.train, labels, "train")
    fb_hold = feedback.to_dataset(split.holdout, labels, "holdout")
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
    from emolens.train.timing import estimate_seconds

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
    trained_on = sorted(zip((p.name for p in fb_train.paths), fb_train.labels.tolist(), strict=True))
    data_hash = _hash({"feedback": trained_on, "replay": str(replay), "base_val": str(base_val), "o": asdict(options)})
    counts = {
        "corrections": corrections,
        "feedback_train": len(xf),
        "feedback_holdout": len(xh),
        "holdout_groups": split.groups("holdout"),
        "train_groups": split.groups("train"),
        "regrouped": split.moved,
        "replay": len(xr),
        "feedback_repeats": repeats,
        "base_val": len(xb),
    }
    plan = FinetunePlan(
        base=parent.name,
        base_named=base_named,
        why_base=why_base,
        counts=counts,
        estimate_s=estimate_seconds(cfg, x_train, len(xb) + len(xh), min(len(xb), 1000)),
    )
    if on_plan is not None:
        on_plan(plan)
    started = time.perf_counter()
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
        # Fine-tuning on a new domain makes a model right more often but overconfident there; one
        # temperature fitted on the held-out feedback and the base set together, never making
        # either's likelihood worse, keeps confidence (and "uncertain") meaningful in both.
        cal = calibrate(
            probs["candidate", "feedback"], yh, hold_groups, options.seed, base=(probs["candidate", "base"], yb)
        )
        cal["ece_parent"] = metrics["parent"]["feedback"]["ece"]
        cal["base_ece_parent"] = metrics["parent"]["base"]["ece"]
        cal["base_ece_before"] = metrics["candidate"]["base"]["ece"]
        base_scaled = scale_probabilities(probs["candidate", "base"], "probabilities", cal["temperature"])
        cal["base_ece_after"] = _metrics(base_scaled, yb, labels)["ece"]
        verdict = gates.check(changes, cal)
        passed = all(g["passed"] for g in verdict.values())
        meta = new.meta
        meta.temperature = cal["temperature"]
        fitted_on = f"{len(yh)} held-out feedback faces and {len(yb)} base validation faces"
        meta.card = {**meta.card, "calibration": {**cal, "fitted_on": fitted_on}}
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
            timing={"estimated_s": round(plan.estimate_s, 1), "taken_s": round(time.perf_counter() - started, 1)},
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
                "base_ece": cal["base_ece_after"],
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
        f"| set | faces | groups | {o.parent} (base) | candidate | change | confidence interval |",
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
    lines += ["", "Recall per class (base → candidate):", "", "| class | " + " | ".join(titles.values()) + " |"]
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
            f"Calibration (ECE, 15 bins): held-out feedback {cal['ece_parent']:.3f} with the base model, "
            f"{cal['ece_before']:.3f} with the candidate, {cal['ece_after']:.3f} after temperature "
            f"{cal['temperature']:.2f} (fitted on the held-out feedback and the base set together, neither's "
            "likelihood made worse; on the feedback, measured on the half of the groups it was not fitted on); "
            f"base validation {cal['base_ece_parent']:.3f} → {cal['base_ece_before']:.3f} → "
            f"{cal['base_ece_after']:.3f}. The temperature is stored in the candidate's model file.",
        ]
    if o.timing:
        lines += ["", f"Time: {o.timing['taken_s'] / 60:.1f} min (estimated {o.timing['estimated_s'] / 60:.1f} min)."]
    lines += ["", "Data: " + ", ".join(f"{k} {v}" for k, v in o.counts.items())]
    lines += ["", "Options: " + ", ".join(f"{k}={v}" for k, v in o.options.items()), ""]
    return "\n".join(lines)
