"""`emolens export` (ONNX, .ort), `emolens annotate` (a model from elsewhere) and `emolens quantize` (INT8)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emolens.cli.console import console, fail, workspace
from emolens.cli.outputs import output_place
from emolens.core.errors import EmoLensError


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``emolens`` app."""
    app.command()(export)
    app.command()(annotate)
    app.command()(quantize)


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
    selection: Annotated[
        str, typer.Option(help="Why this run was shipped over the others (the card's validation protocol).")
    ] = "",
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
    from emolens.core.errors import require

    try:
        output_place(out, "export")
    except EmoLensError as exc:
        fail(exc)
    if out.suffix == ".ort" and checkpoint.suffix not in (".pt", ".pth"):
        _export_ort(str(checkpoint), out)
        return
    if not checkpoint.is_file():  # before loading PyTorch: a name like `fast` is for an .ort OUT only
        fail(
            EmoLensError(
                f"{checkpoint}: no such checkpoint file; export takes a best.pt or last.pt from `emolens train` "
                "(a model name or .onnx only when OUT ends in .ort)"
            )
        )
    require("torch", "train")
    if out.suffix == ".ort":  # a checkpoint: ONNX first (beside it), then the mobile format
        onnx_out = out.with_suffix(".onnx")
        export(checkpoint, onnx_out, val, name or out.stem, data, val_name, selection, weights)
        _export_ort(str(onnx_out), out)
        return
    from emolens.train.card import write_card
    from emolens.train.export import export_onnx

    card = {"name": name or out.stem, "data": data} | ({"selection": selection} if selection else {})
    report = export_onnx(checkpoint, out, card=card, weights=weights)
    console.print(f"wrote {out} (max |p_torch - p_onnx| = {report['max_abs_diff']:.1e})")
    if report["weights"]:
        console.print(f"wrote {report['weights']}")
    if val:
        metrics = _card_metrics(out, val, val_name)
        card_path = write_card(out, metrics)
        console.print(f"accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f} → {card_path}")


def _card_metrics(model: Path, val: Path, val_name: str) -> dict:
    """The card's figures for ``model`` on ``val``, and on the same faces' FER+ votes when they lie beside it."""
    from emolens.data.datasets import load_npz
    from emolens.evaluate import evaluate_arrays
    from emolens.evaluate.ferplus import evaluate_ferplus, evaluate_subtle, ferplus_votes_for

    metrics = evaluate_arrays(str(model), *load_npz(val))
    metrics["dataset"] = val_name or val.name
    votes = ferplus_votes_for(val)
    if votes is not None:
        metrics["ferplus"] = evaluate_ferplus(str(model), val, votes)
        metrics["subtle"] = evaluate_subtle(str(model), val, votes)
    return metrics


def _export_ort(model: str, out: Path) -> None:
    from emolens.export.ort import to_ort

    try:
        report = to_ort(workspace().models.path(model), out)
    except EmoLensError as exc:
        fail(exc)
    console.print(
        f"wrote {out} ({report['bytes'] / 1e6:.2f} MB; ONNX {report['onnx_bytes'] / 1e6:.2f} MB), "
        f"metadata kept, max |p_onnx - p_ort| = {report['max_abs_diff']:.1e}"
    )


def annotate(
    model: Annotated[Path, typer.Argument(help="An ONNX emotion model trained elsewhere.")],
    labels: Annotated[str, typer.Option(help="Class names in output order, comma-separated.")],
    size: Annotated[int, typer.Option(min=8, max=4096, help="Input side in pixels.")] = 48,
    channels: Annotated[int, typer.Option(min=1, max=3, help="1 (grey) or 3 (RGB).")] = 1,
    mean: Annotated[str, typer.Option(help="Per-channel mean after scaling to [0, 1], comma-separated.")] = "0.5",
    std: Annotated[str, typer.Option(help="Per-channel std, comma-separated.")] = "0.5",
    value_range: Annotated[
        float, typer.Option("--range", min=1e-6, max=1e9, help="Pixel value that maps to 1.0.")
    ] = 255.0,
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


def quantize(
    model: Annotated[str, typer.Argument(help="FP32 model: a name (see `emolens models`) or an .onnx path.")],
    calibration: Annotated[Path, typer.Option(help="Labelled .npz of aligned crops (training data) to calibrate on.")],
    out: Annotated[
        Path | None, typer.Option(help="INT8 .onnx to write. Default: emolens-output/quantize/<model>-int8.onnx.")
    ] = None,
    val: Annotated[Path | None, typer.Option(help="Labelled .npz: evaluate FP32 and INT8, time both, card it.")] = None,
    val_name: Annotated[str, typer.Option(help="How the card names the --val data.")] = "",
    samples: Annotated[int, typer.Option(min=1, max=10_000_000, help="Calibration crops, stratified by class.")] = 500,
    per_channel: Annotated[bool, typer.Option(help="Per-channel (not per-tensor) weight scales.")] = True,
    threads: Annotated[int, typer.Option(min=1, max=1024, help="ONNX Runtime threads for the speed measurement.")] = 2,
) -> None:
    """Quantize a model to INT8.

    Static ONNX QDQ quantization, keeping the metadata; with --val, measure the cost and the gain."""
    from emolens.core.errors import require

    require("onnx", "export")
    from emolens.data.datasets import fit_crops, load_npz
    from emolens.evaluate import evaluate_arrays
    from emolens.export.quantize import latency_ms_per_face, quantize_int8, stratified_sample
    from emolens.models import clear_model_cache
    from emolens.train.card import write_card

    try:
        src = workspace().models.path(model)
        out = output_place(out, "quantize", f"{src.stem}-int8.onnx")
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.resolve() == src.resolve():
            raise EmoLensError(f"--out {out} would overwrite the FP32 model")
        spec = workspace().models.load(src).meta.input
        images, labels, _ = load_npz(calibration)
        crops = fit_crops(images[stratified_sample(labels, samples)], spec.size, spec.channels)
        info = quantize_int8(src, out, crops, per_channel=per_channel)
        console.print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB; FP32 {src.stat().st_size / 1e6:.2f} MB)")
        if not val:
            return
        vimages, vlabels, vclasses = load_npz(val)
        fp32 = evaluate_arrays(str(src), vimages, vlabels, vclasses)
        int8 = _card_metrics(out, val, val_name)
    except EmoLensError as exc:
        fail(exc)
    vcrops = fit_crops(vimages[:64], spec.size, spec.channels)
    speed = {}
    for batch in (1, 64):
        t32 = latency_ms_per_face(src, vcrops, batch, threads)
        t8 = latency_ms_per_face(out, vcrops, batch, threads)
        speed[f"batch{batch}"] = {"fp32_ms": round(t32, 4), "int8_ms": round(t8, 4), "speedup": round(t32 / t8, 2)}
    info["vs_fp32"] = {
        "dataset": int8["dataset"],
        "accuracy_fp32": fp32["accuracy"],
        "accuracy_int8": int8["accuracy"],
        "accuracy_change_points": round(100 * (int8["accuracy"] - fp32["accuracy"]), 2),
        "macro_f1_fp32": fp32["macro_f1"],
        "macro_f1_int8": int8["macro_f1"],
        "ms_per_face": speed,
        "threads": threads,
    }
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
    md = write_card(out, int8, fields={"quantization": info}, appendix="\n".join(lines))
    clear_model_cache()  # the cached model holds the card read before this edit
    console.print(
        f"accuracy {q['accuracy_int8']:.4f} (FP32 {q['accuracy_fp32']:.4f}, "
        f"{q['accuracy_change_points']:+.2f} points); "
        + ", ".join(f"{k}: x{v['speedup']:.2f}" for k, v in speed.items())
        + f" → {md}"
    )
