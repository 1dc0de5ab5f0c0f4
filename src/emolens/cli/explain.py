"""`emolens explain`: which pixels drove each face's emotion, and how faithful each method is."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from emolens.cli.console import build_analyzer, console, err, fail
from emolens.cli.outputs import output_place
from emolens.core.errors import EmoLensError


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``emolens`` app."""
    app.command()(explain)


def explain(
    image: Annotated[Path, typer.Argument(help="A photo; every face in it is explained (or only --face N).")],
    method: Annotated[
        str,
        typer.Option(
            help="gradcam, gradcam++, integrated-gradients, occlusion, lime or shap; occlusion-onnx, lime-onnx or "
            "shap-onnx explain the ONNX model itself."
        ),
    ] = "gradcam",
    model: Annotated[
        str | None,
        typer.Option(help="Emotion model: a name or an .onnx path (.pt beside it). Default: the active model."),
    ] = None,
    face: Annotated[
        int | None,
        typer.Option(min=0, max=10_000, help="Only this face (numbered from 0, as `emolens analyze` shows)."),
    ] = None,
    save: Annotated[
        Path | None, typer.Option(help="Overlay file. Default: emolens-output/explain/<stem>_explain_<method>.jpg.")
    ] = None,
    compare: Annotated[
        bool, typer.Option("--compare", help="Score every method's faithfulness (deletion, insertion) on the faces.")
    ] = False,
) -> None:
    """Show which pixels drove each face's emotion.

    Writes a heat map over the photo, each face boxed, numbered and labelled; --compare scores every
    method's faithfulness."""
    from emolens.explain import explain_image, overlay_photo

    try:
        from emolens.image.io import load_image

        if save is not None:
            output_place(save, "explain")
        photo = load_image(image)
        analyzer = build_analyzer(model)
        faces = explain_image(photo, method, analyzer=analyzer, face=face)
    except EmoLensError as exc:
        fail(exc)
    if faces and faces[0]["note"]:
        err.print(f"[yellow]note:[/yellow] {escape(faces[0]['note'])}")
    for f in faces:
        console.print(
            f"face {f['index']}: {f['label']} ({f['confidence']:.0%}), explained by {f['method']} "
            f"(model {escape(analyzer.model_version)})"
        )
    if not faces:
        err.print("no face found")
    used = faces[0]["method"] if faces else method  # named by the method that ran, not the one asked for
    target = save or output_place(None, "explain", f"{image.stem}_explain_{used}.jpg")
    try:
        from PIL import Image

        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(overlay_photo(photo, faces)).save(target)
    except OSError as exc:
        fail(EmoLensError(f"could not save {target}: {exc}"), 1)
    err.print(f"overlay written to {escape(str(target))}")
    if compare and faces:
        _compare(analyzer.model, faces)


def _compare(onnx_model, faces: list[dict]) -> None:
    """Every method's faithfulness (deletion and insertion AUC) and cost on these faces, as a table."""
    import time

    import numpy as np
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from emolens.explain import METHOD_NAMES
    from emolens.explain.faithfulness import random_scores, scores, torch_predictor
    from emolens.explain.overlay import explain_crop, load_torch_model, torch_weights

    weights = torch_weights(onnx_model.path)
    tmodel, state = load_torch_model(str(weights)) if weights else (None, None)
    predict = torch_predictor(tmodel, state["input"]) if tmodel else onnx_model.predict
    names = METHOD_NAMES if tmodel else ("occlusion-onnx",)
    rows: dict[str, list] = {}
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err,
        transient=True,
    )  # fmt: skip
    with progress:
        task = progress.add_task("scoring", total=(len(names) + 1) * len(faces))
        for name in names:
            progress.update(task, description=f"scoring {name}")
            # One untimed run first: imports and set-up (seconds for SHAP) are not a face's cost.
            explain_crop(faces[0]["crop"], faces[0]["target"], name, tmodel, onnx_model.meta.input, onnx_model)
            for f in faces:
                t0 = time.perf_counter()
                heat = explain_crop(f["crop"], f["target"], name, tmodel, onnx_model.meta.input, onnx_model)
                ms = (time.perf_counter() - t0) * 1e3
                s = scores(predict, f["crop"], heat, f["target"])
                rows.setdefault(name, []).append((s["deletion"], s["insertion"], ms))
                progress.advance(task)
        progress.update(task, description="scoring random maps")
        for f in faces:
            s = random_scores(predict, f["crop"], f["target"])
            rows.setdefault("random (5 seeds)", []).append((s["deletion"], s["insertion"], float("nan")))
            progress.advance(task)
    table = Table(
        "method",
        "deletion AUC ↓",
        "insertion AUC ↑",
        "ms / face",
        title=f"faithfulness on {len(faces)} face(s)",
        caption="ms / face: the mean after one untimed run of each method (imports, set-up)",
    )
    for name, vals in rows.items():
        d, ins, ms = np.mean(vals, axis=0)
        table.add_row(name, f"{d:.3f}", f"{ins:.3f}", "" if np.isnan(ms) else f"{ms:.1f}")
    console.print(table)
