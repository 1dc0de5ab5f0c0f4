"""Writing files whole: what every part of EmoLens that saves a file it must not leave half-written uses.

Neutral on purpose (no database, no images): the model registry, training, exports and the stores
all write through it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from emolens.core.errors import EmoLensError

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # src/emolens, not this core/ folder


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
            f"{target}: refusing to write inside the installed emolens package ({PACKAGE_DIR}); write somewhere else"
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


def private_dir(path: Path) -> Path:
    """Create the folder ``path`` and every missing parent readable by their owner only (0700):
    a folder others may list shows the names of what EmoLens keeps. Existing folders are left as
    they are (the user chose them)."""
    path = Path(path)
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for p in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by another process
            p.mkdir(mode=0o700)
    return path


def private_new_file(path: Path) -> Path:
    """Create ``path`` empty and private (0600) for a writer that opens it by name (matplotlib,
    pyarrow): what it writes then never sits readable by others, not even for a moment."""
    os.close(os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600))
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT
    return Path(path)
