"""The ``emolens`` command line: a thin layer over the Python API, one verb per capability."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from emolens.errors import EmoLensError

app = typer.Typer(
    help="EmoLens: find faces and read their emotions, offline.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err = Console(stderr=True, soft_wrap=True)  # one message per line, file names never broken

EXAMPLE = Path(__file__).parent / "assets" / "examples" / "astronaut.jpg"


def _fail(exc: EmoLensError, code: int = 2) -> None:
    err.print(f"[red]error:[/red] {escape(str(exc))}")
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

    if not paths:  # the demo: the built-in example photo, annotated copy written beside the user
        paths = [str(EXAMPLE)]
        save = save or Path("emolens-output")
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
        analyzer.warmup()  # fail now, not once per file, when a model or an extra is missing
    except EmoLensError as exc:
        _fail(exc)

    to_stdout = "-" in (str(json_out), str(csv_out))
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
                    res.save(save / f"{path.stem}_emolens.jpg")
                except OSError as exc:  # a full disk loses the annotation, not the results
                    unsaved += 1
                    progress.console.print(f"[red]✗[/red] {escape(f'{path}: could not save annotated image: {exc}')}")
            res.image = None  # keep memory flat over thousands of files

    written_ok = True
    if json_out:
        records = [r.to_dict() for r in results] + [{"source": str(p), "error": e} for p, e in failures]
        written_ok &= _write(json_out, json.dumps(records, indent=2))
    if csv_out:
        rows = [row for r in results for row in r.to_rows()]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(k for row in rows for k in row)) or ["source"])
        writer.writeheader()
        writer.writerows(rows)
        written_ok &= _write(csv_out, buffer.getvalue())

    no_face = sum(1 for r in results if not r.faces)
    summary = (
        f"{len(results)} image{'s' if len(results) != 1 else ''} analyzed, {n_faces} face"
        f"{'s' if n_faces != 1 else ''} found, {no_face} without a face, {len(failures)} failed"
        + (f", {unsaved} annotated image{'s' if unsaved != 1 else ''} not saved" if unsaved else "")
    )
    err.print(summary if not (failures or unsaved) else f"[yellow]{summary}[/yellow]")
    if save and len(results) > unsaved:
        err.print(f"annotated images in {escape(str(save))}")
    if failures or unsaved or not written_ok:
        raise typer.Exit(1)


def _write(target: Path, text: str) -> bool:
    """Write an output file whole (via a temporary file), or say why not; returns success."""
    if str(target) == "-":
        sys.stdout.write(text + "\n")
        return True
    tmp = target.with_name(target.name + ".tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
        tmp.replace(target)
        return True
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        err.print(f"[red]error:[/red] could not write {escape(str(target))}: {escape(str(exc))}")
        return False


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
            table.add_row(name, f"[red]{escape(str(exc))}[/red]", "", "", str(path))
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


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="Training .npz (images, labels, classes).")],
    val: Annotated[Path, typer.Option(help="Validation .npz used for model selection.")],
    out: Annotated[Path, typer.Option(help="Run folder for checkpoints and logs.")] = Path("runs/train"),
    arch: Annotated[str, typer.Option(help="Architecture name (see emolens.train.archs).")] = "vgg-tiny",
    epochs: Annotated[int, typer.Option()] = 42,
    batch_size: Annotated[int, typer.Option()] = 128,
    lr: Annotated[float, typer.Option(help="Peak learning rate of the one-cycle schedule.")] = 3e-3,
    seed: Annotated[int, typer.Option()] = 0,
    resume: Annotated[Path | None, typer.Option(help="Continue from a last.pt checkpoint.")] = None,
) -> None:
    """Train an emotion model on arrays of face crops (the recipe of the shipped `fast` model by default)."""
    from emolens.errors import require

    require("torch", "train")
    from emolens.evaluate import load_npz
    from emolens.train.loop import TrainConfig, fit

    try:
        xtr, ytr, classes = load_npz(data)
        xva, yva, val_classes = load_npz(val)
    except EmoLensError as exc:
        _fail(exc)
    if classes != val_classes:
        _fail(EmoLensError(f"training classes {classes} differ from validation classes {val_classes}"))
    cfg = TrainConfig(
        arch=arch,
        labels=classes,
        size=int(xtr.shape[1]),
        channels=1 if xtr.ndim == 3 else xtr.shape[3],
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
    )
    result = fit((xtr, ytr), (xva, yva), cfg, out, resume=resume)
    console.print(f"best validation {cfg.select_on}: {result['best']:.4f} → {result['checkpoint']}")


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="A best.pt / last.pt from `emolens train`.")],
    out: Annotated[Path, typer.Argument(help="The .onnx file to write.")],
    val: Annotated[Path | None, typer.Option(help="Labelled .npz: its metrics go into the model card.")] = None,
    name: Annotated[str, typer.Option(help="Model name for the card.")] = "",
    data: Annotated[str, typer.Option(help="What the model was trained on, for the card.")] = "",
    val_name: Annotated[str, typer.Option(help="How the card names the --val data.")] = "",
) -> None:
    """Export a checkpoint to the self-describing ONNX format (parity-checked), with a model card."""
    from emolens.errors import require

    require("torch", "train")
    from emolens.train.card import write_card
    from emolens.train.export import export_onnx

    report = export_onnx(checkpoint, out, card={"name": name or out.stem, "data": data})
    console.print(f"wrote {out} (max |p_torch - p_onnx| = {report['max_abs_diff']:.1e})")
    if val:
        from emolens.evaluate import evaluate_arrays, load_npz

        metrics = evaluate_arrays(str(out), *load_npz(val))
        metrics["dataset"] = val_name or val.name
        card_path = write_card(out, metrics, checkpoint)
        console.print(f"accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f} → {card_path}")


@app.command()
def annotate(
    model: Annotated[Path, typer.Argument(help="An ONNX emotion model trained elsewhere.")],
    labels: Annotated[str, typer.Option(help="Class names in output order, comma-separated.")],
    size: Annotated[int, typer.Option(help="Input side in pixels.")] = 48,
    channels: Annotated[int, typer.Option(help="1 (grey) or 3 (RGB).")] = 1,
    mean: Annotated[str, typer.Option(help="Per-channel mean after scaling to [0, 1], comma-separated.")] = "0.5",
    std: Annotated[str, typer.Option(help="Per-channel std, comma-separated.")] = "0.5",
    value_range: Annotated[float, typer.Option("--range", help="Pixel value that maps to 1.0.")] = 255.0,
    layout: Annotated[str, typer.Option(help="NCHW or NHWC.")] = "NCHW",
    output: Annotated[str, typer.Option(help="logits or probabilities.")] = "logits",
    out: Annotated[Path | None, typer.Option(help="Write here instead of in place.")] = None,
) -> None:
    """Make any ONNX emotion model self-describing, so every EmoLens command can use it."""
    import numpy as np

    from emolens.classify.emotion import EmotionModel
    from emolens.classify.modelfile import InputSpec, ModelMeta
    from emolens.classify.modelfile import annotate as write_meta

    try:
        meta = ModelMeta(
            labels=[x.strip() for x in labels.split(",") if x.strip()],
            input=InputSpec(
                size=size,
                channels=channels,
                mean=[float(v) for v in mean.split(",")],
                std=[float(v) for v in std.split(",")],
                layout=layout,
                range=value_range,
            ),
            output=output,
            card={"name": (out or model).stem, "source": "annotated by emolens"},
        )
        ModelMeta.from_props(meta.to_props(), str(model))  # the same checks a reader applies
        target = out or model
        trial = write_meta(model, meta, target.with_name(target.name + ".trial.onnx"))
        try:  # the annotated model must load and run before it replaces anything
            shape = (1, size, size, channels) if channels == 3 else (1, size, size)
            EmotionModel(trial).predict(np.zeros(shape, np.uint8))
            trial.replace(target)
        finally:
            trial.unlink(missing_ok=True)
    except EmoLensError as exc:
        _fail(exc)
    except ValueError as exc:
        _fail(EmoLensError(f"bad option value: {exc}"))
    console.print(f"{target}: {len(meta.labels)} labels, input {size}x{size}x{channels}; ready for --model {target}")


def main() -> None:  # pragma: no cover - entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
