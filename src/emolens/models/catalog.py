"""The models known by name: shipped in ``emolens/assets`` and the user's own in ``$EMOLENS_HOME/models``.

Only the table of names and files, with no rules: resolving a model spec (ensembles, ``active``,
``vN``, paths) is ``emolens.models.ModelResolver``'s. It lives apart so that the model registry,
which registers named models when they are promoted, needs nothing from the resolver above it.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

ASSETS = Path(__file__).parents[1] / "assets"


class Routes(NamedTuple):
    """A shipped name that routes each face between two shipped models (``emolens.classify.routed``)."""

    clear: str  # the model for clear faces
    poor: str  # the model for soft or noisy ones
    mirror_poor: bool = False  # poor faces are also read mirrored (mirror TTA), clear ones once


# Mirroring the poor faces is worth about a point on faces seen at 16 px and costs time only on
# them (benchmarks/results/robustness.md).
ROUTED = {"adaptive": Routes("fast", "robust", mirror_poor=True)}


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
