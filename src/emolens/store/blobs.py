"""Content-addressed files: each face crop or photo is stored once, named by its SHA-256.

A write goes to a temporary file that is synced and then renamed into place, so a file under
its final name is always whole; a crash leaves at most a ``.tmp`` file, which ``sweep`` removes.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

from emolens.core.errors import StorageError
from emolens.core.fileio import atomic_write, private_dir


class BlobStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / key

    @staticmethod
    def key_of(data: bytes, suffix: str = ".png") -> str:
        return hashlib.sha256(data).hexdigest() + suffix

    def put(self, data: bytes, suffix: str = ".png") -> str:
        """Store ``data`` (idempotent) and return its key, ``<sha256><suffix>``."""
        key = self.key_of(data, suffix)
        final = self.path(key)
        if final.exists():
            return key
        try:
            private_dir(final.parent)
            atomic_write(final, data)
        except OSError as exc:  # full disk, read-only folder...: nothing half-written remains
            raise StorageError(f"could not store a file in {self.root}: {exc.strerror or exc}") from exc
        return key

    def get(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def verify(self, key: str) -> bool:
        p = self.path(key)
        return p.is_file() and hashlib.sha256(p.read_bytes()).hexdigest() == key.split(".", 1)[0]

    def remove(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def stored(self) -> Iterator[str]:
        if self.root.is_dir():
            for p in self.root.glob("??/*"):
                if not p.name.startswith("."):
                    yield p.name

    def unreferenced(self, referenced: set[str]) -> list[Path]:
        """Files no record refers to, and temporaries left by an interrupted write."""
        if not self.root.is_dir():
            return []
        return [p for p in self.root.glob("??/*") if p.name.startswith(".") or p.name not in referenced]

    def sweep(self, referenced: set[str], grace_s: float = 300.0) -> list[str]:
        """Remove the unreferenced files (left by a crash between the file write and the
        database commit). Files younger than ``grace_s`` are spared: a concurrent writer may be
        about to commit them."""
        removed, now = [], time.time()
        for p in self.unreferenced(referenced):
            if now - p.stat().st_mtime >= grace_s:
                p.unlink(missing_ok=True)
                removed.append(p.name)
        return removed
