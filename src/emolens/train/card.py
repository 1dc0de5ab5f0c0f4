"""Model cards: the measured metrics go into the ONNX metadata and a Markdown file beside it."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from emolens.classify.emotion import EmotionModel
from emolens.classify.modelfile import annotate

OPTIMIZERS = {"adamw": "AdamW", "sgd": "SGD (momentum)"}
SCHEDULES = {"onecycle": "one-cycle", "cosine": "cosine with warm-up"}


def training_summary(checkpoint: str | Path) -> dict:
    """Best epoch, training seconds up to it (from the logged throughput) and the machine."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    history = state.get("history", [])
    n_train = state.get("n_train")
    seconds = None
    if history and n_train:
        seconds = sum(n_train / row["train_images_per_s"] for row in history)
    return {
        "epochs_planned": state["config"]["epochs"],
        "best_epoch": int(state["epoch"]) + 1,
        "train_seconds": None if seconds is None else round(seconds),
        "hardware": state.get("hardware") or f"{platform.machine()} CPU",
    }


def write_card(onnx_path: str | Path, metrics: dict, checkpoint: str | Path | None = None) -> Path:
    """Store ``metrics`` (from ``evaluate_arrays``) in the model's card and write ``<model>.md``."""
    path = Path(onnx_path)
    model = EmotionModel(path)
    meta = model.meta
    card = dict(meta.card)
    card["metrics"] = {k: metrics[k] for k in ("accuracy", "macro_f1", "per_class_recall", "n")}
    card["metrics"]["dataset"] = metrics.get("dataset", "validation")
    if checkpoint:
        card["training"] = training_summary(checkpoint)
    meta.card = card
    annotate(path, meta)
    md = path.with_suffix(".md")
    md.write_text(render_card(card, meta.labels, meta.input.__dict__))
    return md


def render_card(card: dict, labels: list[str], spec: dict) -> str:
    m = card.get("metrics", {})
    t = card.get("training", {})
    recipe = card.get("recipe", {})
    lines = [
        f"# Model card: `{card.get('name', '?')}`",
        "",
        f"- **Architecture**: {card.get('arch')} — {card.get('params', 0):,} parameters, "
        f"{card.get('mflops')} MFLOPs (multiply-accumulates) per face",
        f"- **Input**: {spec['size']}x{spec['size']}, {spec['channels']} channel(s), "
        f"x = (pixel / {spec['range']:g} - {spec['mean']}) / {spec['std']}, {spec['layout']}; faces aligned by "
        "EmoLens to its FER2013 5-point template",
        f"- **Labels** (output order): {', '.join(labels)}",
        f"- **Data**: {card.get('data') or 'not stated'}",
        f"- **Recipe**: {recipe.get('epochs')} epochs, batch {recipe.get('batch_size')}, "
        f"{OPTIMIZERS.get(recipe.get('optimizer', 'adamw'), recipe.get('optimizer'))} lr {recipe.get('lr')} "
        f"({SCHEDULES.get(recipe.get('schedule', 'onecycle'), recipe.get('schedule'))}), "
        f"weight decay {recipe.get('weight_decay')}, label smoothing {recipe.get('label_smoothing')}, "
        f"EMA {recipe.get('ema_decay')}, dropout {recipe.get('dropout')}, augmentation {recipe.get('augment')}, "
        f"seed {recipe.get('seed')}; selected on validation {recipe.get('select_on')}",
    ]
    if t:
        secs = t.get("train_seconds")
        lines.append(
            f"- **Training**: best epoch {t.get('best_epoch')} of {t.get('epochs_planned')}, "
            f"{'' if secs is None else f'{secs / 60:.0f} min of training on '}{t.get('hardware')}"
        )
    lines.append(f"- **Software**: {card.get('versions', {})}, exported {card.get('exported')}")
    if m:
        lines += [
            "",
            f"## Measured on {m.get('dataset')} (n = {m.get('n')})",
            "",
            f"- accuracy **{m['accuracy']:.4f}**, macro-F1 **{m['macro_f1']:.4f}**",
            "",
            "| class | recall |",
            "|---|---|",
            *[f"| {c} | {r:.3f} |" for c, r in m.get("per_class_recall", {}).items()],
        ]
    lines += [
        "",
        "Reproduce: `emolens train` with the recipe above; the checkpoint holds the full training config.",
        "",
    ]
    return "\n".join(lines)
