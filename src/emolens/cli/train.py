"""`emolens train` (and `--cv`, `--init` fine-tuning) and `emolens eda`: from a dataset to a model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from emolens.cli.console import console, err, fail, require_inputs
from emolens.cli.outputs import default_place, output_place
from emolens.core.errors import EmoLensError


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``emolens`` app."""
    app.command()(train)
    app.command()(eda)


def train(
    data: Annotated[Path, typer.Argument(help="Training data: class folders, FER2013 CSV, labels CSV or .npz.")],
    val: Annotated[Path | None, typer.Option(help="Validation data; default: a stratified share of DATA.")] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML training config (see emolens.train.config.TrainConfig).")
    ] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a setting: key=value (repeatable).")] = None,
    out: Annotated[Path, typer.Option(help="Run folder for checkpoints and logs.")] = default_place("train"),
    val_fraction: Annotated[
        float, typer.Option(min=0.0, max=0.9, help="Share of DATA held out when --val is not given.")
    ] = 0.1,
    arch: Annotated[str | None, typer.Option(help="Shortcut for --set arch=NAME.")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, max=100_000, help="Shortcut for --set epochs=N.")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue from a last.pt checkpoint.")] = None,
    stop_after: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=100_000,
            help="End after N epochs of this run; the schedule still spans all epochs (--resume goes on).",
        ),
    ] = None,
    init: Annotated[
        Path | None,
        typer.Option(help="Fine-tune: start from a trained checkpoint (best.pt, or the shipped fast.pt)."),
    ] = None,
    stages: Annotated[
        str | None, typer.Option(help='Fine-tuning stages, e.g. "head:2,all:8" (the epochs follow from them).')
    ] = None,
    cv: Annotated[
        int | None,
        typer.Option(
            min=2,
            max=100,
            help="K-fold cross-validation on DATA (group-aware with a group column): one model per fold.",
        ),
    ] = None,
    teacher: Annotated[
        str | None,
        typer.Option(
            help="Distil: a model (name, .onnx or ensemble a+b) whose probabilities on DATA join the labels "
            "(--set distill_weight=0.5, distill_temperature=2)."
        ),
    ] = None,
    votes: Annotated[
        Path | None,
        typer.Option(
            help="FER+ votes of DATA (row for row): train 8 classes on them (--set label_mode=distribution|"
            "probability|majority); --val then uses its own votes file (val.npz → val_ferplus.npz). "
            "With --set vote_blend=W, keep DATA's own labels and blend W of the votes into each target."
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            min=1, max=10**9, help="Train on a stratified random N faces of DATA (seed from the config): quick trials."
        ),
    ] = None,
) -> None:
    """Train an emotion model, or fine-tune one with --init.

    The defaults are the recipe of the shipped `fast` model. With --stages the head learns alone
    first, then all layers (--set layer_decay=0.7 gives the layers further from the head smaller
    learning rates). Without --val, a stratified share of DATA is held out for validation."""
    from emolens.core.errors import require

    require_inputs(DATA=data, val=val, config=config, resume=resume, init=init, votes=votes)
    require("torch", "train")
    from emolens.data import load_dataset, split
    from emolens.data.datasets import to_crops
    from emolens.train.config import dump_config, load_config
    from emolens.train.loop import fit, lineage_of

    shortcuts = (("arch", arch), ("epochs", epochs), ("stages", stages), ("teacher", teacher))
    overrides = list(set_ or []) + [f"{k}={v}" for k, v in shortcuts if v is not None]
    try:
        output_place(out, "train")
    except EmoLensError as exc:
        fail(exc)
    if cv is not None:
        return _cross_validate(data, config, overrides, cv, out)
    start = None
    try:
        blend = load_config(config, overrides).vote_blend if votes is not None else 0.0
        if votes is not None:
            from emolens.data.ferplus import blend_votes, load_ferplus

            train_ds = blend_votes(load_dataset(data), votes, blend) if blend else load_ferplus(data, votes)
        else:
            train_ds = load_dataset(data)
        base: dict = {"labels": train_ds.classes}
        if init is not None:
            if resume is not None:
                raise EmoLensError("--init starts a new run and --resume continues one: give one of them")
            start = _load_init_checkpoint(init)
            same = sorted(start["labels"]) == sorted(train_ds.classes)  # keep the checkpoint's head order
            base = {
                "labels": list(start["labels"]) if same else train_ds.classes,
                "arch": start["config"]["arch"],
                "size": start["input"]["size"],
                "channels": start["input"]["channels"],
            }
        cfg = load_config(config, overrides, base=base)
        if limit is not None and limit < len(train_ds):
            if limit < 1:
                raise EmoLensError(f"--limit is a number of faces (at least 1), not {limit}")
            # the stratified split's held-out share is the subset: every class keeps its proportion
            train_ds = split(train_ds, val=limit / len(train_ds), seed=cfg.seed)["val"]
        if val is not None:
            val_ds = load_ferplus(val) if votes is not None and not blend else load_dataset(val)
            validation = f"the file {val.name}"
        else:
            validation = f"a stratified {val_fraction:.0%} of {data.name} held out (seed {cfg.seed})"
            parts = split(train_ds, val=val_fraction, seed=cfg.seed)
            train_ds, val_ds = parts["train"], parts["val"]
        if train_ds.classes != cfg.labels:
            train_ds = train_ds.remap(cfg.labels)
        if val_ds.classes != cfg.labels:
            val_ds = val_ds.remap(cfg.labels)
        (xtr, ytr, skip_tr), (xva, yva, skip_va) = (
            to_crops(d, cfg.size, cfg.channels, progress=True) for d in (train_ds, val_ds)
        )
        if train_ds.soft is not None and not skip_tr:  # crops keep every row: the votes stay aligned
            ytr = train_ds.soft
        if cfg.teacher:
            from emolens.train.distill import distill_targets

            console.print(f"distilling from {cfg.teacher}: its probabilities on {len(xtr)} training faces")
            ytr = distill_targets(cfg.teacher, xtr, ytr, cfg.labels, cfg.distill_weight, cfg.distill_temperature)
    except EmoLensError as exc:
        fail(exc)
    for line in skip_tr + skip_va:
        err.print(f"[yellow]skipped[/yellow] {escape(line)}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(dump_config(cfg))
    console.print(f"training {cfg.arch} on {len(ytr)} faces, validating on {len(yva)}; config in {out / 'config.yaml'}")
    init_kw = (
        {} if start is None else {"init": start["model"], "init_labels": start["labels"], "lineage": lineage_of(start)}
    )
    if start is not None:
        console.print(f"starting from {init}" + (f", stages {cfg.stages}" if cfg.stages else ""))
    try:
        result = fit(
            (xtr, ytr), (xva, yva), cfg, out, resume=resume, stop_after=stop_after, validation=validation, **init_kw
        )
    except EmoLensError as exc:
        fail(exc)
    if cfg.select_on == "last":  # no selection: result["best"] is the last epoch's index, not a score
        row = result["history"][-1] if result["history"] else {}
        console.print(
            f"kept the final weights (epoch {int(result['best']) + 1}, validation accuracy "
            f"{row.get('val_accuracy', float('nan')):.4f}) → {result['checkpoint']}"
        )
    else:
        console.print(f"best validation {cfg.select_on}: {result['best']:.4f} → {result['checkpoint']}")


def _cross_validate(data: Path, config: Path | None, overrides: list[str], k: int, out: Path) -> None:
    from emolens.data import load_dataset
    from emolens.train.config import dump_config, load_config
    from emolens.train.cv import cross_validate
    from emolens.train.prepare import crops_of

    try:
        dataset = load_dataset(data)
        cfg = load_config(config, overrides, base={"labels": dataset.classes})
        crops = crops_of(dataset, cfg.labels, cfg.size, cfg.channels, progress=True)
        for line in crops.skipped:
            err.print(f"[yellow]skipped[/yellow] {escape(line)}")
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(dump_config(cfg))
        report = cross_validate(crops, cfg, k, out)
    except EmoLensError as exc:
        fail(exc)
    table = Table(
        "metric", "mean", "std", *[f"fold {f['fold']}" for f in report.folds], title=f"{k}-fold cross-validation"
    )
    for metric, s in report.summary.items():
        table.add_row(metric, f"{s['mean']:.4f}", f"{s['std']:.4f}", *[f"{f[metric]:.4f}" for f in report.folds])
    console.print(table)
    folds = "+".join(f["onnx"] for f in report.folds)
    console.print(f"fold models in {out}; evaluate them as an ensemble: emolens evaluate {folds} DATA")


def _load_init_checkpoint(path: Path) -> dict:
    """A training checkpoint's weights, labels, input and config, or an EmoLensError saying why not."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a missing, truncated or foreign file: torch raises many types
        raise EmoLensError(f"cannot read checkpoint {path}: {exc}") from None
    if not isinstance(state, dict) or not {"model", "labels", "input", "config"} <= set(state):
        raise EmoLensError(f"{path} is not an EmoLens training checkpoint (best.pt / last.pt)")
    return state


def eda(
    data: Annotated[Path, typer.Argument(help="A dataset: class folders, FER2013 CSV, labels CSV or .npz.")],
    out: Annotated[Path, typer.Option(help="Folder for report.md, report.html, stats.json and plots.")] = default_place(
        "eda"
    ),
) -> None:
    """Explore a dataset: balance, quality, duplicates.

    Counts per class, sizes and modes, blur, brightness and contrast, duplicates and corrupt files."""
    from emolens.data import load_dataset
    from emolens.data.eda import explore, write_report

    try:
        output_place(out, "eda")
        stats = explore(load_dataset(data), progress=True)
        paths = write_report(stats, out)
    except EmoLensError as exc:
        fail(exc)
    table = Table("class", "images")
    for c, k in stats["counts"].items():
        table.add_row(c, str(k))
    console.print(table)
    d = stats["duplicates"]
    ratio = stats["imbalance_ratio"]
    console.print(
        f"{stats['n']} images; imbalance ratio {'n/a' if ratio is None else f'{ratio:.1f}'}; "
        f"{d['exact_images']} exact and {d['near_pairs']} near duplicates "
        f"({d['near_pairs_with_different_labels']} with different labels); {len(stats['corrupt'])} corrupt"
    )
    console.print(f"report: {paths['markdown']} and {paths['html']}")
