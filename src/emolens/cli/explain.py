"""`emolens explain`: which pixels drove each face's emotion, and how faithful each method is."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from emolens.cli.console import build_analyzer, console, err, fail
from emolens.core.errors import EmoLensError


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``emolens`` app."""
    app.command()(explain)


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
        from emolens.image.io import load_image

        photo = load_image(image)
        analyzer = build_analyzer(model)
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
