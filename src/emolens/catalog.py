"""The models known by name: shipped in ``emolens/assets`` and the user's own in ``$EMOLENS_HOME/models``.

Only the table of names and files, with no rules: resolving a model spec (ensembles, ``active``,
``vN``, paths) is ``emolens.models.ModelResolver``'s. It lives apart so that the model registry,
which registers named models when they are promoted, needs nothing from the resolver above it.
"""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).parent / "assets"
# Shipped names that route each face between two shipped models (``emolens.classify.routed``):
# name -> (the model for clear faces, the model for poor ones).
ROUTED = {"adaptive": ("fast", "robust")}


def shipped_models() -> dict[str, Path]:
    return {p.stem: p for p in sorted(ASSETS.glob("*.onnx"))}


class NamedModels:
    """The shipped models and the user's in ``folder`` (``$EMOLENS_HOME/models``); shipped names
    win, so ``fast`` is always ours."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def shipped(self) -> dict[str, Path]:
        return shipped_models()

    def user(self) -> dict[str, Path]:
        folder = self.folder
        return {p.stem: p for p in sorted(folder.glob("*.onnx"))} if folder.is_dir() else {}

    def all(self) -> dict[str, Path]:
        return {**self.user(), **self.shipped()}

    def source(self, name: str, path: Path) -> str:
        """Where a named model came from, as the registry records it: ``shipped:NAME`` or ``file:PATH``."""
        return f"shipped:{name}" if self.shipped().get(name) == path else f"file:{path}"
