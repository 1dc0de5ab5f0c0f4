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
