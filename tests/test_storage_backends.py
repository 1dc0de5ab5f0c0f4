"""The storage domains on both databases: SQLite (a file in ``$EMOLENS_HOME``) and a real PostgreSQL
server (tests/pg.py; the PostgreSQL half skips, saying why, where no server binary exists).

The feedback store's own suite (tests/test_feedback.py) runs on both through the same
``database_url`` fixture; this module covers people, attendance, API keys and migrations.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import inspect

from emolens.core.errors import NotFoundError

pytest.importorskip("dlib")
pytest.importorskip("sklearn")

PEOPLE = {"P1": "Abdullah_Gul", "P2": "Adrien_Brody", "P3": "Al_Gore"}


@pytest.fixture(scope="module")
def lfw(shared_datasets) -> Path:
    path = shared_datasets / "identity" / "lfw" / "people"
    if not path.is_dir():
        pytest.skip(f"LFW identity set not found at {path}")
    return path


@pytest.fixture(scope="module")
def models():
    from emolens.identify.embed import DlibEmbedder
    from emolens.workspace import Workspace

    return {"detector": Workspace.default().detector(), "embedder": DlibEmbedder()}


def test_people_versions_attendance_and_erasure(emolens_home, database_url, lfw, models):
    from emolens.identify.attendance import AttendanceSession, list_sessions
    from emolens.identify.gallery import People

    people = People(**models)
    for key, name in PEOPLE.items():
        for photo in sorted((lfw / name).glob("*.jpg"))[:2]:
            assert people.enroll_image(photo, key, name.replace("_", " ")).enrolled
    assert [p.key for p in people.list()] == ["P1", "P2", "P3"]
    v1 = people.train(classifier="knn", folds=2)
    v2 = people.train(classifier="knn", folds=2)
    assert (v1.version.version, v2.version.version) == (1, 2)
    assert people.restore(1).version == 1 and people.active_version().version == 1

    session = AttendanceSession.start("maths", people=people, emotions=False)
    probe = sorted((lfw / "Al_Gore").glob("*.jpg"))[3]
    frame = session.add_image(probe)
    assert [m.key for m in frame.matches] == ["P3"]
    report = session.stop()
    assert [r.key for r in report.present] == ["P3"] and {r.key for r in report.absent} == {"P1", "P2"}
    assert AttendanceSession.open(session.uid[:6], people=people).uid == session.uid  # a unique prefix
    assert list_sessions(people)[0]["uid"] == session.uid

    removed = people.remove("P3")  # erasure: the person's faces and attendance records go
    assert removed["face_embeddings"] == 2 and removed["attendance_records"] == 1
    with pytest.raises(NotFoundError):
        people.get("P3")
    assert [r.key for r in AttendanceSession.open(session.uid, people=people).report().rows] == ["P1", "P2"]


def test_api_keys_create_verify_revoke(emolens_home, database_url):
    from emolens.store.keys import KeyStore

    keys = KeyStore(database_url)
    key, token = keys.create("ci", scope="admin")
    assert keys.verify(token).key_id == key.key_id and keys.verify(token + "x") is None
    keys.revoke(key.key_id)
    assert not keys.verify(token).active
    assert keys.count() == 0 and [k.name for k in keys.list()] == ["ci"]  # count: active keys


def test_a_new_database_opened_by_several_processes_at_once_is_migrated_once(emolens_home, database_url, tmp_path):
    # Several server workers start together on an empty database: one migrates, the others wait.
    go = tmp_path / "go"
    code = (  # import first, then wait for the start signal, so that all four open the database together
        "import sys, time, pathlib\n"
        "from emolens.store.keys import KeyStore\n"
        "import sqlalchemy, alembic.command, psycopg\n"
        "while not pathlib.Path(sys.argv[3]).exists(): time.sleep(0.005)\n"
        "KeyStore(sys.argv[1]).create('w' + sys.argv[2])\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, database_url, str(i), str(go)], env=os.environ.copy(), stderr=subprocess.PIPE
        )
        for i in range(4)
    ]
    time.sleep(3)
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]
    from emolens.store.db import get_engine
    from emolens.store.keys import KeyStore

    assert sorted(k.name for k in KeyStore(database_url).list()) == ["w0", "w1", "w2", "w3"]
    tables = set(inspect(get_engine(database_url)).get_table_names())
    assert {"feedback", "people", "api_keys", "alembic_version"} <= tables
