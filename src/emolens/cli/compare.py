"""`emolens compare A B DATA`: is B really better than A on labelled faces, or is it noise?"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from emolens.cli.console import console, err, fail, write_output
from emolens.cli.outputs import emit_json, json_option, machine_to_stdout, output_place
from emolens.core.errors import EmoLensError

SHEET_LIMIT = 120  # faces on the contact sheet: beyond that a PNG grows too tall to look through


def compare(
    a: Annotated[str, typer.Argument(help="Model A: a name, version, .onnx path or ensemble (fast+accurate).")],
    b: Annotated[str, typer.Argument(help="Model B, the same way.")],
    data: Annotated[
        Path, typer.Argument(help="Labelled data: .npz of crops, class folders of photos, FER2013 or labels CSV.")
    ],
    tta: Annotated[bool, typer.Option("--tta", help="Both models with mirror test-time augmentation.")] = False,
    confidence: Annotated[
        float, typer.Option(min=0.5, max=0.9999, help="Confidence of the intervals (and 1 - alpha of McNemar).")
    ] = 0.95,
    boot: Annotated[int, typer.Option(min=100, max=1_000_000, help="Bootstrap resamples.")] = 2000,
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1, help="Seed of the bootstrap.")] = 0,
    sheet: Annotated[
        Path | None, typer.Option(help="Contact sheet of the faces where they disagree (PNG); default: none.")
    ] = None,
    json_out: Annotated[Path | None, json_option("every figure")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Write the table as Markdown.")] = None,
) -> None:
    """Compare two models on the same labelled faces.

    Accuracy and macro-F1 with paired bootstrap confidence intervals, per-class recall differences,
    McNemar's test on the paired answers, and the faces where they disagree. Photos are detected and
    aligned first; faces of a class the models do not have (contempt, say) are not scored."""
    import numpy as np

    from emolens.data import load_dataset
    from emolens.data.datasets import to_crops
    from emolens.evaluate import compare_models, contact_sheet, load_members, model_names
    from emolens.evaluate.compare import count_phrase

    machine_to_stdout(json_out)
    try:
        for place in (sheet, markdown):
            if place is not None:
                output_place(place, "compare")
        if boot < 100:
            raise EmoLensError(f"--boot must be at least 100 resamples, not {boot}")
        members = load_members(model_names(a) + model_names(b))
        specs = [m.meta.input for m in members]
        dataset = load_dataset(data)
        # Before any detection: faces of a class the models lack are left out, and counted.
        not_scored = {c: n for c, n in dataset.counts().items() if n and c not in members[0].labels}
        if not_scored:
            known = [i for i, c in enumerate(dataset.classes) if c in members[0].labels]
            if not known:
                raise EmoLensError(
                    f"{data}: none of its classes {dataset.classes} is among the models' labels {members[0].labels}"
                )
            dataset = dataset.subset(np.flatnonzero(np.isin(dataset.labels, known)))
            err.print(
                f"[yellow]not scored[/yellow] {escape(count_phrase(not_scored))} face(s): not among the models' labels"
            )
        size, channels = max(s.size for s in specs), max(s.channels for s in specs)
        crops, labels, skipped = to_crops(dataset, size, channels, progress=True)
        if len(labels) == 0:
            raise EmoLensError(f"{data}: no labelled face to compare on")
        cmp, pa, pb = compare_models(
            a, b, crops, labels, dataset.classes, tta=tta, confidence=confidence, n_boot=boot, seed=seed
        )
        cmp.not_scored = not_scored | cmp.not_scored
    except EmoLensError as exc:
        fail(exc)
    for line in skipped:
        err.print(f"[yellow]not counted[/yellow] {escape(line)}")

    def ci(v: dict, scale: float = 100, fmt: str = ".2f", sign: str = "") -> str:
        return f"{scale * v['value']:{sign}{fmt}} [{scale * v['low']:{sign}{fmt}}, {scale * v['high']:{sign}{fmt}}]"

    table = Table("", escape(cmp.a), escape(cmp.b), escape(f"{cmp.b} − {cmp.a}"), title=f"n = {cmp.n}")
    table.add_row("accuracy (%)", ci(cmp.accuracy["a"]), ci(cmp.accuracy["b"]), ci(cmp.accuracy["diff"], sign="+"))
    table.add_row(
        "macro-F1",
        ci(cmp.macro_f1["a"], 1, ".4f"),
        ci(cmp.macro_f1["b"], 1, ".4f"),
        ci(cmp.macro_f1["diff"], 1, ".4f", "+"),
    )
    for c, r in cmp.per_class_recall.items():
        table.add_row(f"recall {c} (%)", ci(r["a"]), ci(r["b"]), ci(r["diff"], sign="+"))
    console.print(table)
    m = cmp.mcnemar
    console.print(
        f"McNemar: {m['a_only']} faces only {escape(cmp.a)} gets right, {m['b_only']} only {escape(cmp.b)}; "
        f"p = {m['p_value']:.3g}; {len(cmp.disagree)} faces answered differently"
    )
    console.print(f"{cmp.confidence:.0%} intervals from {cmp.n_boot} paired bootstrap resamples")
    console.print(f"[bold]{escape(cmp.verdict)}[/bold]")
    out = cmp.to_dict()
    out.update(dataset=str(data), tta=tta, not_counted=skipped)
    if sheet:
        ref = cmp.labels
        y = np.array([ref.index(dataset.classes[i]) for i in labels])
        try:
            out["sheet"] = str(contact_sheet(crops, cmp, pa, pb, y, sheet, limit=SHEET_LIMIT))
            out["sheet_shown"] = min(SHEET_LIMIT, len(cmp.disagree))
            console.print(f"disagreements: {escape(out['sheet'])} ({out['sheet_shown']} of {len(cmp.disagree)} shown)")
        except (EmoLensError, OSError) as exc:
            err.print(f"[yellow]no contact sheet:[/yellow] {escape(str(exc))}")
    ok = emit_json(json_out, out)
    if markdown:
        ok &= write_output(markdown, cmp.to_markdown())
    if not ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``emolens`` app."""
    app.command()(compare)
