"""Model cards: the measured metrics go into the ONNX metadata and a Markdown file beside it."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from emolens.classify.emotion import EmotionModel
from emolens.classify.modelfile import annotate
from emolens.train.config import TrainConfig

_DEFAULTS = asdict(TrainConfig())

OPTIMIZERS = {"adamw": "AdamW", "sgd": "SGD (momentum)"}
SCHEDULES = {"onecycle": "one-cycle", "cosine": "cosine with warm-up"}


def write_card(onnx_path: str | Path, metrics: dict, fields: dict | None = None, appendix: str = "") -> Path:
    """Store ``metrics`` (from ``evaluate_arrays``) and any other ``fields`` in the model's card and
    write ``<model>.md``, with ``appendix`` (Markdown) after the card's own sections."""
    path = Path(onnx_path)
    model = EmotionModel(path)
    meta = model.meta
    card = dict(meta.card) | (fields or {})
    card["metrics"] = {k: metrics[k] for k in ("accuracy", "macro_f1", "per_class_recall", "n")}
    card["metrics"]["dataset"] = metrics.get("dataset", "validation")
    if metrics.get("dropped_labels"):
        card["metrics"]["dropped_labels"] = metrics["dropped_labels"]
    if metrics.get("ferplus"):
        f = metrics["ferplus"]
        card["metrics"]["ferplus"] = {k: f[k] for k in ("accuracy", "macro_f1", "n", "per_class_recall") if k in f}
        if "per_class_precision" in f:
            card["metrics"]["ferplus"]["per_class_precision"] = f["per_class_precision"]
    if metrics.get("subtle"):
        card["metrics"]["subtle"] = {
            k: metrics["subtle"][k] for k in ("accuracy", "n", "read_neutral", "per_class_recall")
        }
    meta.card = card
    annotate(path, meta)
    md = path.with_suffix(".md")
    text = render_card(card, meta.labels, meta.input.__dict__)
    md.write_text(text.rstrip("\n") + "\n\n" + appendix if appendix else text)
    return md


def remeasure_card(onnx_path: str | Path, metrics: dict) -> Path:
    """Replace a card's measured figures (in the model's metadata and in the *Measured on* section of
    ``<model>.md``) by ``metrics``, leaving the rest of the Markdown (a hand-written reproduction, an
    appendix) as it is. For a shipped model re-measured with new figures."""
    path = Path(onnx_path)
    md = path.with_suffix(".md")
    old = md.read_text() if md.is_file() else ""
    keep = write_card(path, metrics)  # the metadata, and a freshly rendered card
    fresh = keep.read_text()
    start, end = fresh.find("\n## Measured on"), fresh.find("\nReproduce: `emolens train`")
    o_start, o_end = old.find("\n## Measured on"), old.find("\nReproduce")
    if min(start, end, o_start, o_end) >= 0:
        md.write_text(old[:o_start] + fresh[start:end] + old[o_end:])
    return md


def _describe_recipe(recipe: dict) -> str:
    start = f"from {recipe['pretrained']} weights, " if recipe.get("pretrained") else ""
    taught = (
        f"; distilled from {recipe['teacher']} (its share {recipe.get('distill_weight')}, "
        f"temperature {recipe.get('distill_temperature')})"
        if recipe.get("teacher")
        else ""
    )
    return start + (
        f"{recipe.get('epochs')} epochs, batch {recipe.get('batch_size')}, "
        f"{OPTIMIZERS.get(recipe.get('optimizer', 'adamw'), recipe.get('optimizer'))} lr {recipe.get('lr')} "
        f"({SCHEDULES.get(recipe.get('schedule', 'onecycle'), recipe.get('schedule'))}), "
        f"weight decay {recipe.get('weight_decay')}, label smoothing {recipe.get('label_smoothing')}, "
        f"EMA {recipe.get('ema_decay')}, dropout {recipe.get('dropout')}, augmentation {recipe.get('augment')}, "
        f"seed {recipe.get('seed')}; selected on validation {recipe.get('select_on')}{taught}"
    )


def _protocol_line(recipe: dict, training: dict, metrics: dict, selection: str = "") -> str | None:
    """How the weights were chosen, and that the measured figures come from elsewhere; ``selection``
    (``emolens export --selection``) says why this run was shipped over the others."""
    where = training.get("validation")
    if not where:
        return None
    n = f" (n = {training['n_val']})" if training.get("n_val") else ""
    chosen = (
        "the final weights were kept (no selection); validation only monitored"
        if recipe.get("select_on") == "last"
        else f"the epoch was chosen on validation {recipe.get('select_on')}"
    )
    measured = f"; {metrics['dataset']} was scored once, after training" if metrics.get("dataset") else ""
    why = f". {selection.strip().rstrip('.')}" if selection.strip() else ""
    return f"- **Validation protocol**: {where}{n}; {chosen}{measured}{why}"


def _recipe_line(recipe: dict, training: dict, runs: list[dict]) -> str:
    """One run: its recipe. Several (``--init`` from an earlier run's best weights): the first recipe
    in full, then what each later run changed, with every earlier run's outcome."""
    if not runs:
        return f"- **Recipe**: {_describe_recipe(recipe)}"
    parts = []
    for i, run in enumerate([*runs, {"recipe": recipe, **training}]):
        if i == 0:
            text = f"(1) from scratch, {_describe_recipe(run['recipe'])}"
        else:
            changed = [
                f"{k} {v if v != '' else 'none'}"
                for k, v in run["recipe"].items()
                if _changed(runs[i - 1]["recipe"], k, v)
            ]
            text = f"({i + 1}) from the best weights of ({i}), changed: {', '.join(changed) or 'nothing'}"
        if i < len(runs):
            text += f" ({_outcome(run)})"
        parts.append(text)
    return f"- **Recipe**, in {len(parts)} runs: " + "; ".join(parts)


def _changed(before: dict, key: str, value: object) -> bool:
    """A setting the earlier run's config predates counts as changed only when it left the default."""
    if key in before:
        return before[key] != value
    return _DEFAULTS.get(key, object()) != value


def _outcome(run: dict) -> str:
    acc, f1, secs = run.get("val_accuracy"), run.get("val_macro_f1"), run.get("train_seconds")
    scores = "" if acc is None else f", validation accuracy {acc:.4f}, macro-F1 {f1:.4f}"
    return f"best epoch {run.get('best_epoch')} of {run.get('epochs_planned')}{scores}" + (
        "" if secs is None else f", {secs / 60:.0f} min"
    )


def _minutes(runs: list[dict]) -> str:
    secs = [r.get("train_seconds") for r in runs]
    return "" if None in secs else f"{sum(secs) / 60:.0f} min"


def render_card(card: dict, labels: list[str], spec: dict) -> str:
    m = card.get("metrics", {})
    t = card.get("training", {})
    recipe = card.get("recipe", {})
    runs = card.get("lineage") or []  # earlier runs, when this one started from their weights
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
        _recipe_line(recipe, t, runs),
    ]
    protocol = _protocol_line(recipe, t, m, card.get("selection", ""))
    if protocol:
        lines.append(protocol)
    if t:
        secs, total = t.get("train_seconds"), _minutes([*runs, t])
        where = f" of run ({len(runs) + 1})" if runs else ""
        spent = "" if secs is None else f"{secs / 60:.0f} min{f' ({total} for all runs)' if runs and total else ''} of "
        lines.append(
            f"- **Training**: best epoch {t.get('best_epoch')} of {t.get('epochs_planned')}{where}, "
            f"{spent}training on {t.get('hardware')}"
        )
    lines.append(f"- **Software**: {card.get('versions', {})}, exported {card.get('exported')}")
    if m:
        lines += [
            "",
            f"## Measured on {m.get('dataset')} (n = {m.get('n')})",
            "",
            *_measured_lines(m, card.get("offsets")),
        ]
    lines += [
        "",
        "Reproduce: `emolens train` with the recipe above; the checkpoint holds the full training config.",
        "",
    ]
    return "\n".join(lines)


def _measured_lines(m: dict, offsets: dict | None = None) -> list[str]:
    """FER+ majority labels first (what most faces are), then the file's own labels, then the subtle
    expressions (FER2013 label an emotion, FER+ majority neutral); per-class recall on both label sets."""
    f, sub = m.get("ferplus"), m.get("subtle")
    dropped = m.get("dropped_labels") or []
    own = " (FER2013's)" if f else ""
    lines = []
    if f:
        lines.append(
            f"- on the FER+ majority labels of the same faces (n = {f['n']}): accuracy **{f['accuracy']:.4f}**, "
            f"macro-F1 **{f['macro_f1']:.4f}**"
        )
    lines.append(
        f"- on the file's own labels{own}: accuracy **{m['accuracy']:.4f}**, macro-F1 **{m['macro_f1']:.4f}**"
        + (f" ({', '.join(dropped)} left out before the argmax)" if dropped else "")
    )
    if sub:
        neutral = f"; read as neutral on {sub['read_neutral']:.1%}" if sub.get("read_neutral") is not None else ""
        lines.append(
            f"- on the subtle expressions (FER2013 label an emotion, FER+ majority neutral; n = {sub['n']}): "
            f"the FER2013 emotion seen on **{sub['accuracy']:.4f}**{neutral}"
        )
    if offsets and offsets.get("values"):
        shift = ", ".join(f"{k} {v:+g}" for k, v in offsets["values"].items())
        lines.append(
            f"- with the per-class logit offsets in its metadata ({shift}; chosen on the "
            f"{offsets.get('chosen_on', 'held-out faces')} by `benchmarks/offsets.py`)"
        )
    mine = m.get("per_class_recall", {})
    theirs = (f or {}).get("per_class_recall", {})
    precision = (f or {}).get("per_class_precision", {})
    classes = list(dict.fromkeys([*theirs, *mine]))
    if theirs:
        head = (
            "| class | recall, FER+ | precision, FER+ | recall, FER2013 |"
            if precision
            else ("| class | recall, FER+ | recall, FER2013 |")
        )
        lines += ["", head, "|---|---|---|---|" if precision else "|---|---|---|"]
        for c in classes:
            cells = [_num(theirs.get(c)), *([_num(precision.get(c))] if precision else []), _num(mine.get(c))]
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
    else:
        lines += ["", "| class | recall |", "|---|---|", *[f"| {c} | {r:.3f} |" for c, r in mine.items()]]
    return lines


def _num(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"
