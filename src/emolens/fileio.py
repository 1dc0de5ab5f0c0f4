"""Writing files whole: what every part of EmoLens that saves a file it must not leave half-written uses.

Neutral on purpose (no database, no images): the model registry, training, exports and the stores
all write through it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from emolens.errors import EmoLensError

PACKAGE_DIR = Path(__file__).resolve().parent


class PackageWriteError(EmoLensError):
    """A command was about to write into the installed package (its shipped models, cards, assets)."""


def refuse_package(path: str | Path) -> Path:
    """``path`` itself, unless it lies inside the installed ``emolens`` package: the shipped models
    and cards are read-only to every command (a write there would change what every user of this
    install gets, and a reinstall would silently undo it)."""
    target = Path(path)
    if str(target) == "-":
        return target
    resolved = target.expanduser().resolve()
    if resolved == PACKAGE_DIR or PACKAGE_DIR in resolved.parents:
        raise PackageWriteError(
            f"{target}: refusing to write inside the installed emolens package ({PACKAGE_DIR}); "
            "write somewhere else"
        )
    return target


def atomic_write(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write ``path`` whole or not at all: a synced temporary file (``.<name>.tmp`` beside it)
    renamed over it. The file is private to its owner (0600) unless ``mode`` says otherwise:
    most of what EmoLens writes this way holds faces."""
    refuse_package(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
