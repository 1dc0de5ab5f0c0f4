"""`emolens feedback ...`, `emolens finetune` and `emolens models ...`: learning from corrections."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from emolens.cli.console import console, err, fail, human_to_stderr
from emolens.errors import EmoLensError

feedback = typer.Typer(
    help="Store corrections of wrong predictions. Confirmations of right ones too.", no_args_is_help=True
)
models = typer.Typer(help="Emotion models: list them, promote a version, roll back.", invoke_without_command=True)


@feedback.command("add")
def add(
    image: Annotated[Path, typer.Argument(help="The photo the face is in.")],
    label: Annotated[str | None, typer.Option("--label", "-l", help="What the emotion really is.")] = None,
    correct: Annotated[bool, typer.Option("--correct", help="The prediction was right.")] = False,
    face: Annotated[int, typer.Option("--face", "-f", help="Which face: its index in `emolens analyze` (from 0).")] = 0,
    keep_image: Annotated[
        bool, typer.Option("--keep-image", help="Store the whole photo too, not only the face.")
    ] = False,
    user: Annotated[str | None, typer.Option("--user", help="Who says so (optional).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model whose prediction is judged.")] = None,
    person: Annotated[
        str | None, typer.Option(help="Who the face is, when known: keeps a person's faces on one side of the split.")
    ] = None,
    session: Annotated[str | None, typer.Option(help="An upload session that ties these faces together.")] = None,
) -> None:
    """Correct or confirm the emotion of a face.

    Say what the emotion of face --face in IMAGE really is (--label) or that it was right (--correct)."""
    from emolens.analyzer import Analyzer
    from emolens.feedback import FeedbackService

    if (label is None) == (not correct):
        fail(EmoLensError("give either --label EMOTION or --correct"))
    try:
        store = FeedbackService()
        if label:
            store.check_label(label)  # before the (slower) analysis
        results = Analyzer(model=model)(image)
        rec = store.add_from_results(
            results, face, label, correct=correct, keep_image=keep_image, source="cli", user_id=user,
            person=person, upload_session=session,
        )  # fmt: skip
    except EmoLensError as exc:
        fail(exc)
    verb = f"corrected {rec.predicted} → {rec.label}" if rec.is_correction else f"confirmed {rec.label}"
    console.print(f"face {face}: {verb} (record {rec.uid}, {'held out' if rec.holdout else 'for training'})")


@feedback.command("list")
def list_(
    limit: Annotated[int, typer.Option(min=1, max=1_000_000, help="Show at most this many (newest first).")] = 20,
    label: Annotated[str | None, typer.Option(help="Only this true label.")] = None,
    corrections: Annotated[bool, typer.Option("--corrections", help="Only corrections.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
) -> None:
    """The stored feedback, newest first."""
    from emolens.feedback import FeedbackService

    try:
        records = FeedbackService().list(limit=limit, label=label, corrections_only=corrections)
    except EmoLensError as exc:
        fail(exc)
    if as_json:
        for r in records:
            print(json.dumps(r.to_dict()))
        return
    table = Table("record", "time", "predicted", "label", "confidence", "part", "source")
    for r in records:
        conf = f"{r.confidence:.2f}" if r.confidence is not None else ""
        part = "held out" if r.holdout else "train"
        table.add_row(
            r.uid[:12], r.created_at.strftime("%Y-%m-%d %H:%M"), r.predicted or "", r.label, conf, part, r.source
        )
    console.print(table)


@feedback.command()
def stats(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Count the stored feedback.

    Corrections and confirmations, per label, the commonest mistakes, per source."""
    from emolens.feedback import FeedbackService

    try:
        st = FeedbackService().stats()
    except EmoLensError as exc:
        fail(exc)
    if as_json:
        print(json.dumps(st, indent=2))
        return
    console.print(
        f"{st['total']} record(s): {st['corrections']} correction(s), {st['confirmations']} confirmation(s), "
        f"{st['holdout']} held out for judging fine-tuned models"
    )
    for title, key in (
        ("true label", "by_label"),
        ("mistake (predicted → true)", "confusions"),
        ("source", "by_source"),
    ):
        if st[key]:
            table = Table(title, "records")
            for k, v in st[key].items():
                table.add_row(k, str(v))
            console.print(table)


@feedback.command()
def export(
    folder: Annotated[Path, typer.Argument(help="Folder to write images/<label>/*.png and feedback.csv to.")],
) -> None:
    """Export the feedback as an image folder and a CSV.

    The folder is usable as a training dataset."""
    from emolens.feedback import FeedbackService

    try:
        out = FeedbackService().export(folder)
    except (EmoLensError, OSError) as exc:
        fail(EmoLensError(str(exc)))
    console.print(f"wrote {out} and {folder / 'images'}")


@feedback.command("import")
def import_(
    folder: Annotated[
        Path, typer.Argument(help="Folder with feedback_log.csv and feedback_images/ (the Streamlit app).")
    ],
    user: Annotated[str | None, typer.Option("--user", help="Record these under this user id.")] = None,
) -> None:
    """Import the earlier Streamlit app's feedback.

    Bad rows are listed and skipped."""
    from emolens.feedback import FeedbackService

    try:
        report = FeedbackService().import_streamlit(folder, user_id=user)
    except EmoLensError as exc:
        fail(exc)
    for line in report.skipped:
        err.print(f"[yellow]skipped[/yellow] {escape(line)}")
    console.print(f"imported {report.imported} record(s), skipped {len(report.skipped)}")


@feedback.command()
def check(
    repair: Annotated[bool, typer.Option("--repair", help="Remove files no record refers to.")] = False,
) -> None:
    """Verify that every record's face crop is present and intact."""
    from emolens.feedback import FeedbackService

    try:
        result = FeedbackService().check(repair=repair)
    except EmoLensError as exc:
        fail(exc)
    console.print(
        f"{result['records']} record(s), {len(result['broken'])} broken, {result['orphans']} unreferenced file(s)"
        + (f", {result['removed']} removed" if repair else "")
    )
    if result["broken"]:
        raise typer.Exit(1)


@feedback.command()
def remove(uid: Annotated[str, typer.Argument(help="Record id (from `feedback list --json`).")]) -> None:
    """Delete one feedback record.

    Its files go too when no other record uses them."""
    from emolens.feedback import FeedbackService

    try:
        FeedbackService().delete(uid)
    except EmoLensError as exc:
        fail(exc)
    console.print(f"removed {uid}")


def finetune(
    from_feedback: Annotated[
        bool, typer.Option("--from-feedback", help="Fine-tune the active model on the feedback.")
    ] = False,
    replay: Annotated[
        Path | None, typer.Option(help="Base training data to replay (default EMOLENS_REPLAY_DATA).")
    ] = None,
    base_val: Annotated[
        Path | None, typer.Option(help="Fixed validation set of the gate (default EMOLENS_BASE_VAL_DATA).")
    ] = None,
    minimum: Annotated[int | None, typer.Option("--min", help="Refuse below this many corrections.")] = None,
    epochs: Annotated[int, typer.Option(help="Fine-tuning epochs.")] = 6,
    lr: Annotated[float, typer.Option(help="Peak learning rate (low: it starts from trained weights).")] = 2e-4,
    replay_size: Annotated[int, typer.Option(help="Replayed faces from the base data.")] = 6000,
    max_base_drop: Annotated[float, typer.Option(help="Gate: base accuracy may drop at most this much.")] = 0.01,
    min_gain: Annotated[
        float, typer.Option(help="Gate: the low end of the held-out gain's 95% interval must be above this.")
    ] = 0.0,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Promote without asking when the gates pass.")] = False,
) -> None:
    """Fine-tune the active model on stored corrections.

    The new version is promoted only if it measures better."""
    from emolens.learn import FinetuneOptions, Gates, finetune_from_feedback

    if not from_feedback:
        fail(EmoLensError("say what to learn from: --from-feedback"))

    shown = []

    def show(outcome) -> None:  # the whole report, once, before any question
        from rich.markdown import Markdown

        from emolens.learn import render_report

        if not shown:
            console.print(Markdown(render_report(outcome)))
            shown.append(outcome.candidate)

    def ask(outcome) -> bool:
        show(outcome)
        return yes or typer.confirm(f"gates passed: make {outcome.candidate} the active model?", default=False)

    try:
        outcome = finetune_from_feedback(
            replay=replay,
            base_val=base_val,
            min_feedback=minimum,
            options=FinetuneOptions(epochs=epochs, lr=lr, replay_size=replay_size),
            gates=Gates(min_feedback_gain=min_gain, max_base_drop=max_base_drop),
            promote=ask,
        )
    except EmoLensError as exc:
        fail(exc)
    show(outcome)
    if outcome.promoted:
        console.print(f"{outcome.candidate} is now active (undo: emolens models rollback)")
    else:
        why = "gates failed" if not outcome.passed else "not confirmed"
        console.print(f"{outcome.candidate} kept, not promoted ({why}); report: {outcome.report}")
        if not outcome.passed:
            raise typer.Exit(3)


JSON_OPTION = typer.Option("--json", help="Print JSON (paths and sources whole) instead of tables.")


@models.callback()
def models_main(ctx: typer.Context, as_json: Annotated[bool, JSON_OPTION] = False) -> None:
    """Emotion models by name (shipped and user models) and the registry's versions."""
    if ctx.invoked_subcommand is None:
        list_models(as_json)


@models.command("list")
def list_models(as_json: Annotated[bool, JSON_OPTION] = False) -> None:
    """List the models available by name and the registry's versions.

    The active version is marked."""
    from emolens.models import available_models, load_emotion_model
    from emolens.registry import Registry

    named = []
    for name, path in available_models().items():
        try:
            m = load_emotion_model(str(path))
            spec = m.meta.input
            acc = m.card.get("metrics", {}).get("accuracy")
            named.append({"name": name, "labels": m.labels, "input": f"{spec.size}x{spec.size}x{spec.channels}",
                          "accuracy": acc, "path": str(path), "error": None})  # fmt: skip
        except EmoLensError as exc:
            named.append({"name": name, "labels": None, "input": None, "accuracy": None, "path": str(path),
                          "error": str(exc)})  # fmt: skip
    from emolens.catalog import ROUTED

    by_name = {m["name"]: m for m in named}
    for name, routes in ROUTED.items():  # a route, not a file: each face goes to one of two models
        clear = by_name.get(routes.clear, {})
        named.append({"name": name, "labels": clear.get("labels"), "input": clear.get("input"), "accuracy": None,
                      "path": None, "error": None, "routes": {"clear": routes.clear, "poor": routes.poor}})  # fmt: skip
    versions = Registry().versions()
    human_to_stderr(as_json)
    if as_json:
        registry = [
            {"version": v.name, "active": v.active, "parent": v.parent, "source": v.source, "created": v.created_at,
             "promoted": v.promoted, "metrics": v.metrics, "path": str(v.path)}
            for v in versions
        ]  # fmt: skip
        print(json.dumps({"models": named, "registry": registry}, indent=2, default=str))
        return
    # Paths fold onto more lines rather than being cut; --json gives them on one line.
    table = Table()
    for col in ("name", "labels", "input", "accuracy", "path"):
        table.add_column(col, overflow="fold")
    for m in named:
        if m.get("routes"):
            r = m["routes"]
            route = f"clear faces to {r['clear']}, poor ones to {r['poor']}"
            table.add_row(m["name"], " ".join(m["labels"] or []), m["input"] or "", "", route)
        elif m["error"]:
            table.add_row(m["name"], f"[red]{escape(m['error'])}[/red]", "", "", m["path"])
        else:
            acc = m["accuracy"]
            table.add_row(m["name"], " ".join(m["labels"]), m["input"], f"{acc:.1%}" if acc else "", m["path"])
    console.print(table)
    if not versions:
        console.print("registry: empty (the active model is the shipped `fast`)")
        return
    table = Table(title="registry")
    for col in ("version", "active", "parent", "source", "created", "base acc", "feedback acc", "promoted"):
        table.add_column(col, overflow="fold")
    for v in versions:
        m = v.metrics
        base = m.get("base_accuracy", m.get("accuracy"))
        fb = m.get("feedback_accuracy")
        table.add_row(
            v.name,
            "●" if v.active else "",
            v.parent or "",
            v.source,
            v.created_at,
            f"{base:.2%}" if isinstance(base, float) else "",
            f"{fb:.2%}" if isinstance(fb, float) else "",
            "yes" if v.promoted else "no",
        )
    console.print(table)


@models.command()
def promote(
    version: Annotated[
        str, typer.Argument(help="Registry version (v3), or a model name (accurate) to register as the next version.")
    ],
) -> None:
    """Make VERSION the active model.

    The analyzer and the server pick it up without a restart.

    A model by name, e.g. the flagship `accurate`, becomes a new version: fine-tuning from
    feedback then starts from it, and `emolens models rollback` returns to the previous one."""
    from emolens.registry import Registry

    try:
        v = Registry().promote(version)
    except EmoLensError as exc:
        fail(exc)
    console.print(f"{v.name} is now active")


@models.command()
def rollback() -> None:
    """Make the previously active version active again."""
    from emolens.registry import Registry

    try:
        v = Registry().rollback()
    except EmoLensError as exc:
        fail(exc)
    console.print(f"rolled back: {v.name} is active again")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``emolens`` app."""
    app.add_typer(feedback, name="feedback")
    app.add_typer(models, name="models")
    app.command()(finetune)
