"""`emolens batch INPUT [OUTPUT]`: a collection of images into a Parquet dataset, resumable, local or on Ray."""

from __future__ import annotations

import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from emolens.cli.console import DetectionThreshold, MaxFaces, MinFaceSize, err, fail, workspace
from emolens.cli.outputs import emit_json, json_option, output_place
from emolens.core.errors import EmoLensError


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``emolens`` app."""
    app.command("batch")(batch)


def batch(
    source: Annotated[
        str,
        typer.Argument(
            metavar="INPUT",
            help="A folder, a glob ('photos/**/*.jpg'), or a CSV/Parquet manifest with a 'path' column.",
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Argument(
            metavar="[OUTPUT]",
            help="Folder of the Parquet dataset (new, or a run to resume). Default: emolens-output/batch/<input name>.",
        ),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Emotion model: a name (see `emolens models`) or an .onnx path.")
    ] = None,
    detector: Annotated[
        str | None,
        typer.Option(
            help="Face detector: retinaface, dlib-hog, dlib-cnn, haar, or none (the whole image is the face)."
        ),
    ] = None,
    min_face_size: MinFaceSize = None,
    threshold: DetectionThreshold = None,
    max_faces: MaxFaces = None,
    embeddings: Annotated[
        bool, typer.Option("--embeddings", help="Add each face's identity embedding (needs the 'identity' extra).")
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(min=1, max=1024, help="Processes (or Ray actors). Default: all cores (on Ray: all cluster CPUs)."),
    ] = None,
    shard_size: Annotated[
        int | None,
        typer.Option(min=1, max=1_000_000, help="Images per shard file, the unit of resumption. Default: 256."),
    ] = None,
    threads: Annotated[
        int | None, typer.Option(min=0, max=1024, help="ONNX Runtime threads per worker. Default: cores / workers.")
    ] = None,
    ray: Annotated[bool, typer.Option("--ray", help="Run on Ray Data (a local Ray instance).")] = False,
    address: Annotated[
        str | None, typer.Option(help="Run on an existing Ray cluster: 'auto', 'ray://host:10001'... Implies --ray.")
    ] = None,
    json_out: Annotated[Path | None, json_option("the summary")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Analyse a collection into Parquet, resumably.

    One row per face, and one per image without a face or that failed, with the reason. Written by
    shards, each whole or not at all: after Ctrl-C, kill -9 or a power loss, the same command
    resumes where it stopped, and a finished job run again changes nothing. Exit code 0 when every
    shard is written (failed images are rows of the output), 2 on bad input, 130 when interrupted."""
    from emolens.batch import BatchInterruptedError, BatchJob, BatchOptions
    from emolens.batch.spec import STATE_DIR
    from emolens.workspace import Workspace

    ws = workspace()
    if threads is not None:
        ws = Workspace(ws.settings.model_copy(update={"threads": threads}))
    options = BatchOptions(
        model=model,
        detector=detector,
        min_face_size=min_face_size,
        detection_threshold=threshold,
        max_faces=max_faces,
        embeddings=embeddings,
        shard_size=shard_size,
        workers=workers,
        ray=ray,
        address=address,
    )
    try:
        output = output_place(output, "batch", _input_name(source))
        job = BatchJob(source, output, options, ws)
    except EmoLensError as exc:
        fail(exc)
    done_before = job.total_images - job.pending_images
    backend = f"Ray ({address})" if address else ("Ray (local)" if job.use_ray else "local")
    if not job.pending:
        err.print(f"all {job.n_shards:,} shards of this job are already written: nothing to do")
    else:
        n = f"{min(job.workers, len(job.pending))} worker(s)" if job.workers else "a worker per cluster CPU"
        err.print(
            f"{job.total_images:,} images in {job.n_shards:,} shard{'s' if job.n_shards != 1 else ''} "
            f"of {job.spec.shard_size}"
            + (f", {done_before:,} already done" if done_before else "")
            + f"; model {escape(job.spec.model)}, detector {job.spec.detector}; {backend}, {n}"
        )
        if job.use_ray and not address:
            err.print(
                "starting a local Ray instance first: its start-up takes about half a minute on a small "
                "machine, whatever the job's size (without --ray, processes start at once)"
            )
    ray_log = job.output / STATE_DIR / "ray.log" if job.use_ray and job.pending else None
    try:
        with _native_stderr_to(ray_log):
            summary = _run(job, quiet)
    except BatchInterruptedError as exc:
        err.print(f"[yellow]{escape(str(exc))}[/yellow]")
        raise typer.Exit(130) from None
    except EmoLensError as exc:
        fail(EmoLensError(f"{exc} (Ray's own log: {ray_log})") if ray_log else exc, 1)
    _print_summary(summary)
    if not emit_json(json_out, summary.to_dict()):
        raise typer.Exit(1)
    raise typer.Exit(0 if summary.complete else 1)


@contextmanager
def _native_stderr_to(path: Path | None):
    """While Ray runs, what its C++ parts write straight to file descriptor 2 goes to ``path``: on a
    run that works, warnings and an error line of its core worker about actor restarts (ray-project/ray
    issue 53727). Python's own stderr (the progress bar, EmoLens's messages) keeps the terminal."""
    try:
        real = path is not None and sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # a captured stderr (tests): nothing to separate
        real = False
    if not real:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved, log = os.dup(2), os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    python_stderr = sys.stderr
    sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=python_stderr.encoding, errors="replace")
    os.dup2(log, 2)
    try:
        yield
    finally:
        sys.stderr.close()
        sys.stderr = python_stderr
        os.dup2(saved, 2)
        os.close(saved)
        os.close(log)


def _input_name(source: str) -> str:
    """A name for the default output folder: the folder or manifest named, before any glob pattern."""
    fixed = Path(re.split(r"[*?\[]", source, maxsplit=1)[0] or ".")
    return (fixed.stem if fixed.suffix else fixed.resolve().name) or "batch"


def _run(job, quiet: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed:,.1f} images/s" if task.speed else "… images/s")

    if not job.pending:
        return job.run()
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        Rate(),
        TextColumn("{task.fields[faces]:,} faces"),
        TimeRemainingColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=quiet,
        transient=True,
    )
    with progress:
        task = progress.add_task("images", total=job.pending_images, faces=0)
        faces = 0

        def on_shard(report) -> None:
            nonlocal faces
            faces += report.faces
            progress.update(task, advance=report.images, faces=faces)

        return job.run(on_shard)


def _print_summary(s) -> None:
    err.print(
        f"{s.images:,} images: {s.faces:,} faces, {s.no_face:,} without a face, {s.failed:,} failed "
        f"({s.shards_done:,} of {s.shards:,} shards written, {s.shards_run:,} by this run)"
    )
    if s.shards_run:
        err.print(
            f"this run: {s.images_run:,} images in {s.seconds:.1f} s, {s.images_per_s:.1f} images/s, "
            f"{s.faces_per_s:.1f} faces/s ({s.backend}, {s.workers} worker(s))"
        )
    if s.labels or s.failures:
        table = Table("label / failure", "count", title=None)
        for label, n in s.labels.items():
            table.add_row(escape(label), f"{n:,}")
        for reason, n in s.failures.items():
            table.add_row(f"[red]{escape(reason)}[/red]", f"{n:,}")
        err.print(table)
    err.print(f"rows in {escape(s.output)} (pyarrow.parquet.read_table or pandas.read_parquet reads the folder)")
