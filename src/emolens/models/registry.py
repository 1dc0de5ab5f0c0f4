"""The model registry: every emotion model version, kept with where it came from, and which is active.

``$EMOLENS_HOME/registry/``::

    versions/v1/model.onnx   the self-describing model
    versions/v1/model.pt     its PyTorch weights, when it can be fine-tuned
    versions/v1/version.json parent, source, data and config hashes, metrics, time
    versions/v1/report.md    how it was judged (fine-tuned versions)
    active.json              {"version": "v2", "history": ["v1"]}

A version folder is filled under a temporary name and renamed into place, and ``active.json`` is
replaced in one rename, so a reader never sees half a version or half a pointer. Versions are
never deleted by promotion or rollback. An empty registry has no active version: the analyzer
then uses the shipped ``fast`` model; the first fine-tuning, or promoting a model by name
(``emolens models promote accurate``), registers that as ``v1``.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from emolens.core.errors import ModelNotFoundError, NotFoundError, RefusedError, StorageError
from emolens.models.catalog import NamedModels

BASE_MODEL = "fast"  # what an empty registry starts from


@dataclass
class ModelVersion:
    name: str
    path: Path
    checkpoint: Path | None
    parent: str | None
    source: str
    created_at: str
    metrics: dict[str, Any] = field(default_factory=dict)
    data_hash: str | None = None
    config_hash: str | None = None
    promoted: bool = False  # passed its gates (or was promoted by hand) at least once
    active: bool = False

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def report(self) -> Path | None:
        p = self.folder / "report.md"
        return p if p.is_file() else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(path=str(self.path), checkpoint=str(self.checkpoint) if self.checkpoint else None)
        d["report"] = str(self.report) if self.report else None
        return d


def _atomic_write_json(path: Path, data: dict) -> None:
    from emolens.core.fileio import atomic_write

    atomic_write(path, json.dumps(data, indent=2).encode())


class Registry:
    """The versions in ``root`` (``home/registry``). ``models`` is the table of named models a
    promotion by name registers from (default: the shipped ones and those in the ``models`` folder
    beside ``root``); resolving specs is ``emolens.models.ModelResolver``'s."""

    def __init__(self, root: str | Path, *, models: NamedModels | None = None):
        self.root = Path(root)
        self.models = models or NamedModels(self.root.parent / "models")
        self.pointer = self.root / "active.json"
        self._filelock = None
        self._read: tuple[tuple[int, int, int], dict] | None = None  # the pointer's (identity, state)

    # -- reading ---------------------------------------------------------------------------
    def _lock(self):
        """The registry's lock across processes; one object per Registry, so that it is re-entrant:
        a promotion holds it over its registration steps too."""
        from filelock import FileLock

        self.root.mkdir(parents=True, exist_ok=True)
        if self._filelock is None:
            self._filelock = FileLock(str(self.root / ".lock"), timeout=60)
        return self._filelock

    def _state(self) -> dict:
        """The pointer's state, re-read only when the file changed: a reader asks at every image
        (a promotion takes effect without a restart), so an unchanged pointer costs one ``stat``."""
        try:
            st = self.pointer.stat()
            key = (st.st_mtime_ns, st.st_size, st.st_ino)
            if self._read is None or self._read[0] != key:
                self._read = (key, json.loads(self.pointer.read_text()))
            return dict(self._read[1])
        except FileNotFoundError:
            return {"version": None, "history": []}

    def active_name(self) -> str | None:
        """The active version's name, or None while the registry is empty. Cheap: one small read."""
        return self._state()["version"]

    def _load(self, folder: Path, active: str | None) -> ModelVersion:
        meta = json.loads((folder / "version.json").read_text())
        pt = folder / "model.pt"
        return ModelVersion(
            path=folder / "model.onnx",
            checkpoint=pt if pt.is_file() else None,
            active=meta["name"] == active,
            **meta,
        )

    def versions(self) -> list[ModelVersion]:
        folder = self.root / "versions"
        if not folder.is_dir():
            return []
        active = self.active_name()
        found = [p for p in folder.iterdir() if is_version_name(p.name)]
        return [self._load(p, active) for p in sorted(found, key=lambda p: int(p.name[1:]))]

    def get(self, name: str) -> ModelVersion:
        folder = self.root / "versions" / name
        if not (folder / "version.json").is_file():
            known = ", ".join(v.name for v in self.versions()) or "none yet"
            raise NotFoundError(f"no model version {name!r} in the registry (versions: {known})")
        return self._load(folder, self.active_name())

    def active(self) -> ModelVersion | None:
        name = self.active_name()
        return self.get(name) if name else None

    # -- writing ---------------------------------------------------------------------------
    def register(
        self,
        onnx: str | Path,
        *,
        checkpoint: str | Path | None = None,
        parent: str | None = None,
        source: str = "",
        metrics: dict | None = None,
        data_hash: str | None = None,
        config_hash: str | None = None,
        extra_files: dict[str, str | Path] | None = None,
    ) -> ModelVersion:
        """Copy a model (and its weights and reports) in as the next version; it is not activated."""
        versions = self.root / "versions"
        try:
            versions.mkdir(parents=True, exist_ok=True)
            with self._lock():
                numbers = [int(p.name[1:]) for p in versions.iterdir() if is_version_name(p.name)]
                name = f"v{max(numbers, default=0) + 1}"
                tmp = Path(tempfile.mkdtemp(dir=versions, prefix=f".{name}."))
                try:
                    shutil.copyfile(onnx, tmp / "model.onnx")
                    if checkpoint:
                        shutil.copyfile(checkpoint, tmp / "model.pt")
                    for target, src in (extra_files or {}).items():
                        shutil.copyfile(src, tmp / target)
                    meta = {
                        "name": name,
                        "parent": parent,
                        "source": source,
                        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                        "metrics": metrics or {},
                        "data_hash": data_hash,
                        "config_hash": config_hash,
                        "promoted": False,
                    }
                    _atomic_write_json(tmp / "version.json", meta)
                    os.replace(tmp, versions / name)
                except BaseException:
                    shutil.rmtree(tmp, ignore_errors=True)
                    raise
        except OSError as exc:
            raise StorageError(f"could not register the model in {self.root}: {exc.strerror or exc}") from exc
        return self.get(name)

    def ensure_base(self) -> ModelVersion:
        """The active version, registering the shipped default as ``v1`` if the registry is empty."""
        with self._lock():  # two first promotions at once must not both register the default
            current = self.active()
            if current is not None:
                return current
            return self._promote_version(self._register_model(BASE_MODEL).name)

    def register_named(self, name: str) -> ModelVersion:
        """The registered version of a model known by name (``accurate``), registering it (after the
        default, when the registry is empty) unless an unchanged copy already is; not activated."""
        with self._lock():
            self.ensure_base()
            return self._register_model(name)

    def _register_model(self, model: str) -> ModelVersion:
        """Register a model known by name (shipped, e.g. ``accurate``, or the user's), with its
        PyTorch weights when they lie beside it so that it can be fine-tuned; a model registered
        before and unchanged since is not copied again."""
        onnx = self._named(model)
        pt = onnx.with_suffix(".pt")
        source = self.models.source(model, onnx)
        for version in self.versions():  # registered before and unchanged: that version, not a copy
            if version.source == source and filecmp.cmp(version.path, onnx, shallow=False):
                return version
        return self.register(onnx, checkpoint=pt if pt.is_file() else None, source=source, metrics=_card_metrics(onnx))

    def promote(self, name: str) -> ModelVersion:
        """Make ``name`` the active version; the one it replaces goes on the rollback history.

        ``name`` is a registered version (``v3``) or a model by name (``accurate``, a user model in
        ``$EMOLENS_HOME/models``), never a path: a named model is registered as the next version
        first, after the shipped default if the registry is empty, so that a rollback returns to
        what was active before. The model must load and answer a test input before it becomes
        active (RefusedError otherwise); the whole promotion holds the registry's lock."""
        if not is_version_name(name):
            check_contract(self._named(name), name)
        with self._lock():
            if not is_version_name(name):
                self.ensure_base()
                name = self._register_model(name).name
            return self._promote_version(name)

    def _named(self, name: str) -> Path:
        """The file of a model known by name; never a path (what is promoted must be kept by name)."""
        models = self.models.all()
        if name not in models:
            versions = ", ".join(v.name for v in self.versions()) or "none yet"
            raise ModelNotFoundError(
                f"no model named {name!r}: promote a registered version ({versions}) or a model by name "
                f"({', '.join(models)}), not a path; to promote a model file, copy it into "
                f"{self.models.folder} first"
            )
        return models[name]

    def _promote_version(self, name: str) -> ModelVersion:
        version = self.get(name)
        check_contract(version.path, name)
        with self._lock():
            state = self._state()
            if state["version"] != name:
                history = [*state["history"], state["version"]] if state["version"] else state["history"]
                _atomic_write_json(self.pointer, {"version": name, "history": history})
            meta_path = version.folder / "version.json"
            meta = json.loads(meta_path.read_text())
            if not meta.get("promoted"):
                meta["promoted"] = True
                _atomic_write_json(meta_path, meta)
        return self.get(name)

    def rollback(self) -> ModelVersion:
        """Make the previously active version active again."""
        with self._lock():
            state = self._state()
            if not state["history"]:
                raise RefusedError("nothing to roll back to: no version was active before this one")
            previous = state["history"][-1]
            self.get(previous)  # still there?
            _atomic_write_json(self.pointer, {"version": previous, "history": state["history"][:-1]})
        return self.get(previous)


def check_contract(onnx: Path, name: str) -> None:
    """Refuse a model that could not serve: it must load, carry the EmoLens metadata, and turn a
    test input into one probability per label."""
    import numpy as np

    from emolens.classify import EmotionModel
    from emolens.core.errors import EmoLensError

    try:
        model = EmotionModel(onnx)
        spec = model.meta.input
        shape = (1, spec.size, spec.size) if spec.channels == 1 else (1, spec.size, spec.size, spec.channels)
        probs = model.predict(np.full(shape, 128, np.uint8))
    except EmoLensError as exc:
        raise RefusedError(f"{name} cannot be made active: {exc}") from None
    except Exception as exc:  # ONNX Runtime's own errors when the graph does not run
        raise RefusedError(f"{name} cannot be made active: it does not run ({type(exc).__name__}: {exc})") from None
    if probs.shape != (1, len(model.labels)) or not np.isfinite(probs).all():
        raise RefusedError(f"{name} cannot be made active: its output does not give one probability per label")


def _card_metrics(onnx: Path) -> dict:
    from emolens.classify import EmotionModel

    try:
        return dict(EmotionModel(onnx).card.get("metrics", {}))
    except Exception:  # a model without a card still registers
        return {}


def is_version_name(name: str) -> bool:
    """``v1``, ``v23``: a registry version, as opposed to a model name such as ``accurate``."""
    return name.startswith("v") and name[1:].isdigit()
