"""`emolens video SOURCE`: tracked faces and smoothed emotions over time."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from emolens.cli.console import DetectionThreshold, MinFaceSize, console, err, fail, workspace
from emolens.cli.outputs import output_place
from emolens.core.errors import EmoLensError


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``emolens`` app."""
    app.command("video")(video)


def video(
    source: Annotated[
        str, typer.Argument(help="A video file, a camera index (0, 1...) or a stream URL (rtsp://, http://...).")
    ],
    out: Annotated[
        Path | None, typer.Option(help="Folder for the outputs. Default: emolens-output/video/<source name>.")
    ] = None,
    every: Annotated[
        int | None,
        typer.Option(
            "--every",
            "-n",
            min=1,
            max=10_000,
            help="Detect faces every N frames (optical flow in between). Default: 3 (EMOLENS_VIDEO_DETECT_EVERY).",
        ),
    ] = None,
    smooth: Annotated[
        float | None,
        typer.Option(
            "--smooth",
            min=0.0,
            max=1.0,
            help="EMA weight of each new reading, 0-1 (1 = no smoothing). Default: 0.3 (EMOLENS_VIDEO_SMOOTHING).",
        ),
    ] = None,
    window: Annotated[
        int | None,
        typer.Option("--window", min=1, max=10_000, help="Smooth by the mean of the last K readings instead of EMA."),
    ] = None,
    classify_every: Annotated[
        int, typer.Option(min=1, max=10_000, help="Re-read each face's emotion every K frames.")
    ] = 1,
    max_side: Annotated[
        int | None,
        typer.Option(
            min=16,
            max=100_000,
            help="The detector sees frames downscaled to this side. Default: 640 (EMOLENS_VIDEO_MAX_SIDE).",
        ),
    ] = None,
    no_video: Annotated[bool, typer.Option("--no-video", help="Do not write the annotated video.")] = False,
    max_frames: Annotated[
        int | None, typer.Option(min=1, max=10**12, help="Stop after this many frames (cameras run until Ctrl-C).")
    ] = None,
    show_fps: Annotated[
        bool, typer.Option("--show-fps", help="Also stamp the processing FPS on the annotated video.")
    ] = False,
    detector: Annotated[
        str | None,
        typer.Option(
            help="Face detector: retinaface, dlib-hog, dlib-cnn, haar, or none (the whole image is the face)."
        ),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Emotion model: a name, an .onnx path, or an ensemble: fast+accurate.")
    ] = None,
    min_face_size: MinFaceSize = None,
    threshold: DetectionThreshold = None,
    threads: Annotated[int | None, typer.Option(min=0, max=1024, help="ONNX Runtime threads (0 = all cores).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the summary.")] = False,
) -> None:
    """Follow every face's emotions through a video or camera.

    Tracks every face through a video file, camera or stream and smooths its emotions over time.

    Writes an annotated video, a per-track timeline (CSV and JSON) and a timeline plot; shows the
    live FPS. Exit code 1 when the stream dropped or the file ended early (what was analysed is
    still written), 2 when the source cannot be opened at all."""
    import cv2

    from emolens.video.pipeline import VideoAnalyzer
    from emolens.video.source import VideoSource, source_name

    # OpenCV logs each failed open or reconnect attempt itself; every failure is reported here in words.
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    if smooth is not None and window:
        fail(EmoLensError("give --smooth ALPHA or --window K, not both"))
    if smooth is not None and not 0 < smooth <= 1:
        fail(EmoLensError(f"--smooth must be in (0, 1], got {smooth}"))
    try:
        folder = output_place(out, "video", source_name(source))
        src = VideoSource(source)  # first: a wrong path fails before any model loads
        va = VideoAnalyzer(
            workspace=workspace(),
            model=model,
            detector=detector,
            detect_every=every,
            classify_every=classify_every,
            smoothing=smooth,
            window=window,
            max_side=max_side,
            threads=threads,
            min_face_size=min_face_size,
            detection_threshold=threshold,
        ).warmup()
    except (EmoLensError, ValueError) as exc:
        if "src" in locals():
            src.close()
        fail(exc if isinstance(exc, EmoLensError) else EmoLensError(str(exc)))
    if not quiet:
        size = f"{src.width}x{src.height}" if src.width else "size unknown"
        length = f"{src.frame_count} frames" if src.frame_count else src.kind
        err.print(f"{escape(str(source))}: {size}, {src.fps or '?'} fps, {length}; {escape(va.describe())}")
    outcome = _analyse(va, src, folder, max_frames, not no_video, show_fps, quiet)
    code = _report(outcome, src, folder)
    raise typer.Exit(code)


class _Outcome:
    """What one run produced, for the summary."""

    def __init__(self, timeline):
        self.timeline = timeline
        self.frames = 0
        self.seconds = 0.0
        self.interrupted = False
        self.video_path: Path | None = None
        self.written: list[Path] = []
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.codec: str | None = None


def _analyse(va, src, folder: Path, max_frames, write_video: bool, show_fps: bool, quiet: bool) -> _Outcome:
    from emolens.video.timeline import Timeline
    from emolens.video.writer import AnnotatedVideoWriter

    outcome = _Outcome(Timeline(va.labels, src.name, src.fps))
    writer = AnnotatedVideoWriter(folder / "annotated.mp4", src.fps) if write_video else None
    progress, task = _progress(src, max_frames, quiet)
    run = va.run(src, max_frames)
    start = last = time.perf_counter()
    interval = 0.0
    try:
        with progress:
            for res in run:
                now = time.perf_counter()
                # Wall-clock time per frame, averaged over the last ten or so: live, not diluted by the start.
                interval = now - last if outcome.frames == 0 else 0.9 * interval + 0.1 * (now - last)
                last = now
                fps = 1.0 / interval if interval > 0 else 0.0
                outcome.frames += 1
                outcome.timeline.add(res)
                if writer is not None:
                    writer = _write_frame(writer, res, f"{fps:.1f} FPS" if show_fps else None, outcome)
                res.image = None  # memory stays flat, however long the video
                progress.update(task, advance=1, fps=fps, faces=len(res), tracks=len(outcome.timeline.track_ids()))
    except KeyboardInterrupt:
        outcome.interrupted = True
    except EmoLensError as exc:  # the source gave no frame at all: nothing to write
        if writer is not None:
            writer.abort()
        fail(exc)
    finally:
        run.close()
        outcome.seconds = time.perf_counter() - start
    if writer is not None:
        outcome.codec = writer.codec
        outcome.video_path = writer.close()
    _write_outputs(outcome, va, src, folder)
    return outcome


def _write_frame(writer, res, overlay, outcome: _Outcome):
    """Append a frame; a failing writer is reported once and dropped, the analysis goes on."""
    try:
        writer.write(res, overlay)
        return writer
    except (EmoLensError, OSError) as exc:
        outcome.problems.append(f"annotated video not written: {exc}")
        writer.abort()
        return None


def _progress(src, max_frames, quiet: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    total = src.frame_count
    if max_frames:
        total = min(total, max_frames) if total else max_frames
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn() if total else TextColumn("{task.completed} frames"),
        TextColumn("[bold]{task.fields[fps]:5.1f} FPS now[/bold]"),  # the last ~10 frames; the summary: all
        TextColumn("{task.fields[faces]} faces, {task.fields[tracks]} tracks"),
        TimeElapsedColumn(),
        console=err,
        disable=quiet,
        transient=False,
    )
    task = progress.add_task(src.name, total=total, fps=0.0, faces=0, tracks=0)
    return progress, task


def _write_outputs(outcome: _Outcome, va, src, folder: Path) -> None:
    """The timeline as CSV, JSON (with the run's statistics) and a plot; failures are reported."""
    stats = {
        **src.stats.to_dict(),
        "frames_analyzed": outcome.frames,
        "seconds": round(outcome.seconds, 2),
        "fps": round(outcome.frames / outcome.seconds, 2) if outcome.seconds > 0 else None,
        "method": va.describe(),
        "interrupted": outcome.interrupted,
    }
    import importlib.util

    tl = outcome.timeline
    steps = [
        ("timeline.csv", lambda p: tl.to_csv(p)),
        ("timeline.json", lambda p: tl.to_json(p, stats)),
    ]
    # The plot is the one output that needs an extra; a core install still completes the run.
    if importlib.util.find_spec("matplotlib") is not None:
        steps.append(("timeline.png", lambda p: tl.plot(p)))
    else:
        outcome.notes.append("timeline plot not drawn: it needs matplotlib (pip install -e '.[train]')")
    for name, write in steps:
        try:
            path = write(folder / name)
            if path is not None:
                outcome.written.append(path)
        except OSError as exc:
            outcome.problems.append(f"could not write {folder / name}: {exc}")
    if outcome.video_path:
        outcome.written.insert(0, outcome.video_path)


def _report(outcome: _Outcome, src, folder: Path) -> int:
    """The summary: tracks, speed, frames lost; the exit code."""
    stats = src.stats
    summary = outcome.timeline.summary()
    if summary:
        table = Table("track", "frames", "from", "to", "dominant", "mean confidence")
        for s in summary:
            mean = s["mean_probs"] or {}
            dom = s["dominant"]
            table.add_row(
                f"#{s['track_id']}",
                str(s["frames"]),
                _when(s["start_s"], s["first_frame"]),
                _when(s["end_s"], s["last_frame"]),
                dom or "?",
                f"{mean.get(dom, 0):.0%}" if dom else "",
            )
        console.print(table)
    fps = outcome.frames / outcome.seconds if outcome.seconds > 0 else 0.0
    line = (
        f"{outcome.frames} frames analysed in {outcome.seconds:.1f} s ({fps:.1f} FPS on average, start-up "
        f"included; the progress bar shows the rate over the last ~10 frames), {len(summary)} track"
        f"{'s' if len(summary) != 1 else ''}, {stats.undecodable} undecodable frame"
        f"{'s' if stats.undecodable != 1 else ''} skipped"
    )
    if stats.skipped_late:
        line += f", {stats.skipped_late} frames dropped to keep up with the live source"
    if stats.reconnects:
        line += f", {stats.reconnects} reconnect(s)"
    bad = bool(stats.ended_early or outcome.problems) or (outcome.interrupted and not src.live)
    err.print(f"[yellow]{escape(line)}[/yellow]" if bad or stats.undecodable else escape(line))
    if outcome.interrupted:
        err.print(f"stopped by Ctrl-C after {outcome.frames} frames; the outputs cover them")
    if stats.ended_early:
        err.print(f"[red]warning:[/red] {escape(stats.ended_early)}; the outputs cover the frames before it")
    for p in outcome.problems:
        err.print(f"[red]✗[/red] {escape(p)}")
    for note in outcome.notes:
        err.print(f"note: {escape(note)}")
    if outcome.video_path and outcome.codec:
        hint = "" if "H.264" in outcome.codec else " (browsers need H.264: pip install -e '.[video]')"
        err.print(f"annotated video encoded as {escape(outcome.codec)}{escape(hint)}")
    if outcome.written:
        err.print("wrote " + ", ".join(escape(str(p)) for p in outcome.written))
    return 1 if bad else 0


def _when(seconds: float | None, frame: int) -> str:
    return f"{seconds:.2f} s" if seconds is not None else f"frame {frame}"
