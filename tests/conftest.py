"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """``<repo>/../shared/datasets``: development data that lives beside the repository, never in it."""
    path = REPO_ROOT.parent / "shared" / "datasets"
    if not path.is_dir():
        pytest.skip(f"shared datasets not found at {path}")
    return path


@pytest.fixture
def emolens_home(tmp_path, monkeypatch) -> Path:
    """A fresh, empty ``$EMOLENS_HOME`` (with a ``models/`` folder) and fresh settings.

    The settings and the loaded-model caches are cleared on the way in and out, so no test sees
    another's home or models; ``monkeypatch`` restores the environment afterwards.
    """
    from emolens.models import load_emotion_model
    from emolens.settings import get_settings

    home = tmp_path / "emolens_home"
    (home / "models").mkdir(parents=True)
    for key in ("EMOLENS_CONFIG", "EMOLENS_MODEL", "EMOLENS_MAX_PIXELS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("EMOLENS_HOME", str(home))
    get_settings.cache_clear()
    load_emotion_model.cache_clear()
    yield home
    get_settings.cache_clear()
    load_emotion_model.cache_clear()
