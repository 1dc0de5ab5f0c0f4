"""Models by name or path, the same way everywhere.

A name is looked up among the models shipped in ``emolens/assets`` (``fast``, ...), then among
the user's models in ``$EMOLENS_HOME/models``; ``active`` and ``v1``, ``v2``... are versions in
the model registry (``active`` is the shipped ``fast`` while the registry is empty). Anything
that is an existing file is a path.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from emolens.errors import ModelNotFoundError

ASSETS = Path(__file__).parent / "assets"


def shipped_models() -> dict[str, Path]:
    return {p.stem: p for p in sorted(ASSETS.glob("*.onnx"))}


def user_models() -> dict[str, Path]:
    from emolens.settings import get_settings

    folder = get_settings().home / "models"
    return {p.stem: p for p in sorted(folder.glob("*.onnx"))} if folder.is_dir() else {}


def available_models() -> dict[str, Path]:
    return {**user_models(), **shipped_models()}  # shipped names win: `fast` is always ours


def resolve_model(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".onnx" or p.exists():
        if not p.is_file():
            raise ModelNotFoundError(f"model file not found: {p}")
        return p
    from emolens.registry import BASE_MODEL, resolve_version

    if str(name_or_path) == "active" or (p.name.startswith("v") and p.name[1:].isdigit()):
        found = resolve_version(str(name_or_path))
        if found is not None:
            return found
        name_or_path = BASE_MODEL  # an empty registry: the shipped default is active
    models = available_models()
    if str(name_or_path) in models:
        return models[str(name_or_path)]
    raise ModelNotFoundError(
        f"no model named {str(name_or_path)!r}; available: {', '.join(models) or 'none'} "
        "(or give a path to an .onnx file)"
    )


@lru_cache(maxsize=8)
def load_emotion_model(name_or_path: str, threads: int = 0):
    """One EmotionModel per (model, threads): loaded once, reused by every Analyzer."""
    from emolens.classify import EmotionModel

    return EmotionModel(resolve_model(name_or_path), threads=threads)
