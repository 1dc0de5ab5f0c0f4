"""`emolens generate`, `emolens data filter|merge` and `emolens tune`: more and better training data,
and settings found by search."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from emolens.cli.console import build_analyzer, console, fail, require_inputs, workspace
from emolens.cli.outputs import default_place, output_place
from emolens.core.errors import EmoLensError

data = typer.Typer(help="Quality gates for image folders; merge synthetic images in.")


def generate(
    model: Annotated[
        str, typer.Option(help="A local Stable Diffusion folder, or a model id in the local Hugging Face cache.")
    ],
    out: Annotated[
        Path, typer.Option(help="Folder for the images (one subfolder per class) and status.json.")
    ] = default_place("generate"),
    classes: Annotated[str, typer.Option(help="Comma-separated emotions to generate.")] = "disgust,fear,contempt",
    per_class: Annotated[int, typer.Option(min=1, max=1_000_000, help="Images per class.")] = 50,
    seed: Annotated[
        int, typer.Option(min=0, max=2**32 - 1, help="Draws the prompts' diversity and every image's seed.")
    ] = 0,
    steps: Annotated[int, typer.Option(min=1, max=1000, help="Denoising steps.")] = 25,
    guidance: Annotated[float, typer.Option(min=0.0, max=100.0, help="Classifier-free guidance scale.")] = 7.5,
    size: Annotated[int, typer.Option(min=8, max=4096, help="Image side in pixels (a multiple of 8).")] = 512,
    filter_: Annotated[
        bool, typer.Option("--filter/--no-filter", help="Run the quality gates on the images and record what passed.")
    ] = True,
) -> None:
    """Generate faces per emotion with Stable Diffusion.

    Uses a model you already have (nothing is downloaded), then checks the images with the quality
    gates. Image quality needs a real model."""
    if not model:
        fail(
            EmoLensError(
                "generate needs a Stable Diffusion model you already have: --model FOLDER (a pipeline folder "
                "with model_index.json) or --model ORG/NAME (a model already in the local Hugging Face cache); "
                "EmoLens downloads nothing"
            )
        )
    from emolens.synth import generate as run
    from emolens.synth.generate import update_kept

    try:
        output_place(out, "generate")
        report = run(
            model, out, [c.strip() for c in classes.split(",") if c.strip()], per_class, seed, steps, guidance, size
        )
    except EmoLensError as exc:
        fail(exc)
    console.print(
        f"generated {sum(c['generated'] for c in report.counts.values())} images in {out} "
        f"({report.seconds:.0f} s); status in {out / 'status.json'}"
    )
    if filter_:
        from emolens.data.quality import Gates, filter_images, write_filter_report

        gates = Gates()
        checked = filter_images(out, gates, analyzer=_gate_analyzer(gates), progress=True)
        write_filter_report(checked, out / "filter")
        update_kept(out, {c: checked.kept_per_class().get(c, 0) for c in report.counts})
        _print_filter(checked, out / "filter")


@data.command("filter")
def filter_cmd(
    folder: Annotated[Path, typer.Argument(help="Images, in class subfolders (the intended labels) or flat.")],
    report: Annotated[Path, typer.Option(help="Folder for filter.json, kept.txt, report.md/.html.")] = default_place(
        "data", "filter"
    ),
    faces: Annotated[bool, typer.Option("--faces/--no-faces", help="Require exactly one face.")] = True,
    min_face: Annotated[int, typer.Option(min=1, max=100_000, help="Smallest face side in pixels.")] = 48,
    min_sharpness: Annotated[
        float, typer.Option(min=0.0, max=1e9, help="Smallest variance of the Laplacian (seen at 128 px).")
    ] = 30.0,
    brightness: Annotated[str, typer.Option(help="Allowed mean grey level, MIN-MAX.")] = "40-215",
    min_contrast: Annotated[
        float, typer.Option(min=0.0, max=255.0, help="Smallest grey-level standard deviation.")
    ] = 12.0,
    duplicates: Annotated[
        int, typer.Option(min=-1, max=64, help="Perceptual-hash distance of near-duplicates; -1: off.")
    ] = 4,
    against: Annotated[
        Path | None, typer.Option(help="The real training set: images too close to one of its images are dropped.")
    ] = None,
    agreement: Annotated[
        str | None, typer.Option(help="A model that must give the intended label at least --min-agreement.")
    ] = None,
    min_agreement: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Probability of the intended label that --agreement needs.")
    ] = 0.5,
) -> None:
    """Say per image whether it is kept, and why not: one face of a minimum size, sharpness, exposure,
    near-duplicates (within the folder and against --against), and the model's agreement."""
    from emolens.data import load_dataset
    from emolens.data.quality import Gates, filter_images, reference_hashes_of, write_filter_report

    try:
        low, _, high = brightness.partition("-")
        gates = Gates(
            faces=faces,
            min_face_size=min_face,
            min_sharpness=min_sharpness,
            min_brightness=float(low),
            max_brightness=float(high),
            min_contrast=min_contrast,
            duplicates=None if duplicates < 0 else duplicates,
            agreement=agreement,
            min_agreement=min_agreement,
        )
    except ValueError:
        fail(EmoLensError(f"--brightness {brightness!r}: give MIN-MAX, e.g. 40-215"))
    try:
        output_place(report, "data", "filter")
        reference = reference_hashes_of(load_dataset(against)) if against else None
        checked = filter_images(folder, gates, reference, analyzer=_gate_analyzer(gates), progress=True)
        write_filter_report(checked, report)
    except EmoLensError as exc:
        fail(exc)
    _print_filter(checked, report)


def _print_filter(checked, report: Path) -> None:
    table = Table("gate", "images dropped", title=f"{len(checked.kept)} of {len(checked.checks)} images kept")
    for reason, n in checked.reason_counts().items():
        table.add_row(reason, str(n))
    console.print(table)
    console.print(f"kept list: {report / 'kept.txt'}; report: {report / 'report.html'}")


@data.command("merge")
def merge_cmd(
    real: Annotated[Path, typer.Argument(help="Real training images in class subfolders.")],
    synthetic: Annotated[Path, typer.Argument(help="Synthetic images in class subfolders.")],
    out: Annotated[Path, typer.Option(help="Folder for train.csv, val.csv and manifest.csv.")] = default_place(
        "data", "merge"
    ),
    kept: Annotated[
        Path | None, typer.Option(help="Only the synthetic images listed here (a filter's kept.txt).")
    ] = None,
    max_class_share: Annotated[
        float, typer.Option(min=0.0, max=0.99, help="Most a class's training images may be synthetic.")
    ] = 0.5,
    max_total_share: Annotated[
        float, typer.Option(min=0.0, max=0.99, help="Most all training images may be synthetic.")
    ] = 0.3,
    val_fraction: Annotated[
        float, typer.Option(min=0.0, max=0.9, help="Share of the real images held out for validation.")
    ] = 0.1,
    seed: Annotated[
        int, typer.Option(min=0, max=2**32 - 1, help="Seed of the split and of which synthetic images are taken.")
    ] = 0,
) -> None:
    """Merge synthetic images into a real training set: validation holds only real images, and the
    synthetic share is capped per class and overall. Then: emolens train OUT/train.csv --val OUT/val.csv"""
    from emolens.data.quality import merge

    try:
        output_place(out, "data", "merge")
        merged = merge(real, synthetic, out, kept, max_class_share, max_total_share, val_fraction, seed)
    except EmoLensError as exc:
        fail(exc)
    table = Table("class", "real train", "real val", "synthetic (offered)")
    for label, c in merged.counts.items():
        table.add_row(label, str(c["real_train"]), str(c["real_val"]), f"{c['synthetic']} ({c['synthetic_offered']})")
    console.print(table)
    console.print(f"train: emolens train {merged.train_csv} --val {merged.val_csv}")


def tune(
    data_: Annotated[Path, typer.Argument(metavar="DATA", help="Training data: class folders, CSV or .npz.")],
    space: Annotated[Path, typer.Option(help="YAML search space (see the docs).")],
    trials: Annotated[
        int, typer.Option(min=1, max=100_000, help="Trials the study should hold; running again resumes up to this.")
    ] = 20,
    val: Annotated[Path | None, typer.Option(help="Validation data; default: a stratified share of DATA.")] = None,
    config: Annotated[Path | None, typer.Option(help="Base training YAML the search changes.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Fixed override, key=value (repeatable).")] = None,
    name: Annotated[str, typer.Option(help="Study name: its folder is $EMOLENS_HOME/tune/NAME.")] = "emolens",
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1, help="Seed of the sampler and the split.")] = 0,
) -> None:
    """Search training settings with Optuna.

    TPE sampling, median pruning on validation macro-F1. The study is kept in SQLite, so a stopped
    search resumes; the best settings are written as a training YAML."""
    from emolens.core.errors import require

    require_inputs(DATA=data_, space=space, val=val, config=config)
    require("torch", "train")
    from emolens.train.config import load_config
    from emolens.train.prepare import load_train_val
    from emolens.train.tune import load_space
    from emolens.train.tune import tune as run

    folder = workspace().home / "tune" / name
    try:
        search = load_space(space)
        cfg = load_config(config, set_)
        train_c, val_c = load_train_val(data_, val, None, cfg.size, cfg.channels, seed=seed, progress=True)
        report = run(train_c, val_c, search, trials, folder, name, config, set_, seed)
    except EmoLensError as exc:
        fail(exc)
    table = Table("trials", "complete", "pruned", "best macro-F1", title=f"study {name!r} in {folder}")
    best = "n/a" if report.best_value is None else f"{report.best_value:.4f}"
    table.add_row(str(report.trials), str(report.complete), str(report.pruned), best)
    console.print(table)
    if report.best_config:
        console.print(f"best settings: {escape(json.dumps(report.best_params))}")
        console.print(f"train with them: emolens train {data_} --config {report.best_config}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``emolens`` app."""
    app.command()(generate)
    app.add_typer(data, name="data")
    app.command()(tune)


def _gate_analyzer(gates):
    """The analyzer the face and agreement gates use: the agreeing model, faces from 20 px."""
    if not (gates.faces or gates.agreement):
        return None
    return build_analyzer(gates.agreement or "fast", min_face_size=20)
