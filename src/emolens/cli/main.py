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


class _App(typer.Typer):
    """The ``emolens`` app: an EmoLensError that no command caught (a missing extra met on import,
    say) still ends as one line and exit code 2, never a traceback."""

    def __call__(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except EmoLensError as exc:
            err.print(f"[red]error:[/red] {escape(str(exc))}")
            sys.exit(2)


app = _App(
    help="EmoLens: find faces and read their emotions, offline.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Click's plain help: paragraphs re-wrapped to the terminal, flags without a "<bool>" type.
    rich_markup_mode=None,
)
console = Console()
err = Console(stderr=True, soft_wrap=True)  # one message per line, file names never broken

EXAMPLE = Path(__file__).parents[1] / "assets" / "examples" / "astronaut.jpg"


def human_to_stderr(*targets: Path | str | bool | None) -> None:
    """When a machine format goes to stdout (``--json -``, ``--csv -``, a ``--json`` flag), send the
    human output (tables, notes) to stderr, so that stdout can be piped into a parser."""
    if any(t is True or (t is not None and t is not False and str(t) == "-") for t in targets):
        console.stderr = True


def fail(exc: EmoLensError, code: int = 2) -> None:
    err.print(f"[red]error:[/red] {escape(str(exc))}")
    raise typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        from emolens import __version__

        typer.echo(f"emolens {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the EmoLens version and exit."),
    ] = False,
) -> None:
    """EmoLens: find faces and read their emotions, offline."""
    console.stderr = False  # human output goes to stdout unless a command sends machine output there


def annotated_targets(files: list[Path], out: Path) -> list[Path]:
    """Where ``analyze --save`` writes each file's annotated copy: the input tree mirrored under
    ``out`` (``coll/a/x.jpg`` and ``coll/b/x.jpg`` become ``out/a/x_emolens.jpg`` and
    ``out/b/x_emolens.jpg``), every target distinct."""
    import os

    parents = [str(p.resolve().parent) for p in files]
    try:
        base = Path(os.path.commonpath(parents)) if parents else Path()
    except ValueError:  # different drives: no common folder to mirror
        base = None
    targets, used = [], set()
    for p, parent in zip(files, parents, strict=True):
        folder = out / Path(parent).relative_to(base) if base is not None else out
        target = folder / f"{p.stem}_emolens.jpg"
        if target in used:  # x.jpg and x.png in one folder
            target = folder / f"{p.stem}_{p.suffix.lstrip('.').lower()}_emolens.jpg"
        n = 2
        while target in used:
            target, n = folder / f"{p.stem}_emolens-{n}.jpg", n + 1
        used.add(target)
        targets.append(target)
    return targets


@app.command()
def analyze(
    paths: Annotated[
        list[str] | None, typer.Argument(help="Images, folders or globs. None: the built-in example photo.")
    ] = None,
    save: Annotated[
        Path | None, typer.Option(help="Folder for annotated images (input folders are mirrored inside it).")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write results as JSON ('-' for stdout).")] = None,
    csv_out: Annotated[
        Path | None, typer.Option("--csv", help="Write one row per face as CSV ('-' for stdout).")
    ] = None,
    detector: Annotated[str | None, typer.Option(help="Face detector: retinaface, dlib-hog, dlib-cnn, haar.")] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Emotion model: a name (see `emolens models`), an .onnx path, or an ensemble: fast+accurate."
        ),
    ] = None,
    tta: Annotated[
        bool | None, typer.Option("--tta/--no-tta", help="Also average the model(s) over the mirrored face.")
    ] = None,
    min_face_size: Annotated[int | None, typer.Option(help="Ignore faces smaller than this many pixels.")] = None,
    threshold: Annotated[float | None, typer.Option(help="Detection score threshold.")] = None,
    max_faces: Annotated[int | None, typer.Option(help="Keep at most this many faces per image.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the summary.")] = False,
) -> None:
    """Find every face in the images and tell how each one feels."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from emolens.analyzer import Analyzer
    from emolens.io import iter_image_paths

    if not paths:  # the demo: the built-in example photo, annotated copy written beside the user
        paths = [str(EXAMPLE)]
        save = save or Path("emolens-output")
        if not quiet:
            err.print(f"no image given: analyzing the built-in example {EXAMPLE.name}")
    try:
        files = iter_image_paths(paths)
    except EmoLensError as exc:
        fail(exc)
    if not files:
        fail(EmoLensError(f"no images found in: {' '.join(paths)}"))
    targets = dict(zip(files, annotated_targets(files, save), strict=True)) if save else {}
    replaced = 0
    try:
        analyzer = Analyzer(
            model=model,
            detector=detector,
            min_face_size=min_face_size,
            detection_threshold=threshold,
            max_faces=max_faces,
            tta=tta,
        )
        analyzer.warmup()  # fail now, not once per file, when a model or an extra is missing
    except EmoLensError as exc:
        fail(exc)

    to_stdout = "-" in (str(json_out), str(csv_out))
    human_to_stderr(json_out, csv_out)
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
                    replaced += targets[path].exists()
                    res.save(targets[path])
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
    if replaced:
        summary += f"; {replaced} annotated image{'s' if replaced != 1 else ''} from an earlier run replaced"
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
def detectors() -> None:
    """List the face detectors."""
    from emolens.detect import list_detectors

    for name in list_detectors():
        console.print(name)


@app.command()
def evaluate(
    model: Annotated[str, typer.Argument(help="Model name or .onnx path; several, comma-separated, are an ensemble.")],
    data: Annotated[
        Path, typer.Argument(help="Labelled data: .npz of crops, class folders of photos, FER2013 or labels CSV.")
    ],
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="Write the metrics as JSON ('-' for stdout; tables then go to stderr)."),
    ] = None,
    more: Annotated[
        list[str] | None, typer.Option("--model", help="Another ensemble member (repeatable); probabilities averaged.")
    ] = None,
    tta: Annotated[
        bool, typer.Option("--tta", help="Test-time augmentation: average over each crop and its mirror.")
    ] = False,
    tta_shift: Annotated[
        int, typer.Option(help="With --tta, also average over shifts of this many pixels (4 more views).")
    ] = 0,
    target_precision: Annotated[
        float | None, typer.Option(help="Choose per-class thresholds: each predicted class reaches this precision.")
    ] = None,
    target_coverage: Annotated[
        float | None, typer.Option(help="Choose per-class thresholds: each predicted class keeps this share.")
    ] = None,
    save_thresholds: Annotated[
        bool,
        typer.Option(
            "--save-thresholds", help="Write the chosen thresholds into the model file (in place, atomically)."
        ),
    ] = False,
    thresholds_out: Annotated[
        Path | None, typer.Option(help="With --save-thresholds: write a new model file here instead.")
    ] = None,
    report_dir: Annotated[
        Path | None, typer.Option("--report", help="Folder for report.md, report.html, metrics.json and plots.")
    ] = None,
    rule: Annotated[
        list[str] | None,
        typer.Option(
            help="A post-processing rule to try, e.g. 'if contempt and happy >= 0.3 then happy' (repeatable)."
        ),
    ] = None,
    save_rules: Annotated[
        bool,
        typer.Option("--save-rules", help="Write the --rule(s) into the model file, if they do not lower macro-F1."),
    ] = False,
    rules_out: Annotated[Path | None, typer.Option(help="With --save-rules: write a new model file here.")] = None,
    votes: Annotated[
        Path | None,
        typer.Option(
            help="FER+ votes of DATA (row for row) to score the FER+ majority labels as well; "
            "default: DATA_ferplus.npz beside an .npz DATA, when it exists."
        ),
    ] = None,
    degrade: Annotated[
        bool,
        typer.Option(
            "--degrade",
            help="Also measure under the seeded camera degradations (blur, low resolution, JPEG, noise, "
            "exposure, contrast, webcam, CCTV): accuracy and macro-F1 each, and the robustness score.",
        ),
    ] = False,
) -> None:
    """Measure a model or an ensemble on labelled faces.

    Prints accuracy, macro-F1, per-class precision, recall and F1, confusion, calibration (ECE) and
    accuracy against coverage; optionally with test-time augmentation, and per-class thresholds
    below which the model answers "uncertain".

    Photos are detected and aligned first; images without a face are listed, not counted."""
    import shlex

    from emolens.data import load_dataset
    from emolens.data.datasets import to_crops
    from emolens.evaluate import evaluate_arrays, model_names
    from emolens.evaluate.ferplus import evaluate_ferplus, ferplus_votes_for
    from emolens.evaluate.robustness import robustness

    human_to_stderr(json_out)
    save = save_thresholds or thresholds_out is not None
    keep_rules = save_rules or rules_out is not None
    tta = tta or tta_shift > 0
    try:
        names = model_names([model, *(more or [])])
        if keep_rules and not rule:
            raise EmoLensError("--save-rules needs the rules to try: --rule 'if A and B >= P then B'")
        if keep_rules and (len(names) > 1 or tta):
            raise EmoLensError("rules are saved into one model, judged without --tta: give a single model")
        if keep_rules and rules_out is None and not Path(names[0]).is_file():
            raise EmoLensError(
                f"{names[0]!r} is a model name, not a file: write a copy with --rules-out NEW.onnx "
                "(rules are written in place only into a model given by its path)"
            )
        if target_precision is not None and target_coverage is not None:
            raise EmoLensError("give --target-precision or --target-coverage, not both")
        if save and target_precision is None and target_coverage is None:
            raise EmoLensError("--save-thresholds needs --target-precision or --target-coverage")
        if save and (len(names) > 1 or tta):
            raise EmoLensError(
                "thresholds are saved for the analyzer, which runs one model without test-time augmentation: "
                "choose them with a single model and no --tta"
            )
        if save and thresholds_out is None and not Path(names[0]).is_file():
            raise EmoLensError(
                f"{names[0]!r} is a model name, not a file: write a copy with --thresholds-out NEW.onnx "
                "(thresholds are written in place only into a model given by its path)"
            )
        from emolens.evaluate import load_members

        specs = [m.meta.input for m in load_members(names)]
        size, channels = max(s.size for s in specs), max(s.channels for s in specs)
        dataset = load_dataset(data)
        crops, labels, skipped = to_crops(dataset, size, channels, progress=True)
        report = evaluate_arrays(
            names,
            crops,
            labels,
            dataset.classes,
            tta=tta,
            tta_shift=tta_shift,
            target_precision=target_precision,
            target_coverage=target_coverage,
            compare=True,
            rules=rule or None,
        )
        votes_file = ferplus_votes_for(data, votes)
        if votes_file is not None:
            report["ferplus"] = evaluate_ferplus(names, data, votes_file, tta=tta)
        if degrade:
            with console.status("degradations") as status:
                report["robustness"] = robustness(
                    names, crops, labels, dataset.classes, tta=tta, progress=lambda n: status.update(f"degradation {n}")
                )
    except EmoLensError as exc:
        fail(exc)
    for line in skipped:
        err.print(f"[yellow]not counted[/yellow] {escape(line)}")
    report["not_counted"] = skipped
    report["dataset"] = str(data)
    table = Table("class", "precision", "recall", "F1", "support")
    for c, r in report["per_class_recall"].items():
        p, f = report["per_class_precision"][c], report["per_class_f1"][c]
        table.add_row(c, f"{p:.3f}", f"{r:.3f}", f"{f:.3f}", str(report["support"][c]))
    console.print(table)
    if report.get("variants"):
        variants = Table("model", "TTA", "accuracy", "macro-F1", "ECE", "acc@90%", "acc@80%")
        for v in report["variants"]:
            variants.add_row(
                escape(v["name"]),
                "yes" if v["tta"] else "no",
                *(f"{v[k]:.4f}" for k in ("accuracy", "macro_f1", "ece", "accuracy_at_0.9", "accuracy_at_0.8")),
            )
        console.print(variants)
    cov = report["accuracy_at_coverage"]
    console.print(
        f"accuracy {report['accuracy']:.4f}   macro-F1 {report['macro_f1']:.4f}   n={report['n']}"
        + (f"   ({len(skipped)} images without a usable face not counted)" if skipped else "")
    )
    console.print(
        f"ECE {report['ece']:.4f} (15 bins)   accuracy at 90% coverage {cov['0.9']:.4f}, at 80% {cov['0.8']:.4f}"
    )
    if report.get("dropped_labels"):
        console.print(f"model outputs the data cannot have, left out before the argmax: {report['dropped_labels']}")
    if report.get("ferplus"):
        fp = report["ferplus"]
        console.print(
            f"FER+ majority labels ({escape(Path(fp['votes']).name)}): accuracy {fp['accuracy']:.4f}   "
            f"macro-F1 {fp['macro_f1']:.4f}   ECE {fp['ece']:.4f}   n={fp['n']}"
            + (f"   ({fp['n_unscorable']} faces of classes the model lacks not scored)" if fp["n_unscorable"] else "")
        )
    if report.get("robustness"):
        _print_robustness(report["robustness"])
    th = report.get("thresholds")
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
    if report.get("rules"):
        _print_rules(report["rules"])
    if keep_rules:
        from emolens.classify.modelfile import save_rules as write_rules
        from emolens.models import resolve_model

        guard = {**report["rules"], "dataset": str(data)}
        try:
            target = write_rules(resolve_model(names[0]), rule, rules_out, evidence=guard)
        except EmoLensError as exc:
            fail(exc, 3 if not guard["accepted"] else 2)
        report["rules"]["saved_to"] = str(target)
        console.print(f"rules saved in {escape(str(target))}: the analyzer applies them from now on")
    if save:
        from emolens.classify.modelfile import save_thresholds as write_thresholds
        from emolens.models import resolve_model

        note = {k: th[k] for k in ("rule", "target", "coverage", "accuracy", "n")}
        note.update(dataset=str(data), cross_fit=th.get("cross_fit"))
        try:
            target = write_thresholds(resolve_model(names[0]), th["thresholds"], thresholds_out, card_note=note)
        except EmoLensError as exc:
            fail(exc)
        th["saved_to"] = str(target)
        console.print(f'thresholds saved in {escape(str(target))}: the analyzer now answers "uncertain" below them')
    if json_out:
        _write(json_out, json.dumps(report, indent=2))
    if report_dir:
        from emolens.evaluate import write_report

        argv = ["emolens", "evaluate", *sys.argv[sys.argv.index("evaluate") + 1 :]] if "evaluate" in sys.argv else []
        try:
            paths = write_report(report, report_dir, command=shlex.join(argv) if argv else "")
        except EmoLensError as exc:
            fail(exc)
        console.print(f"report: {escape(str(paths['markdown']))} and {escape(str(paths['html']))}")


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


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="Training data: class folders, FER2013 CSV, labels CSV or .npz.")],
    val: Annotated[Path | None, typer.Option(help="Validation data; default: a stratified share of DATA.")] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML training config (see emolens.train.loop.TrainConfig).")
    ] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a setting: key=value (repeatable).")] = None,
    out: Annotated[Path, typer.Option(help="Run folder for checkpoints and logs.")] = Path("runs/train"),
    val_fraction: Annotated[float, typer.Option(help="Share of DATA held out when --val is not given.")] = 0.1,
    arch: Annotated[str | None, typer.Option(help="Shortcut for --set arch=NAME.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Shortcut for --set epochs=N.")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue from a last.pt checkpoint.")] = None,
    stop_after: Annotated[
        int | None,
        typer.Option(help="End after N epochs of this run; the schedule still spans all epochs (--resume goes on)."),
    ] = None,
    init: Annotated[
        Path | None,
        typer.Option(help="Fine-tune: start from a trained checkpoint (best.pt, or the shipped fast.pt)."),
    ] = None,
    stages: Annotated[
        str | None, typer.Option(help='Fine-tuning stages, e.g. "head:2,all:8" (the epochs follow from them).')
    ] = None,
    cv: Annotated[
        int | None,
        typer.Option(help="K-fold cross-validation on DATA (group-aware with a group column): one model per fold."),
    ] = None,
    teacher: Annotated[
        str | None,
        typer.Option(
            help="Distil: a model (name, .onnx or ensemble a+b) whose probabilities on DATA join the labels "
            "(--set distill_weight=0.5, distill_temperature=2)."
        ),
    ] = None,
    votes: Annotated[
        Path | None,
        typer.Option(
            help="FER+ votes of DATA (row for row): train 8 classes on them (--set label_mode=distribution|"
            "probability|majority); --val then uses its own votes file (val.npz → val_ferplus.npz)."
        ),
    ] = None,
) -> None:
    """Train an emotion model, or fine-tune one with --init.

    The defaults are the recipe of the shipped `fast` model. With --stages the head learns alone
    first, then all layers (--set layer_decay=0.7 gives the layers further from the head smaller
    learning rates). Without --val, a stratified share of DATA is held out for validation."""
    from emolens.errors import require

    require("torch", "train")
    from emolens.data import load_dataset, split
    from emolens.data.datasets import to_crops
    from emolens.train.config import dump_config, load_config
    from emolens.train.loop import fit, lineage_of

    shortcuts = (("arch", arch), ("epochs", epochs), ("stages", stages), ("teacher", teacher))
    overrides = list(set_ or []) + [f"{k}={v}" for k, v in shortcuts if v is not None]
    if cv is not None:
        return _cross_validate(data, config, overrides, cv, out)
    start = None
    try:
        if votes is not None:
            from emolens.data.ferplus import load_ferplus

            train_ds = load_ferplus(data, votes)
        else:
            train_ds = load_dataset(data)
        base: dict = {"labels": train_ds.classes}
        if init is not None:
            if resume is not None:
                raise EmoLensError("--init starts a new run and --resume continues one: give one of them")
            start = _load_init_checkpoint(init)
            same = sorted(start["labels"]) == sorted(train_ds.classes)  # keep the checkpoint's head order
            base = {
                "labels": list(start["labels"]) if same else train_ds.classes,
                "arch": start["config"]["arch"],
                "size": start["input"]["size"],
                "channels": start["input"]["channels"],
            }
        cfg = load_config(config, overrides, base=base)
        if val is not None:
            val_ds = load_ferplus(val) if votes is not None else load_dataset(val)
            validation = f"the file {val.name}"
        else:
            validation = f"a stratified {val_fraction:.0%} of {data.name} held out (seed {cfg.seed})"
            parts = split(train_ds, val=val_fraction, seed=cfg.seed)
            train_ds, val_ds = parts["train"], parts["val"]
        if train_ds.classes != cfg.labels:
            train_ds = train_ds.remap(cfg.labels)
        if val_ds.classes != cfg.labels:
            val_ds = val_ds.remap(cfg.labels)
        (xtr, ytr, skip_tr), (xva, yva, skip_va) = (
            to_crops(d, cfg.size, cfg.channels, progress=True) for d in (train_ds, val_ds)
        )
        if train_ds.soft is not None and not skip_tr:  # crops keep every row: the votes stay aligned
            ytr = train_ds.soft
        if cfg.teacher:
            from emolens.train.distill import distill_targets

            console.print(f"distilling from {cfg.teacher}: its probabilities on {len(xtr)} training faces")
            ytr = distill_targets(cfg.teacher, xtr, ytr, cfg.labels, cfg.distill_weight, cfg.distill_temperature)
    except EmoLensError as exc:
        fail(exc)
    for line in skip_tr + skip_va:
        err.print(f"[yellow]skipped[/yellow] {escape(line)}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(dump_config(cfg))
    console.print(f"training {cfg.arch} on {len(ytr)} faces, validating on {len(yva)}; config in {out / 'config.yaml'}")
    init_kw = (
        {} if start is None else {"init": start["model"], "init_labels": start["labels"], "lineage": lineage_of(start)}
    )
    if start is not None:
        console.print(f"starting from {init}" + (f", stages {cfg.stages}" if cfg.stages else ""))
    try:
        result = fit(
            (xtr, ytr), (xva, yva), cfg, out, resume=resume, stop_after=stop_after, validation=validation, **init_kw
        )
    except EmoLensError as exc:
        fail(exc)
    console.print(f"best validation {cfg.select_on}: {result['best']:.4f} → {result['checkpoint']}")


def _cross_validate(data: Path, config: Path | None, overrides: list[str], k: int, out: Path) -> None:
    from emolens.data import load_dataset
    from emolens.train.config import dump_config, load_config
    from emolens.train.cv import cross_validate
    from emolens.train.prepare import crops_of

    try:
        dataset = load_dataset(data)
        cfg = load_config(config, overrides, base={"labels": dataset.classes})
        crops = crops_of(dataset, cfg.labels, cfg.size, cfg.channels, progress=True)
        for line in crops.skipped:
            err.print(f"[yellow]skipped[/yellow] {escape(line)}")
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(dump_config(cfg))
        report = cross_validate(crops, cfg, k, out)
    except EmoLensError as exc:
        fail(exc)
    table = Table(
        "metric", "mean", "std", *[f"fold {f['fold']}" for f in report.folds], title=f"{k}-fold cross-validation"
    )
    for metric, s in report.summary.items():
        table.add_row(metric, f"{s['mean']:.4f}", f"{s['std']:.4f}", *[f"{f[metric]:.4f}" for f in report.folds])
    console.print(table)
    folds = ",".join(f["onnx"] for f in report.folds)
    console.print(f"fold models in {out}; evaluate them as an ensemble: emolens evaluate {folds} DATA")


def _load_init_checkpoint(path: Path) -> dict:
    """A training checkpoint's weights, labels, input and config, or an EmoLensError saying why not."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a missing, truncated or foreign file: torch raises many types
        raise EmoLensError(f"cannot read checkpoint {path}: {exc}") from None
    if not isinstance(state, dict) or not {"model", "labels", "input", "config"} <= set(state):
        raise EmoLensError(f"{path} is not an EmoLens training checkpoint (best.pt / last.pt)")
    return state


@app.command()
def eda(
    data: Annotated[Path, typer.Argument(help="A dataset: class folders, FER2013 CSV, labels CSV or .npz.")],
    out: Annotated[Path, typer.Option(help="Folder for report.md, report.html, stats.json and plots.")] = Path(
        "runs/eda"
    ),
) -> None:
    """Explore a dataset: balance, quality, duplicates.

    Counts per class, sizes and modes, blur, brightness and contrast, duplicates and corrupt files."""
    from emolens.data import load_dataset
    from emolens.data.eda import explore, write_report

    try:
        stats = explore(load_dataset(data), progress=True)
        paths = write_report(stats, out)
    except EmoLensError as exc:
        fail(exc)
    table = Table("class", "images")
    for c, k in stats["counts"].items():
        table.add_row(c, str(k))
    console.print(table)
    d = stats["duplicates"]
    ratio = stats["imbalance_ratio"]
    console.print(
        f"{stats['n']} images; imbalance ratio {'n/a' if ratio is None else f'{ratio:.1f}'}; "
        f"{d['exact_images']} exact and {d['near_pairs']} near duplicates "
        f"({d['near_pairs_with_different_labels']} with different labels); {len(stats['corrupt'])} corrupt"
    )
    console.print(f"report: {paths['markdown']} and {paths['html']}")


@app.command()
def export(
    checkpoint: Annotated[
        Path,
        typer.Argument(help="A best.pt / last.pt from `emolens train`; for an .ort OUT also a model name or .onnx."),
    ],
    out: Annotated[Path, typer.Argument(help="The .onnx file to write, or .ort for ONNX Runtime Mobile.")],
    val: Annotated[Path | None, typer.Option(help="Labelled .npz: its metrics go into the model card.")] = None,
    name: Annotated[str, typer.Option(help="Model name for the card.")] = "",
    data: Annotated[str, typer.Option(help="What the model was trained on, for the card.")] = "",
    val_name: Annotated[str, typer.Option(help="How the card names the --val data.")] = "",
    weights: Annotated[
        bool,
        typer.Option(
            help="Also write the PyTorch weights beside it (.pt, no optimizer state) for explanations and fine-tuning."
        ),
    ] = False,
) -> None:
    """Export a checkpoint to ONNX, or a model to .ort.

    ONNX: a self-describing model, parity-checked against PyTorch, with a model card. To an .ort OUT:
    a model in ONNX Runtime's mobile format, metadata kept, parity-checked."""
    from emolens.errors import require

    if out.suffix == ".ort" and checkpoint.suffix not in (".pt", ".pth"):
        _export_ort(str(checkpoint), out)
        return
    require("torch", "train")
    if out.suffix == ".ort":  # a checkpoint: ONNX first (beside it), then the mobile format
        onnx_out = out.with_suffix(".onnx")
        export(checkpoint, onnx_out, val, name or out.stem, data, val_name, weights)
        _export_ort(str(onnx_out), out)
        return
    from emolens.train.card import write_card
    from emolens.train.export import export_onnx

    report = export_onnx(checkpoint, out, card={"name": name or out.stem, "data": data}, weights=weights)
    console.print(f"wrote {out} (max |p_torch - p_onnx| = {report['max_abs_diff']:.1e})")
    if report["weights"]:
        console.print(f"wrote {report['weights']}")
    if val:
        from emolens.data.datasets import load_npz
        from emolens.evaluate import evaluate_arrays

        metrics = evaluate_arrays(str(out), *load_npz(val))
        metrics["dataset"] = val_name or val.name
        card_path = write_card(out, metrics)
        console.print(f"accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f} → {card_path}")


def _export_ort(model: str, out: Path) -> None:
    from emolens.export.ort import to_ort
    from emolens.models import resolve_model

    try:
        report = to_ort(resolve_model(model), out)
    except EmoLensError as exc:
        fail(exc)
    console.print(
        f"wrote {out} ({report['bytes'] / 1e6:.2f} MB; ONNX {report['onnx_bytes'] / 1e6:.2f} MB), "
        f"metadata kept, max |p_onnx - p_ort| = {report['max_abs_diff']:.1e}"
    )


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
    """Make an ONNX emotion model from elsewhere usable by EmoLens.

    Writes the metadata (labels, input, output) every EmoLens command reads."""
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
        fail(exc)
    except ValueError as exc:
        fail(EmoLensError(f"bad option value: {exc}"))
    console.print(f"{target}: {len(meta.labels)} labels, input {size}x{size}x{channels}; ready for --model {target}")


@app.command()
def quantize(
    model: Annotated[str, typer.Argument(help="FP32 model: a name (see `emolens models`) or an .onnx path.")],
    calibration: Annotated[Path, typer.Option(help="Labelled .npz of aligned crops (training data) to calibrate on.")],
    out: Annotated[Path | None, typer.Option(help="INT8 .onnx to write. Default: <model>-int8.onnx beside it.")] = None,
    val: Annotated[Path | None, typer.Option(help="Labelled .npz: evaluate FP32 and INT8, time both, card it.")] = None,
    samples: Annotated[int, typer.Option(help="Calibration crops, stratified by class.")] = 500,
    per_channel: Annotated[bool, typer.Option(help="Per-channel (not per-tensor) weight scales.")] = True,
    threads: Annotated[int, typer.Option(help="ONNX Runtime threads for the speed measurement.")] = 2,
) -> None:
    """Quantize a model to INT8.

    Static ONNX QDQ quantization, keeping the metadata; with --val, measure the cost and the gain."""
    from emolens.errors import require

    require("onnx", "export")
    from emolens.classify.modelfile import annotate as write_meta
    from emolens.data.datasets import fit_crops, load_npz
    from emolens.evaluate import evaluate_arrays
    from emolens.export.quantize import latency_ms_per_face, quantize_int8, stratified_sample
    from emolens.models import load_emotion_model, resolve_model
    from emolens.train.card import render_card

    try:
        src = resolve_model(model)
        out = out or src.with_name(f"{src.stem}-int8.onnx")
        if out.resolve() == src.resolve():
            raise EmoLensError(f"--out {out} would overwrite the FP32 model")
        spec = load_emotion_model(str(src)).meta.input
        images, labels, _ = load_npz(calibration)
        crops = fit_crops(images[stratified_sample(labels, samples)], spec.size, spec.channels)
        info = quantize_int8(src, out, crops, per_channel=per_channel)
        console.print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB; FP32 {src.stat().st_size / 1e6:.2f} MB)")
        if not val:
            return
        vimages, vlabels, vclasses = load_npz(val)
        fp32 = evaluate_arrays(str(src), vimages, vlabels, vclasses)
        int8 = evaluate_arrays(str(out), vimages, vlabels, vclasses)
    except EmoLensError as exc:
        fail(exc)
    vcrops = fit_crops(vimages[:64], spec.size, spec.channels)
    speed = {}
    for batch in (1, 64):
        t32 = latency_ms_per_face(src, vcrops, batch, threads)
        t8 = latency_ms_per_face(out, vcrops, batch, threads)
        speed[f"batch{batch}"] = {"fp32_ms": round(t32, 4), "int8_ms": round(t8, 4), "speedup": round(t32 / t8, 2)}
    info["vs_fp32"] = {
        "dataset": val.name,
        "accuracy_fp32": fp32["accuracy"],
        "accuracy_int8": int8["accuracy"],
        "accuracy_change_points": round(100 * (int8["accuracy"] - fp32["accuracy"]), 2),
        "macro_f1_fp32": fp32["macro_f1"],
        "macro_f1_int8": int8["macro_f1"],
        "ms_per_face": speed,
        "threads": threads,
    }
    m = load_emotion_model(str(out))
    meta = m.meta
    meta.card = {
        **meta.card,
        "quantization": info,
        "metrics": {k: int8[k] for k in ("accuracy", "macro_f1", "per_class_recall", "n")} | {"dataset": val.name},
    }
    write_meta(out, meta)
    load_emotion_model.cache_clear()  # the cached model holds the card read before this edit
    q = info["vs_fp32"]
    lines = [
        "## Quantization",
        "",
        f"- {info['method']}, {info['format']}; weights {info['weights']}, activations {info['activations']}; "
        f"{info['calibration']} of {calibration.name}; from `{info['source']}`",
        f"- accuracy {q['accuracy_int8']:.4f} vs FP32 {q['accuracy_fp32']:.4f} "
        f"({q['accuracy_change_points']:+.2f} points); macro-F1 {q['macro_f1_int8']:.4f} vs {q['macro_f1_fp32']:.4f}",
        *[
            f"- {k.replace('batch', 'batch ')}: {v['int8_ms']:.3f} ms/face vs FP32 {v['fp32_ms']:.3f} "
            f"(x{v['speedup']:.2f}), median of 20 after warm-up, {threads} threads, preprocessing included"
            for k, v in speed.items()
        ],
        "",
    ]
    md = out.with_suffix(".md")
    md.write_text(render_card(meta.card, meta.labels, meta.input.__dict__).rstrip("\n") + "\n\n" + "\n".join(lines))
    console.print(
        f"accuracy {q['accuracy_int8']:.4f} (FP32 {q['accuracy_fp32']:.4f}, "
        f"{q['accuracy_change_points']:+.2f} points); "
        + ", ".join(f"{k}: x{v['speedup']:.2f}" for k, v in speed.items())
        + f" → {md}"
    )


@app.command()
def explain(
    image: Annotated[Path, typer.Argument(help="A photo; every face in it is explained.")],
    method: Annotated[
        str, typer.Option(help="gradcam, gradcam++, integrated-gradients, occlusion, lime or shap.")
    ] = "gradcam",
    model: Annotated[str, typer.Option(help="Emotion model: a name or an .onnx path (.pt beside it).")] = "fast",
    save: Annotated[Path | None, typer.Option(help="Overlay file [default: <stem>_explain_<method>.jpg].")] = None,
    compare: Annotated[
        bool, typer.Option("--compare", help="Score every method's faithfulness (deletion, insertion) on the faces.")
    ] = False,
) -> None:
    """Show which pixels drove each face's emotion.

    Writes a heat map over the photo; --compare scores every method's faithfulness."""
    import time

    import numpy as np

    from emolens.explain import METHOD_NAMES, explain_image, overlay_photo

    try:
        from emolens.analyzer import Analyzer
        from emolens.io import load_image

        photo = load_image(image)
        analyzer = Analyzer(model=model)
        faces = explain_image(photo, method, analyzer=analyzer)
    except EmoLensError as exc:
        fail(exc)
    if faces and faces[0]["note"]:
        err.print(f"[yellow]note:[/yellow] {escape(faces[0]['note'])}")
    for i, f in enumerate(faces):
        console.print(f"face {i}: {f['label']} ({f['confidence']:.0%}), explained by {f['method']}")
    if not faces:
        err.print("no face found")
    target = save or Path(f"{image.stem}_explain_{method}.jpg")
    try:
        from PIL import Image

        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(overlay_photo(photo, faces)).save(target)
    except OSError as exc:
        fail(EmoLensError(f"could not save {target}: {exc}"), 1)
    err.print(f"overlay written to {escape(str(target))}")
    if not (compare and faces):
        return

    from emolens.explain.faithfulness import random_scores, scores, torch_predictor
    from emolens.explain.overlay import explain_crop, load_torch_model, torch_weights

    onnx_model = analyzer.model
    weights = torch_weights(onnx_model.path)
    tmodel, state = load_torch_model(str(weights)) if weights else (None, None)
    predict = torch_predictor(tmodel, state["input"]) if tmodel else onnx_model.predict
    rows: dict[str, list] = {}
    for name in METHOD_NAMES if tmodel else ("occlusion-onnx",):
        for f in faces:
            t0 = time.perf_counter()
            heat = explain_crop(f["crop"], f["target"], name, tmodel, onnx_model.meta.input, onnx_model)
            ms = (time.perf_counter() - t0) * 1e3
            s = scores(predict, f["crop"], heat, f["target"])
            rows.setdefault(name, []).append((s["deletion"], s["insertion"], ms))
    for f in faces:
        s = random_scores(predict, f["crop"], f["target"])
        rows.setdefault("random (5 seeds)", []).append((s["deletion"], s["insertion"], float("nan")))
    table = Table(
        "method", "deletion AUC ↓", "insertion AUC ↑", "ms / face", title=f"faithfulness on {len(faces)} face(s)"
    )
    for name, vals in rows.items():
        d, ins, ms = np.mean(vals, axis=0)
        table.add_row(name, f"{d:.3f}", f"{ins:.3f}", "" if np.isnan(ms) else f"{ms:.1f}")
    console.print(table)


def _register_feature_commands() -> None:
    """Each capability beside the image pipeline keeps its verbs in a module of its own."""
    from emolens.cli import attendance, batch, compare, feedback, people, serve, shadow, synth, video

    for module in (feedback, people, attendance, video, serve, synth, batch, compare, shadow):
        module.register(app)
    groups = list(app.registered_groups)
    while groups:  # every sub-command group gets the same plain help as the app
        info = groups.pop()
        info.typer_instance.rich_markup_mode = None
        groups += info.typer_instance.registered_groups


_register_feature_commands()
