"""`emolens attendance ...`: sessions that record who was present."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emolens.cli.outputs import csv_option, json_option

attendance_app = typer.Typer(help="Attendance sessions: start, add, stop, report, list.", no_args_is_help=True)

Inputs = Annotated[
    list[str] | None, typer.Argument(help="Images, folders, globs or video files (by suffix) to feed the session.")
]
Camera = Annotated[
    int | None, typer.Option(min=0, max=1000, help="Also read this camera (index, e.g. 0) until Ctrl-C or --frames.")
]
Every = Annotated[int, typer.Option(min=1, max=10_000, help="Videos and cameras: analyse every N-th frame.")]
Frames = Annotated[
    int | None, typer.Option(min=1, max=10**12, help="Videos and cameras: stop after reading this many frames.")
]
Emotions = Annotated[bool, typer.Option(help="Also read each person's emotions (per-person summary).")]


def _feed(session, inputs: list[str] | None, camera: int | None, every: int, frames: int | None) -> int:
    """Feed images, videos and a camera to ``session``; returns the number of failed inputs."""
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from emolens.cli.console import console, err
    from emolens.core.errors import EmoLensError
    from emolens.identify.attendance import VIDEO_SUFFIXES
    from emolens.image.io import iter_image_paths

    paths = iter_image_paths(inputs or [])
    # Files named directly are kept whatever their suffix (folders give images only): videos go by suffix.
    videos = [p for p in paths if p.suffix.lower() in VIDEO_SUFFIXES]
    images = [p for p in paths if p.suffix.lower() not in VIDEO_SUFFIXES]
    failed = 0
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
    )
    with progress:
        if images:
            task = progress.add_task("images", total=len(images))

            def tick(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            results, failures = session.add_images(images, progress=tick)
            for name, reason in failures:
                progress.console.print(f"[red]✗[/red] {escape(name)}: {escape(reason)}")
            failed += len(failures)
            for r in results:
                for key in r.newly_present:
                    progress.console.print(f"present: {escape(key)} ({escape(r.source)})")
        sources: list[str | int] = [str(v) for v in videos] + ([camera] if camera is not None else [])
        for src in sources:
            task = progress.add_task(str(src), total=None)

            def vtick(done: int, total: int, task=task) -> None:
                progress.update(task, completed=done, total=total if total > 0 else None)

            try:
                summary = session.add_video(src, every=every, max_frames=frames, progress=vtick)
            except KeyboardInterrupt:
                progress.console.print("camera stopped")
                continue
            except EmoLensError as exc:
                progress.console.print(f"[red]✗[/red] {escape(str(exc))}")
                failed += 1
                continue
            for key in summary.newly_present:
                progress.console.print(f"present: {escape(key)} ({escape(summary.source)})")
            console.print(
                f"{escape(summary.source)}: {summary.frames_read} frames read, {summary.frames_used} analysed, "
                f"{summary.undecodable} undecodable"
            )
    return failed


@attendance_app.command("start")
def start(
    inputs: Inputs = None,
    name: Annotated[str | None, typer.Option(help="Session name (default: the date and time).")] = None,
    camera: Camera = None,
    every: Every = 15,
    frames: Frames = None,
    emotions: Emotions = True,
    stop_after: Annotated[bool, typer.Option("--stop", help="Stop the session once the inputs are fed.")] = False,
) -> None:
    """Start a session and feed it images, videos or a camera.

    The session uses the active recognizer version."""
    from emolens.cli.console import console, fail
    from emolens.core.errors import EmoLensError
    from emolens.identify.attendance import AttendanceSession

    try:
        session = AttendanceSession.start(name, emotions=emotions)
    except EmoLensError as exc:
        fail(exc)
    console.print(f"session {session.uid} started")
    failed = _feed(session, inputs, camera, every, frames)
    if stop_after:
        session.stop()
        console.print(f"session {session.uid} stopped")
    _summary(session)
    if failed:
        raise typer.Exit(1)


@attendance_app.command("add")
def add(
    inputs: Inputs = None,
    session_id: Annotated[
        str | None, typer.Option("--session", "-s", help="Session id (default: the latest open session).")
    ] = None,
    camera: Camera = None,
    every: Every = 15,
    frames: Frames = None,
    emotions: Emotions = True,
) -> None:
    """Feed more images, videos or a camera to an open session (the latest open one unless --session).

    The older form, `emolens attendance add SESSION_ID IMAGES...`, still works."""
    # A first argument that is no existing path and has no file suffix or wildcard is a session id.
    from emolens.cli.console import fail
    from emolens.core.errors import EmoLensError
    from emolens.identify.attendance import AttendanceSession

    first = inputs[0] if inputs else ""
    if session_id is None and first and not Path(first).exists() and not Path(first).suffix and "*" not in first:
        session_id, inputs = first, inputs[1:]
    try:
        session = AttendanceSession.open(session_id, emotions=emotions)
        session.check_open()  # refuse before any work, not on the first frame
    except EmoLensError as exc:
        fail(exc)
    failed = _feed(session, inputs, camera, every, frames)
    _summary(session)
    if failed:
        raise typer.Exit(1)


@attendance_app.command("stop")
def stop(
    session_id: Annotated[str | None, typer.Argument(help="Session id (default: the latest open session).")] = None,
) -> None:
    """Stop a session: nothing more can be added to it."""
    from emolens.cli.console import console, fail
    from emolens.core.errors import EmoLensError
    from emolens.identify.attendance import AttendanceSession

    try:
        session = AttendanceSession.open(session_id)
        session.stop()
    except EmoLensError as exc:
        fail(exc)
    console.print(f"session {session.uid} stopped")
    _summary(session)


@attendance_app.command("report")
def report(
    session_id: Annotated[str | None, typer.Argument(help="Session id (default: the latest session).")] = None,
    csv_out: Annotated[Path | None, csv_option("the attendance")] = None,
    json_out: Annotated[Path | None, json_option("the report")] = None,
) -> None:
    """Report who was present.

    First seen when, with what confidence, and how they looked."""
    from rich.table import Table

    from emolens.cli.console import console, fail
    from emolens.cli.outputs import emit_json, emit_text, machine_to_stdout
    from emolens.core.errors import EmoLensError
    from emolens.identify.attendance import AttendanceSession

    to_stdout = machine_to_stdout(json_out, csv_out)
    try:
        # Without an id: the latest session, open or stopped.
        session = AttendanceSession.open(session_id) if session_id else AttendanceSession.latest()
        rep = session.report()
    except EmoLensError as exc:
        fail(exc)
    for target, ok in ((json_out, emit_json(json_out, rep.to_dict())), (csv_out, emit_text(csv_out, rep.to_csv()))):
        if not ok:
            raise typer.Exit(1)
        if target is not None and str(target) != "-":
            console.print(f"written {target}")
    if to_stdout:
        return
    table = Table("id", "name", "present", "first seen", "confidence", "sightings", "emotion")
    for r in rep.rows:
        table.add_row(
            r.key,
            r.name,
            "yes" if r.present else "no",
            f"{r.first_seen:%H:%M:%S}" if r.first_seen else "",
            f"{r.confidence:.2f}" if r.confidence is not None else "",
            str(r.sightings) if r.present else "",
            f"{r.emotion} ({r.emotion_shares.get(r.emotion, 0):.0%})" if r.emotion else "",
        )
    console.print(table)
    _summary(session, rep)


@attendance_app.command("list")
def list_sessions(
    json_out: Annotated[Path | None, json_option("the sessions")] = None,
    csv_out: Annotated[Path | None, csv_option("one row per session")] = None,
) -> None:
    """List sessions, newest first."""
    from rich.table import Table

    from emolens.cli.console import console, fail
    from emolens.cli.outputs import emit_csv, emit_json, machine_to_stdout
    from emolens.core.errors import EmoLensError
    from emolens.identify.attendance import list_sessions as sessions

    to_stdout = machine_to_stdout(json_out, csv_out)
    try:
        rows = sessions()
    except EmoLensError as exc:
        fail(exc)
    if not (emit_json(json_out, rows) and emit_csv(csv_out, rows)):
        raise typer.Exit(1)
    if to_stdout:
        return
    table = Table("id", "name", "started", "stopped", "frames", "present")
    for r in rows:
        stopped = (r["stopped_at"] or "open")[:19]
        table.add_row(r["uid"], r["name"], r["started_at"][:19], stopped, str(r["frames"]), str(r["present"]))
    console.print(table)


def _summary(session, rep=None) -> None:
    from emolens.cli.console import console

    rep = rep or session.report()
    state = "stopped" if rep.stopped_at else "open"
    console.print(
        f"session {rep.uid} ({state}): {len(rep.present)} present, {len(rep.absent)} absent; "
        f"{rep.frames} frames, {rep.faces} faces ({rep.unknown_faces} unknown), {rep.undecodable} unreadable"
    )


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``emolens`` app."""
    app.add_typer(attendance_app, name="attendance")
