"""`emolens feedback ...`, `emolens finetune` and `emolens models ...`: learning from corrections."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from emolens.cli.console import build_analyzer, console, err, fail, feedback_service, require_inputs, workspace
from emolens.cli.outputs import csv_option, emit_csv, emit_json, json_option, machine_to_stdout, output_place
from emolens.core.errors import EmoLensError

feedback = typer.Typer(
    help="Store corrections of wrong predictions. Confirmations of right ones too.", no_args_is_help=True
)
models = typer.Typer(help="Emotion models: list them, promote a version, roll back.", invoke_without_command=True)


@feedback.command("add")
def add(
    image: Annotated[Path, typer.Argument(help="The photo the face is in.")],
    label: Annotated[str | None, typer.Option("--label", "-l", help="What the emotion really is.")] = None,
    correct: Annotated[bool, typer.Option("--correct", help="The prediction was right.")] = False,
    face: Annotated[
        int,
        typer.Option("--face", "-f", min=0, max=10_000, help="Which face: its index in `emolens analyze` (from 0)."),
    ] = 0,
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

    if (label is None) == (not correct):
        fail(EmoLensError("give either --label EMOTION or --correct"))
    try:
        store = feedback_service()
        if label:
            store.check_label(label)  # before the (slower) analysis
        results = build_analyzer(model)(image)
        rec = store.add_from_results(
            results, face, label, correct=correct, keep_image=keep_image, source="cli", user_id=user,
            person=person, upload_session=session,
        )  # fmt: skip
        split = store.split()  # the one split fine-tuning uses
    except EmoLensError as exc:
        fail(exc)
    said = f"uncertain ({rec.predicted})" if rec.uncertain else rec.predicted
    verb = f"corrected {said} → {rec.label}" if rec.is_correction else f"confirmed {rec.label}"
    part = "held out" if any(r.uid == rec.uid for r in split.holdout) else "for training"
    console.print(
        f"face {face}: {verb} (record {rec.uid}, {part}); held out for judging fine-tuned models: "
        f"{len(split.holdout)} record(s) in {split.groups('holdout')} group(s)"
    )


@feedback.command("list")
def list_(
    limit: Annotated[int, typer.Option(min=1, max=1_000_000, help="Show at most this many (newest first).")] = 20,
    label: Annotated[str | None, typer.Option(help="Only this true label.")] = None,
    corrections: Annotated[bool, typer.Option("--corrections", help="Only corrections.")] = False,
    json_out: Annotated[Path | None, json_option("the records")] = None,
    csv_out: Annotated[Path | None, csv_option("one row per record")] = None,
) -> None:
    """The stored feedback, newest first."""

    to_stdout = machine_to_stdout(json_out, csv_out)
    try:
        records = feedback_service().list(limit=limit, label=label, corrections_only=corrections)
    except EmoLensError as exc:
        fail(exc)
    dicts = [r.to_dict() for r in records]
    if not (emit_json(json_out, dicts) and emit_csv(csv_out, dicts)):
        raise typer.Exit(1)
    if to_stdout:
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
def stats(json_out: Annotated[Path | None, json_option("the counts")] = None) -> None:
    """Count the stored feedback.

    Corrections and confirmations, per label, the commonest mistakes, per source."""
    from emolens.feedback.learn import Gates

    to_stdout = machine_to_stdout(json_out)
    try:
        st = feedback_service().stats()
    except EmoLensError as exc:
        fail(exc)
    if not emit_json(json_out, st):
        raise typer.Exit(1)
    if to_stdout:
        return
    console.print(
        f"{st['total']} record(s): {st['corrections']} correction(s), {st['confirmations']} confirmation(s); "
        f"held out for judging fine-tuned models: {st['holdout']} in {st['holdout_groups']} independent "
        f"group(s) (the gate needs at least {Gates().min_holdout_groups}), {st['train']} to train on"
    )
    for title, key in (
        ("true label", "by_label"),
        ("mistake (predicted → true)", "confusions"),
        ("source", "by_source"),
        ("corrections of model", "by_model"),
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

    try:
        output_place(folder, "feedback")
        out = feedback_service().export(folder)
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

    try:
        report = feedback_service().import_streamlit(folder, user_id=user)
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

    try:
        result = feedback_service().check(repair=repair)
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

    try:
        feedback_service().delete(uid)
    except EmoLensError as exc:
        fail(exc)
    console.print(f"removed {uid}")


def finetune(
    from_feedback: Annotated[bool, typer.Option("--from-feedback", help="Fine-tune a model on the feedback.")] = False,
    base: Annotated[
        str | None,
        typer.Option(
            "--base", help="Model to fine-tune (v3, accurate); default: the one most corrections were made against."
        ),
    ] = None,
    replay: Annotated[
        Path | None, typer.Option(help="Base training data to replay (default EMOLENS_REPLAY_DATA).")
    ] = None,
    base_val: Annotated[
        Path | None, typer.Option(help="Fixed validation set of the gate (default EMOLENS_BASE_VAL_DATA).")
    ] = None,
    minimum: Annotated[
        int | None, typer.Option("--min", min=0, max=10**9, help="Refuse below this many corrections.")
    ] = None,
    epochs: Annotated[int, typer.Option(min=1, max=1000, help="Fine-tuning epochs.")] = 6,
    lr: Annotated[
        float, typer.Option(min=1e-9, max=1.0, help="Peak learning rate (low: it starts from trained weights).")
    ] = 2e-4,
    replay_size: Annotated[int, typer.Option(min=0, max=10**8, help="Replayed faces from the base data.")] = 6000,
    max_base_drop: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Gate: base accuracy may drop at most this much.")
    ] = 0.01,
    min_gain: Annotated[
        float,
        typer.Option(
            min=-1.0, max=1.0, help="Gate: the low end of the held-out gain's 95% interval must be above this."
        ),
    ] = 0.0,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Promote without asking when the gates pass.")] = False,
) -> None:
    """Fine-tune a model on stored corrections.

    The model the corrections were made against, unless --base names another; the new version is
    promoted only if it measures better."""
    if not from_feedback:
        fail(EmoLensError("say what to learn from: --from-feedback"))
    require_inputs(replay=replay, base_val=base_val)
    from emolens.feedback.learn import FinetuneOptions, Gates, finetune_from_feedback

    ws = workspace()
    settings = ws.settings  # the settings give the defaults of the options

    shown = []

    def show(outcome) -> None:  # the whole report, once, before any question
        from rich.markdown import Markdown

        from emolens.feedback.learn import render_report

        if not shown:
            console.print(Markdown(render_report(outcome)))
            shown.append(outcome.candidate)

    def ask(outcome) -> bool:
        show(outcome)
        return yes or typer.confirm(f"gates passed: make {outcome.candidate} the active model?", default=False)

    try:
        outcome = finetune_from_feedback(
            feedback_service(),
            ws.registry,
            replay=replay or settings.replay_data,
            base_val=base_val or settings.base_val_data,
            min_feedback=settings.min_feedback if minimum is None else minimum,
            base=base,
            options=FinetuneOptions(epochs=epochs, lr=lr, replay_size=replay_size),
            gates=Gates(min_feedback_gain=min_gain, max_base_drop=max_base_drop),
            promote=ask,
            on_plan=lambda plan: console.print(plan.describe()),
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


JSON_OPTION = json_option("the models and the registry's versions (paths whole)")
CSV_OPTION = csv_option("one row per model by name")


@models.callback()
def models_main(
    ctx: typer.Context,
    json_out: Annotated[Path | None, JSON_OPTION] = None,
    csv_out: Annotated[Path | None, CSV_OPTION] = None,
) -> None:
    """Emotion models by name (shipped and user models) and the registry's versions."""
    if ctx.invoked_subcommand is None:
        list_models(json_out, csv_out)


_ACCURACY_CAPTION = (
    "accuracy from each model's card, on the data it names (FER2013 PublicTest for the shipped models): FER+ = the "
    "majority of 10 annotators, FER2013 = the original label, subtle = faces whose FER2013 label is an emotion "
    "while the FER+ majority says neutral"
)


def _card_accuracies(card: dict) -> dict:
    """The card's accuracies, FER+ majority first: the figure that says most about real photos."""
    m = card.get("metrics", {})
    return {
        "ferplus_accuracy": (m.get("ferplus") or {}).get("accuracy"),
        "accuracy": m.get("accuracy"),
        "subtle_accuracy": (m.get("subtle") or {}).get("accuracy"),
    }


@models.command("list")
def list_models(
    json_out: Annotated[Path | None, JSON_OPTION] = None, csv_out: Annotated[Path | None, CSV_OPTION] = None
) -> None:
    """List the models available by name and the registry's versions.

    The active version is marked."""
    models = workspace().models
    named = []
    for name, path in models.available().items():
        try:
            m = models.load(path)
            spec = m.meta.input
            named.append({"name": name, "labels": m.labels, "input": f"{spec.size}x{spec.size}x{spec.channels}",
                          **_card_accuracies(m.card), "path": str(path), "error": None})  # fmt: skip
        except EmoLensError as exc:
            named.append({"name": name, "labels": None, "input": None, **_card_accuracies({}), "path": str(path),
                          "error": str(exc)})  # fmt: skip
    from emolens.models.catalog import ROUTED

    by_name = {m["name"]: m for m in named}
    for name, routes in ROUTED.items():  # a route, not a file: each face goes to one of two models
        clear = by_name.get(routes.clear, {})
        named.append({"name": name, "labels": clear.get("labels"), "input": clear.get("input"), "accuracy": None,
                      "ferplus_accuracy": None, "subtle_accuracy": None, "path": None, "error": None,
                      "routes": {"clear": routes.clear, "poor": routes.poor}})  # fmt: skip
    versions = models.registry.versions()
    to_stdout = machine_to_stdout(json_out, csv_out)
    if json_out or csv_out:
        registry = [
            {"version": v.name, "active": v.active, "parent": v.parent, "source": v.source, "created": v.created_at,
             "promoted": v.promoted, "metrics": v.metrics, "path": str(v.path)}
            for v in versions
        ]  # fmt: skip
        if not (emit_json(json_out, {"models": named, "registry": registry}) and emit_csv(csv_out, named)):
            raise typer.Exit(1)
    if to_stdout:
        return
    _print_models(named, versions)


def _print_models(named: list[dict], versions: list) -> None:
    """Two tables that fit 80 columns: the models by name (their file; each folder and the common
    labels once, below), and the registry's versions. Accuracy: FER+ first, then FER2013, then the
    subtle expressions."""
    from rich import box

    from emolens.models import ASSETS

    label_sets = {tuple(m["labels"]) for m in named if m["labels"] and not m.get("routes")}
    common = label_sets.pop() if len(label_sets) == 1 else None
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for col in ("name", "labels", "input", "FER+", "FER2013", "subtle", "file"):
        table.add_column(col, overflow="fold")  # long names fold onto more lines, never cut
    for m in named:
        if m.get("routes"):  # a route, not a file
            r = m["routes"]
            table.add_row(m["name"], "", m["input"] or "", "", "", "", f"{r['clear']} or {r['poor']} ²")
            continue
        if m["error"]:  # the message whole below the table, not squeezed into a column
            table.add_row(m["name"], "[red]cannot load (below)[/red]", "", "", "", "", Path(m["path"]).name)
            continue
        labels = f"{len(common)} ¹" if common else str(len(m["labels"]))
        accs = [f"{a:.1%}" if a else "" for a in (m["ferplus_accuracy"], m["accuracy"], m["subtle_accuracy"])]
        table.add_row(m["name"], labels, m["input"], *accs, Path(m["path"]).name)
    console.print(table)
    if any(m["accuracy"] for m in named):
        console.print(_ACCURACY_CAPTION, soft_wrap=False)
    if common:
        console.print(f"¹ {' '.join(common)}")
    else:
        for m in named:
            if m["labels"] and not m.get("routes"):
                console.print(f"{escape(m['name'])}: {' '.join(m['labels'])}")
    for m in named:
        if m.get("routes"):
            r = m["routes"]
            console.print(f"² {m['name']}: clear faces to {r['clear']}, poor ones (soft, noisy) to {r['poor']}")
    for m in named:
        if m["error"]:
            console.print(f"[red]{escape(m['name'])}: {escape(m['error'])}[/red]", soft_wrap=True)
    folders: dict[Path, list[str]] = {}
    for m in named:
        if m["path"]:
            folders.setdefault(Path(m["path"]).parent, []).append(m["name"])
    for folder in folders:
        kind = "shipped models" if folder.resolve() == ASSETS.resolve() else "your models"
        console.print(f"{kind} in {escape(str(folder))}", soft_wrap=True)  # whole, for copying
    if not versions:
        console.print("registry: empty (the active model is the shipped `fast`)")
        return
    table = Table(title="registry", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for col in ("version", "state", "parent", "source", "created", "base acc", "feedback"):
        table.add_column(col, overflow="fold")
    for v in versions:
        m = v.metrics
        base = m.get("base_accuracy", m.get("accuracy"))
        fb = m.get("feedback_accuracy")
        table.add_row(
            v.name,
            "active" if v.active else "promoted" if v.promoted else "candidate",
            v.parent or "",
            v.source,
            str(v.created_at)[:10],
            f"{base:.2%}" if isinstance(base, float) else "",
            f"{fb:.2%}" if isinstance(fb, float) else "",
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
    try:
        v = workspace().registry.promote(version)
    except EmoLensError as exc:
        fail(exc)
    console.print(f"{v.name} is now active")


@models.command()
def rollback() -> None:
    """Make the previously active version active again."""
    try:
        v = workspace().registry.rollback()
    except EmoLensError as exc:
        fail(exc)
    console.print(f"rolled back: {v.name} is active again")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``emolens`` app."""
    app.add_typer(feedback, name="feedback")
    app.add_typer(models, name="models")
    app.command()(finetune)
