"""What EmoLens keeps about people stays readable by its owner only, folders included, whatever
the umask: the identity report's confusion matrix, the stores' folders, the home folder."""

from __future__ import annotations

import contextlib
import os

import pytest


@pytest.fixture
def open_umask():
    """The common umask 022: files 0644 and folders 0755 unless EmoLens says otherwise."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return path.stat().st_mode & 0o777


def test_identity_report_folder_and_confusion_matrix_are_private(tmp_path, open_umask):
    pytest.importorskip("matplotlib")
    from emolens.identify.report import write_report

    report = {"confusion": {"labels": ["p-1f3a", "p-9c2e"], "matrix": [[3, 1], [0, 4]]}, "per_person": []}
    folder = tmp_path / "identity" / "versions" / "v1"
    with contextlib.suppress(KeyError):  # the Markdown needs a full report; the folder and picture come first
        write_report(report, folder)
    assert (folder / "confusion.png").is_file()
    assert mode(folder / "confusion.png") == 0o600
    for p in (folder, folder.parent, folder.parent.parent):
        assert mode(p) == 0o700, p


def test_blob_folders_and_a_new_home_are_private(tmp_path, open_umask):
    from emolens.store.blobs import BlobStore
    from emolens.store.db import get_engine

    store = BlobStore(tmp_path / "home" / "blobs")
    key = store.put(b"\x89PNG not really")
    assert mode(store.path(key)) == 0o600
    assert mode(store.path(key).parent) == 0o700 and mode(store.root) == 0o700
    home = tmp_path / "fresh-home"
    get_engine(f"sqlite:///{home / 'emolens.db'}")
    assert mode(home) == 0o700 and mode(home / "emolens.db") == 0o600


def test_private_dir_leaves_existing_folders_alone(tmp_path, open_umask):
    from emolens.core.fileio import private_dir

    mine = tmp_path / "mine"
    mine.mkdir(mode=0o755)
    private_dir(mine / "a" / "b")
    assert mode(mine) == 0o755 and mode(mine / "a") == 0o700 and mode(mine / "a" / "b") == 0o700
