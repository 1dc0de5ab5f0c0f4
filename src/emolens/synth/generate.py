"""Class-conditional image generation with a local Stable Diffusion pipeline (``diffusers``)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emolens.core.errors import EmoLensError, ModelNotFoundError, require
from emolens.synth.prompts import Prompt, prompts_for, prompts_hash

EXTRA = "generate"


@dataclass
class GenerateReport:
    out: Path
    model_id: str
    model_hash: str
    prompts_hash: str
    counts: dict[str, dict[str, int]]  # label -> {"generated": n, "kept": k}
    files: dict[str, list[str]] = field(default_factory=dict)  # label -> image files, relative to out
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "model_id": self.model_id,
            "model_hash": self.model_hash,
            "prompts_hash": self.prompts_hash,
            "counts": self.counts,
            "seconds": round(self.seconds, 1),
        }


def resolve_model(model: str | Path) -> Path:
    """The local folder of a Stable Diffusion pipeline: ``model`` itself, or a model id found in
    the local Hugging Face cache. Never downloads."""
    path = Path(model).expanduser()
    if (path / "model_index.json").is_file():
        return path
    if not path.exists() and "/" in str(model) and not str(model).startswith((".", "/")):
        hub = require("huggingface_hub", EXTRA, package="huggingface_hub")
        try:
            return Path(hub.snapshot_download(str(model), local_files_only=True))
        except Exception:  # not in the cache (the hub raises several kinds): say what to provide
            pass
    raise ModelNotFoundError(
        f"no Stable Diffusion model at {model!r}: give a local pipeline folder (with model_index.json) or "
        "the id of a model already in the local Hugging Face cache; EmoLens downloads nothing"
    )


def model_hash(folder: Path) -> str:
    """A fingerprint of a pipeline folder: every file's path and size, the configs in full, and the
    first and last MiB of each weight file (hashing gigabytes in full would take minutes)."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = f.relative_to(folder).as_posix()
        size = f.stat().st_size
        h.update(f"{rel}\0{size}\0".encode())
        with f.open("rb") as fh:
            if f.suffix in (".json", ".txt") or size <= 2 * 2**20:
                h.update(fh.read())
            else:
                h.update(fh.read(2**20))
                fh.seek(-(2**20), os.SEEK_END)
                h.update(fh.read())
    return h.hexdigest()


def generate(
    model: str | Path,
    out: str | Path,
    classes: list[str],
    per_class: int,
    seed: int = 0,
    steps: int = 25,
    guidance: float = 7.5,
    size: int = 512,
    device: str = "auto",
    progress: bool = True,
) -> GenerateReport:
    """Generate ``per_class`` images of each class into ``out/<class>/`` and write ``status.json``.

    Images already there from an interrupted run with the same prompts are kept, not redone."""
    if per_class < 1:
        raise EmoLensError("--per-class must be at least 1")
    folder = resolve_model(model)
    out = Path(out)
    plan: list[Prompt] = [p for label in classes for p in prompts_for(label, per_class, seed)]
    # Only now the heavy imports (seconds): a bad model or class is refused at once.
    torch = require("torch", EXTRA)
    diffusers = require("diffusers", EXTRA)
    started = time.time()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: nothing may reach the hub
    dev = "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(
        str(folder), local_files_only=True, safety_checker=None, requires_safety_checker=False
    ).to(dev)
    pipe.set_progress_bar_config(disable=True)

    from rich.progress import Progress

    records: list[tuple[str, Prompt]] = []  # (file relative to out, its prompt)
    with Progress(disable=not progress) as bar:
        task = bar.add_task("generating", total=len(plan))
        for i, p in enumerate(plan):
            name = f"{p.label}/{p.label}_{i % per_class:05d}_{p.seed}.png"
            target = out / name
            if not target.exists():
                image = pipe(
                    p.text,
                    negative_prompt=p.negative,
                    num_inference_steps=steps,
                    guidance_scale=guidance,
                    height=size,
                    width=size,
                    generator=torch.Generator(device="cpu").manual_seed(p.seed),
                ).images[0]
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_suffix(".tmp.png")
                image.save(tmp)
                tmp.replace(target)  # an interrupted run never leaves half an image under the final name
            records.append((name, p))
            bar.advance(task)
    files = {label: [name for name, p in records if p.label == label] for label in classes}
    report = GenerateReport(
        out=out,
        model_id=str(model),
        model_hash=model_hash(folder),
        prompts_hash=prompts_hash(plan),
        counts={label: {"generated": len(files[label]), "kept": len(files[label])} for label in classes},
        files=files,
        seconds=time.time() - started,
    )
    write_status(report, records, {"seed": seed, "steps": steps, "guidance": guidance, "size": size, "device": dev})
    return report


def write_status(report: GenerateReport, records: list[tuple[str, Prompt]], settings: dict[str, Any]) -> Path:
    """``status.json``: everything needed to reproduce the run, and what was kept."""
    import diffusers
    import torch

    status = {
        **report.to_dict(),
        "settings": settings,
        "images": [
            {"file": name, "label": p.label, "prompt": p.text, "negative_prompt": p.negative, "seed": p.seed}
            for name, p in records
        ],
        "versions": {
            "diffusers": diffusers.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }
    path = report.out / "status.json"
    path.write_text(json.dumps(status, indent=2))
    return path


def update_kept(out: Path, kept: dict[str, int]) -> None:
    """Record in ``status.json`` how many images of each class passed the quality gates."""
    path = Path(out) / "status.json"
    status = json.loads(path.read_text())
    for label, n in kept.items():
        status["counts"].setdefault(label, {"generated": 0})["kept"] = n
    path.write_text(json.dumps(status, indent=2))
