"""Export a training checkpoint to the analyzer's self-describing ONNX format, with a parity check."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import torch

from emolens.classify.emotion import softmax
from emolens.classify.modelfile import InputSpec, ModelMeta, annotate
from emolens.train.archs import create_arch
from emolens.train.loop import run_summary


def load_checkpoint(path: str | Path) -> tuple[torch.nn.Module, dict]:
    state = torch.load(path, map_location="cpu", weights_only=False)
    cfg = state["config"]
    model = create_arch(cfg["arch"], len(state["labels"]), state["input"]["channels"], dropout=cfg.get("dropout", 0.0))
    model.load_state_dict(state["model"])
    return model.eval(), state


# What a shipped .pt keeps: weights, and what model cards and later fine-tunes (lineage) need.
INFERENCE_KEYS = (
    "model", "config", "labels", "input", "versions", "epoch", "best", "n_train", "hardware", "history", "lineage"
)  # fmt: skip


def save_weights(state: dict, out: str | Path) -> Path:
    """A checkpoint without its optimizer, scheduler, EMA and RNG state: what explanations and
    fine-tuning (``--init``) start from, at a quarter of the size. Written atomically."""
    from emolens.core.fileio import atomic_write

    slim = {k: state[k] for k in INFERENCE_KEYS if k in state}
    buf = io.BytesIO()
    torch.save(slim, buf)
    atomic_write(Path(out), buf.getvalue(), mode=0o644)  # a model file to share, like the .onnx
    return Path(out)


def count_mflops(model: torch.nn.Module, spec: dict) -> float:
    """Multiply-accumulates of conv and linear layers for one face, in millions."""
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        if isinstance(mod, torch.nn.Conv2d):
            total += out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, torch.nn.Linear):
            total += mod.in_features * mod.out_features

    handles = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    ]
    with torch.no_grad():
        model(torch.zeros(1, spec["channels"], spec["size"], spec["size"]))
    for h in handles:
        h.remove()
    return total / 1e6


OPSET_FALLBACKS = (17, 15, 13)


def export_onnx(
    checkpoint: str | Path, out: str | Path, card: dict | None = None, opset: int = 17, weights: bool = False
) -> dict:
    """Write ``out`` (.onnx) with EmoLens metadata; returns the parity report.

    ``weights`` also writes the slim PyTorch weights beside it (``out`` with suffix .pt).

    ``opset`` is tried first, then the lower of opsets 17, 15 and 13 in turn if the exporter raises;
    the opset used goes into the card (``card["opset"]``) and the report.
    The graph outputs logits; the analyzer applies softmax. Parity: max |p_torch - p_onnx| on a
    random batch must stay below 1e-4, else this raises.
    """
    import onnxruntime as ort

    model, state = load_checkpoint(checkpoint)
    spec = state["input"]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, spec["channels"], spec["size"], spec["size"])
    tmp = out.with_suffix(".tmp.onnx")
    candidates = [opset] + [o for o in OPSET_FALLBACKS if o < opset]
    errors = []
    for used in candidates:
        try:
            torch.onnx.export(
                model,
                dummy,
                str(tmp),
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=used,
                dynamo=False,
            )
            break
        except Exception as exc:  # the exporter raises many types (SymbolicValueError, ValueError, ...)
            errors.append(f"opset {used}: {type(exc).__name__}: {str(exc)[:300]}")
    else:
        tmp.unlink(missing_ok=True)
        raise RuntimeError("ONNX export failed at every opset tried:\n" + "\n".join(errors))
    full_card = {
        "arch": state["config"]["arch"],
        "params": sum(p.numel() for p in model.parameters()),
        "mflops": round(count_mflops(model, spec), 2),
        "recipe": state["config"],
        "training": run_summary(state),
        "lineage": state.get("lineage", []),  # earlier runs this one started from (--init)
        "versions": state.get("versions", {}),
        "exported": time.strftime("%Y-%m-%d"),
        "opset": used,
        **(card or {}),
    }
    meta = ModelMeta(labels=list(state["labels"]), input=InputSpec(**spec), output="logits", card=full_card)
    annotate(tmp, meta, out)
    tmp.unlink(missing_ok=True)

    x = torch.rand(16, spec["channels"], spec["size"], spec["size"]) * 2 - 1
    with torch.no_grad():
        p_torch = torch.softmax(model(x), 1).numpy()
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    p_onnx = softmax(sess.run(None, {"input": x.numpy()})[0])
    diff = float(np.abs(p_torch - p_onnx).max())
    if diff > 1e-4:
        raise RuntimeError(f"ONNX export disagrees with PyTorch: max probability difference {diff:.2e}")
    if weights:
        save_weights(state, out.with_suffix(".pt"))
    return {
        "path": str(out),
        "weights": str(out.with_suffix(".pt")) if weights else None,
        "max_abs_diff": diff,
        "opset": used,
        "opset_errors": errors,
        "card": json.loads(json.dumps(full_card, default=str)),
    }
