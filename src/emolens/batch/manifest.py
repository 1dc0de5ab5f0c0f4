"""What a batch job reads: a folder, a glob or a manifest file, as one ordered list of (id, path).

The order is fixed (sorted paths for folders and globs, file order for manifests), so the same
input always cuts into the same shards; its SHA-256 tells a resumed run whether the input changed.
"""

from __future__ import annotations

import csv
import glob
import hashlib
from dataclasses import dataclass
from pathlib import Path

from emolens.core.errors import EmoLensError, require
from emolens.image.io import IMAGE_SUFFIXES, iter_image_paths

MANIFEST_SUFFIXES = {".csv", ".parquet", ".pq"}


@dataclass
class Manifest:
    """The images of a job, in order: ``ids[i]`` names the image at ``paths[i]`` in the output."""

    ids: list[str]
    paths: list[str]
    source: str = ""

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def sha256(self) -> str:
        h = hashlib.sha256()
        for i, p in zip(self.ids, self.paths, strict=True):
            h.update(f"{i}\0{p}\n".encode())
        return h.hexdigest()


def read_input(source: str | Path) -> Manifest:
    """A folder (recursively), a glob (``photos/**/*.jpg``), one image, or a manifest: a CSV or
    Parquet file with a ``path`` column and optionally an ``id`` column. Relative paths in a
    manifest are taken from the manifest's folder, so a run resumes the same from anywhere."""
    text = str(source)
    path = Path(source)
    if path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
        manifest = _read_manifest(path)
    elif path.is_dir():
        files = iter_image_paths([path])
        manifest = Manifest([f.relative_to(path).as_posix() for f in files], [_absolute(f) for f in files], text)
    elif any(ch in text for ch in "*?["):
        root = _glob_root(text)
        files = [f for f in iter_image_paths([text]) if f.suffix.lower() in IMAGE_SUFFIXES]
        manifest = Manifest([_relative_id(f, root) for f in files], [_absolute(f) for f in files], text)
    elif path.is_file():
        manifest = Manifest([path.name], [_absolute(path)], text)
    else:
        raise EmoLensError(
            f"input {text!r} not found: give a folder, a glob such as 'photos/**/*.jpg', or a CSV or Parquet "
            "manifest with a 'path' column"
        )
    if not manifest.ids:
        raise EmoLensError(f"no images found in {text!r}")
    _check_unique(manifest)
    return manifest


def _absolute(p: Path) -> str:
    # Absolute (not resolved: a symlinked folder keeps its name) so the job is the same from any cwd.
    return str(p.absolute())


def _glob_root(pattern: str) -> Path:
    """The folder a glob starts from: its leading parts without wildcards."""
    parts = []
    for part in Path(pattern).parts:
        if glob.has_magic(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def _relative_id(f: Path, root: Path) -> str:
    try:
        return f.absolute().relative_to(root.absolute()).as_posix()
    except ValueError:
        return f.as_posix()


def _read_manifest(path: Path) -> Manifest:
    if path.suffix.lower() == ".csv":
        try:
            with path.open(newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh)
                columns = list(reader.fieldnames or [])
                rows = list(reader) if "path" in columns else []
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise EmoLensError(f"cannot read manifest {path}: {exc}") from None
        raw_paths = [r["path"] or "" for r in rows]
        raw_ids = [r["id"] for r in rows] if "id" in columns else None
    else:
        pq = require("pyarrow.parquet", "batch", "pyarrow")
        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises its own types for a bad file
            raise EmoLensError(f"cannot read manifest {path}: {exc}") from None
        columns = table.column_names
        raw_paths = [p or "" for p in table.column("path").to_pylist()] if "path" in columns else []
        raw_ids = [None if v is None else str(v) for v in table.column("id").to_pylist()] if "id" in columns else None
    if "path" not in columns:
        raise EmoLensError(f"manifest {path} has no 'path' column (its columns: {', '.join(columns) or 'none'})")
    if raw_ids is not None and any(i in (None, "") for i in raw_ids):
        n = sum(i in (None, "") for i in raw_ids)
        raise EmoLensError(f"manifest {path}: {n} rows have an empty 'id'; give every row an id or drop the column")
    base = path.parent
    # An empty path stays empty: the image becomes an error row ("no such file"), not a failed job.
    paths = [_absolute(base / p) if p else "" for p in raw_paths]
    return Manifest(raw_ids if raw_ids is not None else list(raw_paths), paths, str(path))


def _check_unique(manifest: Manifest) -> None:
    seen: set[str] = set()
    dups = [i for i in manifest.ids if i in seen or seen.add(i)]
    if dups:
        shown = ", ".join(repr(d) for d in dups[:3])
        raise EmoLensError(
            f"{len(dups)} image ids occur more than once in {manifest.source!r} (e.g. {shown}); "
            "every row of the output names its image by id, so ids must be unique"
        )
