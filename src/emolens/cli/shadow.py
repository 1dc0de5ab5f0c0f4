"""`emolens models shadow report|promote`: the candidate that runs beside the active model in serving."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from emolens.cli.console import console, fail, workspace
from emolens.cli.outputs import emit_json, json_option, machine_to_stdout
from emolens.core.errors import EmoLensError

shadow = typer.Typer(
    help="A shadow model beside the served one: report, promote.\n\n"
    "Set EMOLENS_SHADOW_MODEL (and EMOLENS_SHADOW_SHARE) for `emolens serve`, then read how it compares "
    "and promote it.",
    no_args_is_help=True,
)


@shadow.command()
def report(
    active: Annotated[str | None, typer.Option(help="Active model version of the pair (default: latest).")] = None,
    model: Annotated[str | None, typer.Option("--shadow", help="Shadow model of the pair (default: latest).")] = None,
    json_out: Annotated[Path | None, json_option("the report")] = None,
) -> None:
    """Agreement between the active and the shadow model on served faces, the confusion between
    their answers, and, where users corrected faces they disagreed on, which was right more often."""

    to_stdout = machine_to_stdout(json_out)
    try:
        rep = workspace().shadow_store.report(active=active, shadow=model)
    except EmoLensError as exc:
        fail(exc)
    if not emit_json(json_out, rep):
        raise typer.Exit(1)
    if to_stdout:
        return
    if not rep["faces"]:
        console.print("no shadow comparisons stored yet (serve with EMOLENS_SHADOW_MODEL set)")
        return
    console.print(
        f"active {escape(rep['active'])} vs shadow {escape(rep['shadow'])}: {rep['faces']} faces in "
        f"{rep['analyses']} analyses, agreement {rep['agreement']:.1%} ({rep['disagreements']} disagreements)"
    )
    answers = sorted({k for row in rep["confusion"].values() for k in row} | set(rep["confusion"]))
    table = Table("active ↓ / shadow →", *answers, title="answers")
    for a in answers:
        row = rep["confusion"].get(a, {})
        table.add_row(a, *(str(row.get(b, 0)) if row.get(b) else "·" for b in answers))
    console.print(table)
    c = rep["corrections"]
    if c["corrected"]:
        who = {"active": rep["active"], "shadow": rep["shadow"], None: "neither, more often"}[c["more_often_right"]]
        console.print(
            f"corrected disagreements: {c['corrected']}; the active model was right {c['active_right']}, "
            f"the shadow {c['shadow_right']}, neither {c['neither_right']}: right more often: {escape(who)}"
        )
    else:
        console.print("no disagreement corrected by a user yet")
    if len(rep["pairs"]) > 1:
        console.print(
            "other pairs: " + ", ".join(f"{p['active']} vs {p['shadow']} ({p['faces']})" for p in rep["pairs"])
        )


@shadow.command()
def promote(
    model: Annotated[
        str | None, typer.Argument(help="The shadow model (default: EMOLENS_SHADOW_MODEL, as the server uses it).")
    ] = None,
    base_val: Annotated[
        Path | None, typer.Option(help="Fixed validation set of the gates (default EMOLENS_BASE_VAL_DATA).")
    ] = None,
    confidence: Annotated[
        float, typer.Option(min=0.5, max=0.9999, help="Confidence the shadow must be more accurate with.")
    ] = 0.95,
    max_base_drop: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Gate: base accuracy may drop at most this much.")
    ] = 0.01,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Promote without asking when the gates pass.")] = False,
) -> None:
    """Make the shadow model active, through the gates of fine-tuning (held-out feedback improves,
    base accuracy holds) and one more: more accurate on the base set with confidence, not by noise."""
    from emolens.feedback.learn import Gates
    from emolens.shadow.promote import promote_shadow

    try:
        outcome = promote_shadow(
            workspace(), model, base_val=base_val, gates=Gates(max_base_drop=max_base_drop), confidence=confidence
        )
    except EmoLensError as exc:
        fail(exc)
    table = Table("set", "faces", f"active ({escape(outcome.active)})", f"shadow ({escape(outcome.shadow)})")
    for name, m in outcome.metrics["active"].items():
        table.add_row(name, str(m["n"]), f"{m['accuracy']:.2%}", f"{outcome.metrics['shadow'][name]['accuracy']:.2%}")
    console.print(table)
    for name, g in outcome.gates.items():
        state = "[green]passed[/green]" if g["passed"] else "[red]failed[/red]"
        extra = f" p = {g['p_value']:.3g}" if "p_value" in g else f" ({g['skipped']})" if "skipped" in g else ""
        console.print(f"gate {name}: {state} ({g['change']:+.2%}){extra}")
    if not outcome.passed:
        console.print(f"{escape(outcome.shadow)} not promoted: gates failed")
        raise typer.Exit(3)
    if not (yes or typer.confirm(f"gates passed: make {outcome.shadow} the active model?", default=False)):
        console.print("not promoted (not confirmed)")
        return
    try:
        version = workspace().registry.promote(outcome.shadow)
    except EmoLensError as exc:
        fail(exc)
    console.print(f"{escape(outcome.shadow)} is now active as {version.name} (undo: emolens models rollback)")


def register(app: typer.Typer) -> None:
    """Add ``emolens models shadow`` under the ``models`` group."""
    from emolens.cli.feedback import models

    models.add_typer(shadow, name="shadow")
