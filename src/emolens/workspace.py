"""The composition root: the platform's shared parts, built once where a program starts and handed down.

A ``Workspace`` is made from ``Settings`` by whatever starts a program: the ``emolens`` command
(``emolens.cli.console.workspace``), ``create_app``, a batch or serve worker, and the conveniences
``Analyzer()``, ``People()``, ``FeedbackService()`` when they are given none (``Workspace.default()``).
It owns what every feature shares: the model spec parsing, the one resolver and registry, the
detector factory, the one database URL and every store. The feature facades are
built from it (``Analyzer(model, workspace=ws)``, ``People(workspace=ws)``,
``FeedbackService(ws.feedback_store)``) and never read the process's settings: this module is the
only one that calls ``get_settings()``. It sits below the features, so that they may take it
without an import running back up.

>>> ws = Workspace.default()                     # the process's settings (EMOLENS_*, config.toml)
>>> Analyzer("accurate", workspace=ws)("photo.jpg")
>>> Workspace(Settings(home="/tmp/lab")).models.active()
"""

from __future__ import annotations

import threading
from dataclasses import replace
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emolens.core.settings import Settings

if TYPE_CHECKING:
    from emolens.detect import Detector, DetectorOptions
    from emolens.models import ModelResolver, ModelSpec
    from emolens.models.registry import Registry
    from emolens.store.feedback import FeedbackStore
    from emolens.store.keys import KeyStore
    from emolens.store.shadow import ShadowStore


@lru_cache
def get_settings() -> Settings:
    """The process's settings (defaults < config file < ``EMOLENS_*`` environment), read once: by
    this module only, for the workspace of a program that was given no settings."""
    return Settings()


class Workspace:
    """One home's shared parts: model names and versions, detectors, the database and its stores.
    Cheap to make (nothing is built until it is first used); each part is built once and shared by
    everything made from this workspace."""

    def __init__(self, settings: Settings | None = None):
        self.settings = settings if settings is not None else get_settings()

    @classmethod
    def default(cls) -> Workspace:
        """The process's workspace, from the process's settings, made once."""
        return _default()

    def __repr__(self) -> str:
        return f"Workspace(home={str(self.home)!r})"

    # -- where things are ----------------------------------------------------------------
    @property
    def home(self) -> Path:
        return self.settings.home

    @property
    def db_url(self) -> str:
        """The one database URL: ``database_url``, else the SQLite file ``home/emolens.db``."""
        return self.settings.db_url

    # -- models --------------------------------------------------------------------------
    @cached_property
    def models(self) -> ModelResolver:
        """The one resolver of model names, versions and paths of this home."""
        from emolens.models import ModelResolver

        return ModelResolver(self.home)

    @property
    def registry(self) -> Registry:
        """The model registry of this home (the resolver's, so both see the same versions)."""
        return self.models.registry

    def model_spec(self, model: Any = None) -> ModelSpec:
        """``model`` parsed once (a name, version, path, ensemble, routed name; default: the
        ``model`` setting)."""
        from emolens.models import ModelSpec

        return ModelSpec.parse(model if model is not None else self.settings.model)

    # -- the pipeline --------------------------------------------------------------------
    def detector_options(self, **overrides: Any) -> DetectorOptions:
        """The detector options of the settings, with ``overrides`` (None values ignored)."""
        from emolens.detect import DetectorOptions

        s = self.settings
        options = DetectorOptions(
            min_face_size=s.min_face_size,
            score_threshold=s.detection_threshold,
            max_faces=s.max_faces,
            max_side=s.max_side,
            threads=s.threads,
        )
        return replace(options, **{k: v for k, v in overrides.items() if v is not None})

    def detector(self, name: str | None = None, **overrides: Any) -> Detector:
        """The detector ``name`` (default: the ``detector`` setting) with the settings' options."""
        from emolens.detect import create_detector

        return create_detector(name or self.settings.detector, self.detector_options(**overrides))

    # -- storage: the database and its stores --------------------------------------------------
    @cached_property
    def feedback_store(self) -> FeedbackStore:
        from emolens.store.feedback import FeedbackStore

        return FeedbackStore(self.db_url, self.home / "blobs")

    @cached_property
    def keys(self) -> KeyStore:
        from emolens.store.keys import KeyStore

        return KeyStore(self.db_url)

    @cached_property
    def shadow_store(self) -> ShadowStore:
        from emolens.store.shadow import ShadowStore

        return ShadowStore(self.db_url, blobs=self.home / "shadow")


_default_lock = threading.Lock()
_default_ws: Workspace | None = None


def _default() -> Workspace:
    global _default_ws
    with _default_lock:
        settings = get_settings()  # cached; tests clear its cache to start over
        if _default_ws is None or _default_ws.settings is not settings:
            _default_ws = Workspace(settings)
        return _default_ws
