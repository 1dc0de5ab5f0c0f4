"""`emolens evaluate`: a model or an ensemble measured on labelled faces.

The measuring, the checks of the options and the saving of thresholds and rules are the API's
(``emolens.evaluate.evaluation``); this command renders its ``EvaluationReport``. Its defaults are
``evaluate_dataset``'s.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from emolens.cli.console import console, err, fail, human_to_stderr
from emolens.cli.outputs import emit_json, json_option
from emolens.core.errors import EmoLensError
from emolens.core.fileio import refuse_package
from emolens.evaluate.evaluation import EvaluationReport, check_evaluation, evaluate_dataset


def _defaults(fn) -> dict:
    return {name: p.default for name, p in inspect.signature(fn).parameters.items()}


_API, _CHECK = _defaults(evaluate_dataset), _defaults(check_evaluation)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``emolens`` app."""
    app.command()(evaluate)


def evaluate(
    model: Annotated[str, typer.Argument(help="Model name or .onnx path, or an ensemble: fast+accurate.")],
    data: Annotated[
        Path, typer.Argument(help="Labelled data: .npz of crops, class folders of photos, FER2013 or labels CSV.")
    ],
    json_out: Annotated[Path | None, json_option("the metrics")] = None,
    more: Annotated[
        list[str] | None, typer.Option("--model", help="Another ensemble member (repeatable); probabilities averaged.")
    ] = None,
    tta: Annotated[
        bool, typer.Option("--tta", help="Test-time augmentation: average over each crop and its mirror.")
    ] = _API["tta"],
    tta_shift: Annotated[
        int,
        typer.Option(min=0, max=64, help="With --tta, also average over shifts of this many pixels (4 more views)."),
    ] = _API["tta_shift"],
    target_precision: Annotated[
        float | None,
        typer.Option(
            min=0.0, max=1.0, help="Choose per-class thresholds: each predicted class reaches this precision."
        ),
    ] = _API["target_precision"],
    target_coverage: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="Choose per-class thresholds: each predicted class keeps this share."),
    ] = _API["target_coverage"],
    save_thresholds: Annotated[
        bool,
        typer.Option(
            "--save-thresholds", help="Write the chosen thresholds into the model file (in place, atomically)."
        ),
    ] = _CHECK["save_thresholds"],
    thresholds_out: Annotated[
        Path | None, typer.Option(help="With --save-thresholds: write a new model file here instead.")
    ] = _CHECK["thresholds_out"],
    report_dir: Annotated[
        Path | None, typer.Option("--report", help="Folder for report.md, report.html, metrics.json and plots.")
    ] = None,
    rule: Annotated[
        list[str] | None,
        typer.Option(
            help="A post-processing rule to try, e.g. 'if contempt and happy >= 0.3 then happy' (repeatable)."
        ),
    ] = _API["rules"],
    save_rules: Annotated[
        bool,
        typer.Option("--save-rules", help="Write the --rule(s) into the model file, if they do not lower macro-F1."),
    ] = _CHECK["save_rules"],
    rules_out: Annotated[Path | None, typer.Option(help="With --save-rules: write a new model file here.")] = _CHECK[
        "rules_out"
    ],
    votes: Annotated[
        Path | None,
        typer.Option(
            help="FER+ votes of DATA (row for row) to score the FER+ majority labels as well; "
            "default: DATA_ferplus.npz beside an .npz DATA, when it exists."
        ),
    ] = _API["votes"],
    degrade: Annotated[
        bool,
        typer.Option(
            "--degrade",
            help="Also measure under the seeded camera degradations (blur, low resolution, JPEG, noise, "
            "exposure, contrast, webcam, CCTV): accuracy and macro-F1 each, and the robustness score.",
        ),
    ] = _API["degrade"],
) -> None:
    """Measure a model or an ensemble on labelled faces.

    Prints accuracy, macro-F1, per-class precision, recall and F1, confusion, calibration (ECE) and
    accuracy against coverage; optionally with test-time augmentation, and per-class thresholds
    below which the model answers "uncertain".

    Photos are detected and aligned first; images without a face are listed, not counted."""
    import shlex

    human_to_stderr(json_out)
    save = save_thresholds or thresholds_out is not None
    keep_rules = save_rules or rules_out is not None
    options = {"tta": tta, "tta_shift": tta_shift, "target_precision": target_precision}
    options |= {"target_coverage": target_coverage, "rules": rule or None}
    status = None

    def note(text: str) -> None:  # the degradations take a while: say which one runs
        nonlocal status
        if status is None:
            status = console.status(text)
            status.start()
        status.update(text)

    try:
        for place in (report_dir, thresholds_out, rules_out):
            if place is not None:
                refuse_package(place)
        check_evaluation(
            [model, *(more or [])],
            **options,
            save_thresholds=save,
            thresholds_out=thresholds_out,
            save_rules=keep_rules,
            rules_out=rules_out,
        )
        report = evaluate_dataset([model, *(more or [])], data, **options, votes=votes, degrade=degrade, note=note)
    except EmoLensError as exc:
        fail(exc)
    finally:
        if status is not None:
            status.stop()
    for line in report.not_counted:
        err.print(f"[yellow]not counted[/yellow] {escape(line)}")
    _print_report(report)
    if keep_rules:
        try:
            target = report.save_rules(rules_out)
        except EmoLensError as exc:
            fail(exc, 3 if not report.rules["accepted"] else 2)
        console.print(f"rules saved in {escape(str(target))}: the analyzer applies them from now on")
    if save:
        try:
            target = report.save_thresholds(thresholds_out)
        except EmoLensError as exc:
            fail(exc)
        console.print(f'thresholds saved in {escape(str(target))}: the analyzer now answers "uncertain" below them')
    data_out = report.to_dict()
    if not emit_json(json_out, data_out):
        raise typer.Exit(1)
    if report_dir:
        from emolens.evaluate.report import write_report

        argv = ["emolens", "evaluate", *sys.argv[sys.argv.index("evaluate") + 1 :]] if "evaluate" in sys.argv else []
        try:
            paths = write_report(data_out, report_dir, command=shlex.join(argv) if argv else "")
        except EmoLensError as exc:
            fail(exc)
        console.print(f"report: {escape(str(paths['markdown']))} and {escape(str(paths['html']))}")


def _print_report(report: EvaluationReport) -> None:
    """The tables and lines of one evaluation: per class, the variants, the headline, FER+,
    the degradations, the thresholds and the rules."""
    table = Table("class", "precision", "recall", "F1", "support")
    for c, s in report.per_class.items():
        table.add_row(c, f"{s.precision:.3f}", f"{s.recall:.3f}", f"{s.f1:.3f}", str(s.support))
    console.print(table)
    if report.variants:
        variants = Table("model", "TTA", "accuracy", "macro-F1", "ECE", "acc@90%", "acc@80%")
        for v in report.variants:
            variants.add_row(
                escape(v["name"]),
                "yes" if v["tta"] else "no",
                *(f"{v[k]:.4f}" for k in ("accuracy", "macro_f1", "ece", "accuracy_at_0.9", "accuracy_at_0.8")),
            )
        console.print(variants)
    cov, skipped = report.accuracy_at_coverage, report.not_counted
    console.print(
        f"accuracy {report.accuracy:.4f}   macro-F1 {report.macro_f1:.4f}   n={report.n}"
        + (f"   ({len(skipped)} images without a usable face not counted)" if skipped else "")
    )
    console.print(
        f"ECE {report.ece:.4f} (15 bins)   accuracy at 90% coverage {cov['0.9']:.4f}, at 80% {cov['0.8']:.4f}"
    )
    if report.dropped_labels:
        console.print(f"model outputs the data cannot have, left out before the argmax: {report.dropped_labels}")
    if report.ferplus:
        fp = report.ferplus
        console.print(
            f"FER+ majority labels ({escape(Path(fp['votes']).name)}): accuracy {fp['accuracy']:.4f}   "
            f"macro-F1 {fp['macro_f1']:.4f}   ECE {fp['ece']:.4f}   n={fp['n']}"
            + (f"   ({fp['n_unscorable']} faces of classes the model lacks not scored)" if fp["n_unscorable"] else "")
        )
    if report.robustness:
        _print_robustness(report.robustness)
    th = report.thresholds
    if th:
        limits = ", ".join(f"{c} {t:.3f}" for c, t in th["thresholds"].items())
        cross = th.get("cross_fit") or {}
        console.print(
            f"per-class thresholds ({th['rule']} {th['target']:g}): {limits}\n"
            f"with them: coverage {th['coverage']:.1%}, accuracy {th['accuracy'] or 0:.4f} on answered faces"
            + (
                f" (chosen on one half, measured on the other: coverage {cross['coverage']:.1%}, "
                f"accuracy {cross['accuracy'] or 0:.4f})"
                if cross
                else ""
            )
            + (
                f"; target not reached for {', '.join(th['unreachable'])} (always uncertain)"
                if th["unreachable"]
                else ""
            )
        )
    if report.rules:
        _print_rules(report.rules)


def _print_rules(guard: dict) -> None:
    """The guard's report: what each post-processing rule changed, and the verdict."""
    table = Table("rule", "answered", "changed", "made right", "made wrong", "Δ accuracy", "Δ macro-F1")
    for r in [*guard["per_rule"], {"rule": "all together", **guard["together"]}]:
        table.add_row(
            escape(r["rule"]),
            str(r["answered"]),
            str(r["changed"]),
            str(r["made_right"]),
            str(r["made_wrong"]),
            f"{r['accuracy_change']:+.4f}",
            f"{r['macro_f1_change']:+.4f}",
        )
    title = "the model's own rules" if guard.get("from_model") else "post-processing rules"
    console.print(f"{title} on {guard['n']} labelled faces (macro-F1 without them {guard['base']['macro_f1']:.4f}):")
    console.print(table)
    if guard["accepted"]:
        console.print("[green]accepted[/green]: no rule lowers macro-F1")
    else:
        console.print(f"[red]refused[/red]: {escape(guard['reason'])}")


def _print_robustness(rob: dict) -> None:
    table = Table("degradation", "accuracy", "macro-F1", "drop (points)")
    table.add_row("none", f"{rob['clean']['accuracy']:.4f}", f"{rob['clean']['macro_f1']:.4f}", "")
    for r in rob["degradations"]:
        table.add_row(r["degradation"], f"{r['accuracy']:.4f}", f"{r['macro_f1']:.4f}", f"{r['drop_points']:.1f}")
    console.print(table)
    console.print(
        f"robustness score (mean accuracy over {len(rob['degradations'])} degradations) {rob['score']:.4f}   "
        f"worst single drop {rob['worst_single']:.1f} points, worst combination {rob['worst_combination']:.1f}"
    )
