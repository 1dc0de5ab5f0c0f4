"""The ``emolens`` command line: a thin layer over the Python API, one verb per capability."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from emolens.errors import EmoLensError

app = typer.Typer(
    help="EmoLens: find faces and read their emotions, offline.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err = Console(stderr=True)

EXAMPLE = Path(__file__).parent / "assets" / "examples" / "astronaut.jpg"


def _fail(exc: EmoLensError, code: int = 2) -> None:
    err.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(code)


@app.command()
def analyze(
    paths: Annotated[
        list[str] | None, typer.Argument(help="Images, folders or globs. None: the built-in example photo.")
    ] = None,
    save: Annotated[Path | None, typer.Option(help="Folder for annotated images.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write results as JSON ('-' for stdout).")] = None,
    csv_out: Annotated[
        Path | None, typer.Option("--csv", help="Write one row per face as CSV ('-' for stdout).")
    ] = None,
    detector: Annotated[str | None, typer.Option(help="Face detector: retinaface, dlib-hog, dlib-cnn, haar.")] = None,
    model: Annotated[
        str | None, typer.Option(help="Emotion model: a name (see `emolens models`) or an .onnx path.")
    ] = None,
    min_face_size: Annotated[int | None, typer.Option(help="Ignore faces smaller than this many pixels.")] = None,
    threshold: Annotated[float | None, typer.Option(help="Detection score threshold.")] = None,
    max_faces: Annotated[int | None, typer.Option(help="Keep at most this many faces per image.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the summary.")] = False,
) -> None:
    """Find every face in the images and tell how each person feels."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from emolens.analyzer import Analyzer
    from emolens.io import iter_image_paths

    if not paths:
        paths = [str(EXAMPLE)]
        if not quiet:
            err.print(f"no image given: analyzing the built-in example {EXAMPLE.name}")
    files = iter_image_paths(paths)
    if not files:
        _fail(EmoLensError(f"no images found in: {' '.join(paths)}"))
    try:
        analyzer = Analyzer(
            model=model,
            detector=detector,
            min_face_size=min_face_size,
            detection_threshold=threshold,
            max_faces=max_faces,
        )
        analyzer.model.meta  # fail now, not once per file, when the model is missing or broken
    except EmoLensError as exc:
        _fail(exc)

    to_stdout = str(json_out) == "-" or str(csv_out) == "-"
    show = not quiet and not to_stdout
    results, failures, n_faces = [], [], 0
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
                progress.console.print(f"[red]✗[/red] {res}")
                continue
            results.append(res)
            n_faces += len(res)
            if show:
                progress.console.print(res.summary())
            if save:
                try:
                    res.save(save / f"{path.stem}_emolens.jpg")
                except OSError as exc:  # a full disk loses the annotation, not the results
                    failures.append((path, f"could not save annotated image: {exc}"))
                    progress.console.print(f"[red]✗[/red] {path}: could not save annotated image: {exc}")
            res.image = None  # keep memory flat over thousands of files

    if json_out:
        text = json.dumps(
            [r.to_dict() for r in results] + [{"source": str(p), "error": e} for p, e in failures], indent=2
        )
        _write(json_out, text)
    if csv_out:
        rows = [row for r in results for row in r.to_rows()]
        fields = list(dict.fromkeys(k for row in rows for k in row))
        target = sys.stdout if str(csv_out) == "-" else open(csv_out, "w", newline="")
        with target if target is not sys.stdout else _nullcontext(target) as f:
            writer = csv.DictWriter(f, fieldnames=fields or ["source", "face"])
            writer.writeheader()
            writer.writerows(rows)

    no_face = sum(1 for r in results if not r.faces)
    summary = (
        f"{len(results)} image{'s' if len(results) != 1 else ''} analyzed, {n_faces} face"
        f"{'s' if n_faces != 1 else ''} found, {no_face} without a face, {len(failures)} failed"
    )
    err.print(summary if not failures else f"[yellow]{summary}[/yellow]")
    if save and results:
        err.print(f"annotated images in {save}")
    if failures:
        raise typer.Exit(1)


class _nullcontext:
    def __init__(self, obj):
        self.obj = obj

    def __enter__(self):
        return self.obj

    def __exit__(self, *exc):
        return False


def _write(target: Path, text: str) -> None:
    if str(target) == "-":
        sys.stdout.write(text + "\n")
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


@app.command()
def models() -> None:
    """List the emotion models available by name."""
    from emolens.models import available_models, load_emotion_model

    table = Table("name", "labels", "input", "accuracy", "path")
    for name, path in available_models().items():
        try:
            m = load_emotion_model(str(path))
            spec = m.meta.input
            acc = m.card.get("metrics", {}).get("accuracy")
            table.add_row(
                name,
                " ".join(m.labels),
                f"{spec.size}x{spec.size}x{spec.channels}",
                f"{acc:.1%}" if acc else "",
                str(path),
            )
        except EmoLensError as exc:
            table.add_row(name, f"[red]{exc}[/red]", "", "", str(path))
    console.print(table)


@app.command()
def detectors() -> None:
    """List the face detectors."""
    from emolens.detect import list_detectors

    for name in list_detectors():
        console.print(name)


@app.command()
def evaluate(
    model: Annotated[str, typer.Argument(help="Model name or .onnx path.")],
    data: Annotated[Path, typer.Argument(help="An .npz of aligned crops with `images`, `labels`, `classes`.")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the metrics as JSON.")] = None,
) -> None:
    """Measure a model on labelled face crops: accuracy, macro-F1, per-class recall."""
    from emolens.evaluate import evaluate_arrays, load_npz

    try:
        images, labels, classes = load_npz(data)
        report = evaluate_arrays(model, images, labels, classes)
    except EmoLensError as exc:
        _fail(exc)
    table = Table("class", "recall", "support")
    for c, r in report["per_class_recall"].items():
        table.add_row(c, f"{r:.3f}", str(report["support"][c]))
    console.print(table)
    console.print(f"accuracy {report['accuracy']:.4f}   macro-F1 {report['macro_f1']:.4f}   n={report['n']}")
    if json_out:
        _write(json_out, json.dumps(report, indent=2))


def main() -> None:  # pragma: no cover - entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
