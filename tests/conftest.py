"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

import pg

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
    from emolens.models import clear_model_cache
    from emolens.workspace import get_settings

    home = tmp_path / "emolens_home"
    (home / "models").mkdir(parents=True)
    for key in ("EMOLENS_CONFIG", "EMOLENS_MODEL", "EMOLENS_MAX_PIXELS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("EMOLENS_HOME", str(home))
    get_settings.cache_clear()
    clear_model_cache()
    yield home
    get_settings.cache_clear()
    clear_model_cache()


# Modules whose tests train networks, run dlib on LFW, drive a browser or fine-tune: the quick
# subset (`QUICK=1 bash scripts/test.sh`, i.e. `-m "not slow"`) leaves them out. A single slow test
# elsewhere takes `@pytest.mark.slow`.
SLOW_MODULES = {
    "test_web.py",
    "test_train.py",
    "test_identity.py",
    "test_feedback.py",
    "test_explain.py",
    "test_synth.py",
    "test_serve_workers.py",
    "test_deploy.py",
    "test_webapp.py",
    "test_storage_backends.py",
}


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if item.path.name in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server for the session; skips, saying why, where none can start."""
    try:
        server = pg.start()
    except pg.Unavailable as exc:
        pytest.skip(f"PostgreSQL half skipped: {exc}")
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, monkeypatch) -> str:
    """Runs a storage test once on SQLite (in ``$EMOLENS_HOME``) and once on a fresh PostgreSQL database.

    Sets ``EMOLENS_DATABASE_URL`` so that every store (and every subprocess the test starts)
    uses that database; request it after ``emolens_home``."""
    from emolens.workspace import get_settings

    if request.param == "sqlite":
        monkeypatch.delenv("EMOLENS_DATABASE_URL", raising=False)
        url = get_settings().database_url or f"sqlite:///{get_settings().home / 'emolens.db'}"
    else:
        url = request.getfixturevalue("postgres_server").new_database()
        monkeypatch.setenv("EMOLENS_DATABASE_URL", url)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()
