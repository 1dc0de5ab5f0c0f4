"""Writing files whole: what every part of EmoLens that saves a file it must not leave half-written uses.

Neutral on purpose (no database, no images): the model registry, training, exports and the stores
all write through it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write ``path`` whole or not at all: a synced temporary file (``.<name>.tmp`` beside it)
    renamed over it. The file is private to its owner (0600) unless ``mode`` says otherwise:
    most of what EmoLens writes this way holds faces."""
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
