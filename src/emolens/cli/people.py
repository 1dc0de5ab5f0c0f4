"""`emolens people ...` and `emolens identify`: enrollment, training and recognition."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emolens.cli.console import enrolled_people
from emolens.cli.outputs import csv_option, emit_csv, emit_json, json_option, machine_to_stdout

people_app = typer.Typer(help="Enrolled people: enroll, list, remove, train, versions.", no_args_is_help=True)


def _progress(total_hint: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from emolens.cli.console import err

    return Progress(
        TextColumn(total_hint), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True
    )


@people_app.command("enroll")
def enroll(
    paths: Annotated[
        list[Path],
        typer.Argument(help="A folder of people (one subfolder each, e.g. STU001_Jane_Doe/), or with --id, photos."),
    ],
    person: Annotated[
        str | None, typer.Option("--id", help="Enroll PATHS (photos, folders) as this one person.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Display name for --id (default: the id).")] = None,
    train: Annotated[bool, typer.Option(help="Train a new recognizer version afterwards.")] = True,
) -> None:
    """Enroll people from photos. Photos without a usable face are listed with the reason."""
    from rich.markup import escape

    from emolens.cli.console import console, err, fail
    from emolens.core.errors import EmoLensError
    from emolens.identify.enrol import EnrollReport

    people = enrolled_people()
    report = EnrollReport()
    try:
        with _progress("enrolling") as bar:
            task = bar.add_task("enrolling", total=None)

            def tick(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            if person:
                report = people.enroll_images(paths, person, name, progress=tick)
            else:
                if name:
                    raise EmoLensError("--name needs --id (a folder of people takes names from its subfolders)")
                for folder in paths:
                    report.merge(people.enroll_folder(folder, progress=tick))
    except EmoLensError as exc:
        fail(exc)
    for src, reason in report.skipped:
        who = f"{report.person_of[src]}: " if src in report.person_of else ""
        err.print(f"[yellow]skipped[/yellow] {escape(who + src)}: {escape(reason)}")
    for src, note in report.notes:
        err.print(f"[dim]note[/dim] {escape(src)}: {escape(note)}")
    try:
        short = people.short_of_photos({k for k, _ in report.enrolled} | set(report.person_of.values()))
    except EmoLensError as exc:
        fail(exc)
    for person, have, typical in short:
        err.print(
            f"[yellow]warning[/yellow] {escape(person.key)} ({escape(person.name)}) has {have} photo(s) enrolled, "
            f"most people have {typical}: recognition of {escape(person.key)} is less reliable; enroll more photos"
        )
    keys = {k for k, _ in report.enrolled}
    console.print(
        f"{len(report.enrolled)} faces enrolled for {len(keys)} people ({len(report.people_added)} new), "
        f"{len(report.skipped)} images skipped"
    )
    if train and report.enrolled:
        _train(people, "auto", None)


@people_app.command("list")
def list_people(
    json_out: Annotated[Path | None, json_option("the people")] = None,
    csv_out: Annotated[Path | None, csv_option("one row per person")] = None,
) -> None:
    """List enrolled people and how many faces each has."""
    from rich.table import Table

    from emolens.cli.console import console, fail
    from emolens.core.errors import EmoLensError

    to_stdout = machine_to_stdout(json_out, csv_out)
    try:
        rows = enrolled_people().list()
    except EmoLensError as exc:
        fail(exc)
    dicts = [p.to_dict() for p in rows]
    if not (emit_json(json_out, dicts) and emit_csv(csv_out, dicts)):
        raise typer.Exit(1)
    if to_stdout:
        return
    table = Table("id", "name", "faces", "enrolled")
    for p in rows:
        table.add_row(p.key, p.name, str(p.faces), f"{p.created_at:%Y-%m-%d}")
    console.print(table)
    console.print(f"{len(rows)} people")


@people_app.command("remove")
def remove(
    person: Annotated[str, typer.Argument(help="The person's id (see `emolens people list`).")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Erase a person and everything recorded about them.

    Embeddings, stored face crops, attendance records; the name is redacted in reports."""
    from emolens.cli.console import console, fail
    from emolens.core.errors import EmoLensError

    people = enrolled_people()
    try:
        people.get(person)
        if not yes:
            typer.confirm(f"Erase {person} and everything recorded about them?", abort=True)
        counts = people.remove(person)
    except EmoLensError as exc:
        fail(exc)
    console.print(
        f"removed {person}: {counts['face_embeddings']} embeddings, {counts['face_crop_files']} face crops, "
        f"{counts['attendance_records']} attendance records; {counts['reports_redacted']} reports redacted"
    )


@people_app.command("train")
def train(
    classifier: Annotated[str, typer.Option(help="auto (cross-validated choice), svm, centroid or knn.")] = "auto",
    strangers: Annotated[
        Path | None, typer.Option(help="Photos of people who will never be enrolled, to measure false accepts.")
    ] = None,
) -> None:
    """Train a new recognizer version and activate it.

    Trains on every enrolled face and writes the version's report."""

    _train(enrolled_people(), classifier, strangers)


def _train(people, classifier: str, strangers: Path | None) -> None:
    from emolens.cli.console import console, err, fail
    from emolens.core.errors import EmoLensError

    def say(kind: str) -> None:
        err.print(f"cross-validating {kind}...")

    try:
        result = people.train(classifier, strangers=[strangers] if strangers else None, progress=say)
    except EmoLensError as exc:
        fail(exc)
    s = result.report["summary"]

    def pct(v):
        return "n/a" if v is None else f"{v:.1%}"

    console.print(
        f"version {result.version.version}: {s['classifier']} on {s['n_people']} people / {s['n_faces']} faces; "
        f"threshold {s['threshold']:.2f} (min similarity {s['min_similarity']:.2f})"
    )
    imp = s.get("impostor_similarity")
    spread = (
        f"; never-enrolled faces reach similarity {imp['median']:.2f} (median), {imp['p95']:.2f} (95th "
        f"percentile), {imp['max']:.2f} (highest) against the minimum {s['min_similarity']:.2f}"
        if imp
        else ""
    )
    far = "n/a (no one to probe as a stranger)" if s["false_accept_rate"] is None else pct(s["false_accept_rate"])
    if not s.get("genuine_probes"):
        console.print(
            "  accuracy and false rejects cannot be estimated: nobody has a second photo to test recognition "
            "on (enroll 2 or more photos per person; later photos of a person may still come back unknown)"
        )
        console.print(f"  false accepts {far} of {s['impostor_probes']} faces probed as strangers{spread}")
    else:
        console.print(
            f"  cross-validated accuracy {pct(s['cv_accuracy'])}; at the threshold: accuracy {pct(s['accuracy'])}, "
            f"false rejects {pct(s['false_reject_rate'])}, false accepts {far}{spread}"
        )
    console.print(f"  report: {result.report_dir / 'report.md'}")


@people_app.command("versions")
def versions(
    json_out: Annotated[Path | None, json_option("the versions")] = None,
    csv_out: Annotated[Path | None, csv_option("one row per version")] = None,
) -> None:
    """List recognizer versions.

    All are kept: see `emolens people restore`."""
    from rich.table import Table

    from emolens.cli.console import console, fail
    from emolens.core.errors import EmoLensError

    to_stdout = machine_to_stdout(json_out, csv_out)
    try:
        rows = enrolled_people().versions()
    except EmoLensError as exc:
        fail(exc)
    dicts = [v.to_dict() for v in rows]
    if not (emit_json(json_out, dicts) and emit_csv(csv_out, dicts)):
        raise typer.Exit(1)
    if to_stdout:
        return
    table = Table("version", "active", "created", "classifier", "people", "faces", "threshold", "cv accuracy")
    for v in rows:
        acc = v.metrics.get("cv_accuracy")
        table.add_row(
            f"v{v.version}",
            "●" if v.active else "",
            f"{v.created_at:%Y-%m-%d %H:%M}",
            v.kind,
            str(v.n_people),
            str(v.n_embeddings),
            f"{v.threshold:.2f}",
            "" if acc is None else f"{acc:.1%}",
        )
    console.print(table)


@people_app.command("restore")
def restore(version: Annotated[str, typer.Argument(help="A version number, e.g. 3 or v3.")]) -> None:
    """Make an earlier recognizer version active again."""
    from emolens.cli.console import console, fail
    from emolens.core.errors import EmoLensError

    try:
        info = enrolled_people().restore(int(version.lstrip("vV")))
    except ValueError:
        fail(EmoLensError(f"{version!r} is not a version number (e.g. 3 or v3)"))
    except EmoLensError as exc:
        fail(exc)
    console.print(f"v{info.version} is active ({info.kind}, threshold {info.threshold:.2f})")


def identify(
    paths: Annotated[list[str], typer.Argument(help="Photos, folders (searched recursively) or globs.")],
    threshold: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Override the version's recommended threshold.")
    ] = None,
    json_out: Annotated[Path | None, json_option("the results (one object for one photo, a list for several)")] = None,
    csv_out: Annotated[Path | None, csv_option("one row per face")] = None,
) -> None:
    """Say who is in each photo: an enrolled person, or "unknown".

    Takes files, folders and globs as `emolens analyze` does. A file that cannot be read is listed
    and the others go on (exit code 1)."""
    from rich.markup import escape

    from emolens.cli.console import console, err, fail
    from emolens.core.errors import BadImageError, EmoLensError
    from emolens.image.io import iter_image_paths

    to_stdout = machine_to_stdout(json_out, csv_out)
    try:
        files = iter_image_paths(paths)
        if not files:
            raise EmoLensError(f"no images found in: {' '.join(paths)}")
        people = enrolled_people()
    except EmoLensError as exc:
        fail(exc)
    several = len(files) > 1 or any(Path(p).is_dir() for p in paths)
    records, failed = [], 0
    for image in files:
        try:
            matches = people.identify(image, threshold=threshold)
        except BadImageError as exc:  # this file only; a missing model or extra stops the run below
            failed += 1
            err.print(f"[red]✗[/red] {escape(str(exc))}")
            continue
        except EmoLensError as exc:
            fail(exc)
        records.append({"source": str(image), "faces": [m.to_dict() for m in matches]})
        if to_stdout:
            continue
        where = f"{image}: " if several else ""
        if not matches:
            err.print(f"{escape(str(image))}: no face found")
        for i, m in enumerate(matches):
            box = ", ".join(f"{v:.0f}" for v in m.box)
            head = f"{escape(where)}face {i} [{box}]"
            if m.error:
                console.print(f"{head}: [red]{escape(m.error)}[/red]", soft_wrap=True)
            elif m.known:
                console.print(
                    f"{head}: {escape(m.key)} ({escape(m.name or '')}) "
                    f"confidence {m.confidence:.2f}, similarity {m.similarity:.2f}",
                    soft_wrap=True,  # a long file name is never broken across lines
                )
            else:  # the similarity often decides: a confident classifier but a face unlike any enrolled one
                sim = "n/a" if m.similarity is None else f"{m.similarity:.2f}"
                console.print(f"{head}: unknown (best confidence {m.confidence:.2f}, similarity {sim})", soft_wrap=True)
    rows = [{"source": r["source"], "face": i} | f for r in records for i, f in enumerate(r["faces"])]
    written = emit_json(json_out, records if several else records[0] if records else {})
    if not (emit_csv(csv_out, rows) and written):
        raise typer.Exit(1)
    if failed:
        err.print(f"{len(records)} images identified, {failed} failed")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``emolens`` app."""
    app.add_typer(people_app, name="people")
    app.command("identify")(identify)
