"""`emolens analyze`: every face in images, folders or globs, and how each one feels; `emolens detectors`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from emolens.cli.console import DetectionThreshold, MaxFaces, MinFaceSize, build_analyzer, console, err, fail
from emolens.cli.outputs import csv_option, emit_csv, emit_json, json_option, machine_to_stdout, output_place
from emolens.core.errors import EmoLensError

EXAMPLE = Path(__file__).parents[1] / "assets" / "examples" / "astronaut.jpg"


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``emolens`` app."""
    app.command()(analyze)
    app.command()(detectors)


def annotated_targets(files: list[Path], out: Path) -> list[Path]:
    """Where ``analyze --save`` writes each file's annotated copy: the input tree mirrored under
    ``out`` (``coll/a/x.jpg`` and ``coll/b/x.jpg`` become ``out/a/x_emolens.jpg`` and
    ``out/b/x_emolens.jpg``), every target distinct."""
    import os

    parents = [str(p.resolve().parent) for p in files]
    try:
        base = Path(os.path.commonpath(parents)) if parents else Path()
    except ValueError:  # different drives: no common folder to mirror
        base = None
    targets, used = [], set()
    for p, parent in zip(files, parents, strict=True):
        folder = out / Path(parent).relative_to(base) if base is not None else out
        target = folder / f"{p.stem}_emolens.jpg"
        if target in used:  # x.jpg and x.png in one folder
            target = folder / f"{p.stem}_{p.suffix.lstrip('.').lower()}_emolens.jpg"
        n = 2
        while target in used:
            target, n = folder / f"{p.stem}_emolens-{n}.jpg", n + 1
        used.add(target)
        targets.append(target)
    return targets


def analyze(
    paths: Annotated[
        list[str] | None, typer.Argument(help="Images, folders or globs. None: the built-in example photo.")
    ] = None,
    save: Annotated[
        Path | None,
        typer.Option(
            help="Folder for annotated images (input folders are mirrored inside it). "
            "Without images to analyze: emolens-output/analyze."
        ),
    ] = None,
    json_out: Annotated[Path | None, json_option("the results")] = None,
    csv_out: Annotated[Path | None, csv_option("one row per face")] = None,
    detector: Annotated[
        str | None,
        typer.Option(
            help="Face detector: retinaface, dlib-hog, dlib-cnn, haar, or none (the whole image is the face)."
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Emotion model: a name (see `emolens models`), an .onnx path, or an ensemble: fast+accurate."
        ),
    ] = None,
    tta: Annotated[
        bool | None, typer.Option("--tta/--no-tta", help="Also average the model(s) over the mirrored face.")
    ] = None,
    min_face_size: MinFaceSize = None,
    threshold: DetectionThreshold = None,
    max_faces: MaxFaces = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the summary.")] = False,
) -> None:
    """Find every face in the images and tell how each one feels."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from emolens.image.io import iter_image_paths

    if not paths:  # the demo: the built-in example photo, annotated copy written beside the user
        paths = [str(EXAMPLE)]
        save = save or output_place(None, "analyze")
        if not quiet:
            err.print(f"no image given: analyzing the built-in example {EXAMPLE.name}")
    try:
        if save:
            output_place(save, "analyze")
        files = iter_image_paths(paths)
    except EmoLensError as exc:
        fail(exc)
    if not files:
        fail(EmoLensError(f"no images found in: {' '.join(paths)}"))
    targets = dict(zip(files, annotated_targets(files, save), strict=True)) if save else {}
    replaced = 0
    try:
        analyzer = build_analyzer(
            model,
            detector=detector,
            min_face_size=min_face_size,
            detection_threshold=threshold,
            max_faces=max_faces,
            tta=tta,
        )
        analyzer.warmup()  # fail now, not once per file, when a model or an extra is missing
    except EmoLensError as exc:
        fail(exc)

    to_stdout = machine_to_stdout(json_out, csv_out)
    show = not quiet and not to_stdout
    results, failures, unsaved, n_faces = [], [], 0, 0
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=len(files) < 2 or quiet,
        transient=True,
    )
    with progress:
        task = progress.add_task("analyzing", total=len(files))
        for path, res in zip(files, analyzer.stream(files), strict=True):
            progress.advance(task)
            if isinstance(res, EmoLensError):
                failures.append((path, str(res)))
                progress.console.print(f"[red]✗[/red] {escape(str(res))}")
                continue
            results.append(res)
            n_faces += len(res)
            if show:
                progress.console.print(escape(res.summary()))
            if save:
                try:
                    replaced += targets[path].exists()
                    res.save(targets[path])
                except OSError as exc:  # a full disk loses the annotation, not the results
                    unsaved += 1
                    progress.console.print(f"[red]✗[/red] {escape(f'{path}: could not save annotated image: {exc}')}")
            res.image = None  # keep memory flat over thousands of files

    records = [r.to_dict() for r in results] + [{"source": str(p), "error": e} for p, e in failures]
    written_ok = emit_json(json_out, records)
    written_ok &= emit_csv(csv_out, [row for r in results for row in r.to_rows()])

    no_face = sum(1 for r in results if not r.faces)
    summary = (
        f"{len(results)} image{'s' if len(results) != 1 else ''} analyzed, {n_faces} face"
        f"{'s' if n_faces != 1 else ''} found, {no_face} without a face, {len(failures)} failed"
        + (f", {unsaved} annotated image{'s' if unsaved != 1 else ''} not saved" if unsaved else "")
    )
    if replaced:
        summary += f"; {replaced} annotated image{'s' if replaced != 1 else ''} from an earlier run replaced"
    err.print(summary if not (failures or unsaved) else f"[yellow]{summary}[/yellow]")
    if save and len(results) > unsaved:
        err.print(f"annotated images in {escape(str(save))}")
    if failures or unsaved or not written_ok:
        raise typer.Exit(1)


def detectors() -> None:
    """List the face detectors."""
    from emolens.detect import list_detectors

    for name in list_detectors():
        console.print(name)
