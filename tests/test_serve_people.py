"""The identity and attendance endpoints against a real uvicorn server on loopback, with real LFW
photos (``../shared/datasets/identity/lfw``; skipped when absent): enroll, train, identify,
attendance sessions, erasure, and every refusal answered with the right status and a JSON error.

The tests run in file order and share one server: each builds on what the one before stored."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import httpx
import numpy as np
import pytest

from test_serve import assert_error, png, running_server

pytest.importorskip("dlib")
pytest.importorskip("sklearn")

PEOPLE = {
    "P001": ("Abdullah_Gul", "Abdullah Gul"),
    "P002": ("Adrien_Brody", "Adrien Brody"),
    "P003": ("Al_Gore", "Al Gore"),
}
BLANK = png(np.full((200, 200, 3), 128, np.uint8))


@pytest.fixture(scope="module")
def lfw(shared_datasets) -> Path:
    path = shared_datasets / "identity" / "lfw"
    if not (path / "people").is_dir():
        pytest.skip(f"LFW identity set not found at {path}")
    return path


def photos(lfw: Path, key: str) -> list[Path]:
    return sorted((lfw / "people" / PEOPLE[key][0]).glob("*.jpg"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("serve_people_home")
    # Reads without a key here; test_hardening checks that personal reads need one by default.
    with running_server(home, max_upload_mb=2.0, request_timeout_s=120, api_personal_reads_open=True) as (url, app):
        from emolens.store.keys import KeyStore

        store = KeyStore(app.state.emolens.db_url)
        keys = {scope: store.create(f"test-{scope}", scope)[1] for scope in ("read", "write", "admin")}
        with httpx.Client(base_url=url, timeout=120) as client:
            yield {"app": app, "keys": keys, "client": client, "home": home}


@pytest.fixture
def client(server) -> httpx.Client:
    return server["client"]


def hdr(server, scope: str) -> dict:
    return {"X-API-Key": server["keys"][scope]}


def upload(path: Path) -> dict:
    return {"image": (path.name, path.read_bytes(), "image/jpeg")}


def identify(client, path: Path) -> list[dict]:
    r = client.post("/api/v1/identify", files=upload(path))
    assert r.status_code == 200, r.text
    return r.json()["faces"]


def main_face(faces: list[dict]) -> dict:
    """The largest face (LFW photos sometimes show someone else in the background)."""
    assert faces
    return max(faces, key=lambda f: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))


def test_server_starts_without_loading_identity_models(server, client):
    assert not hasattr(server["app"].state, "people")  # made on the first identity request
    r = client.get("/api/v1/people")
    assert r.status_code == 200 and r.json() == {"people": [], "total": 0, "active_version": None}
    assert client.get("/api/v1/people/versions").json() == {"versions": [], "active": None}
    assert client.get("/api/v1/attendance/sessions").json() == {"sessions": []}


def test_refusals_store_nothing(server, client, lfw):
    photo = photos(lfw, "P001")[0]
    url = "/api/v1/people/P001/images"
    assert_error(client.post(url, files=upload(photo)), 401, "unauthorized")
    assert_error(client.post(url, files=upload(photo), headers=hdr(server, "read")), 403, "forbidden", "'read' scope")
    assert_error(client.post("/api/v1/people/train", headers=hdr(server, "write")), 403, "forbidden", "admin")
    assert_error(client.delete("/api/v1/people/P001", headers=hdr(server, "write")), 403, "forbidden")
    w = hdr(server, "write")
    r = client.post(url, files={"image": ("notes.txt", b"hello", "text/plain")}, headers=w)
    assert_error(r, 415, "unsupported_media_type")
    assert_error(client.post(url, content=photo.read_bytes(), headers=w | {"Content-Type": "image/jpeg"}), 415)
    r = client.post(url, files={"image": ("x.jpg", b"not a jpeg at all", "image/jpeg")}, headers=w)
    assert_error(r, 422, "bad_image")
    r = client.post(url, files={"image": ("wall.png", BLANK, "image/png")}, headers=w)
    assert_error(r, 422, "no_usable_face", "no face found")
    assert client.get("/api/v1/people").json()["total"] == 0  # not even the person was created
    assert not list((server["home"] / "identity").rglob("*.jpg"))
    assert_error(client.delete("/api/v1/people/NOBODY", headers=hdr(server, "admin")), 404, "not_found")
    assert_error(client.post("/api/v1/identify", files=upload(photo)), 409, "not_trained")
    assert_error(client.post("/api/v1/attendance/sessions", json={}, headers=w), 409, "not_trained")
    assert_error(client.post("/api/v1/people/train", headers=hdr(server, "admin")), 409, "refused", "enroll")


def test_enroll_train_identify(server, client, lfw):
    w = hdr(server, "write")
    for key, (_, name) in PEOPLE.items():
        for photo in photos(lfw, key)[:2]:
            r = client.post(f"/api/v1/people/{key}/images", files=upload(photo), data={"name": name}, headers=w)
            assert r.status_code == 201, r.text
            assert r.json()["enrolled"] == [{"key": key, "source": photo.name}]
    again = photos(lfw, "P001")[0]
    r = client.post("/api/v1/people/P001/images", files=upload(again), headers=w)
    assert r.status_code == 200 and r.json()["skipped"][0]["reason"] == "already enrolled for this person"
    listed = client.get("/api/v1/people").json()
    assert [(p["key"], p["name"], p["faces"]) for p in listed["people"]] == [(k, n, 2) for k, (_, n) in PEOPLE.items()]

    r = client.post("/api/v1/people/train", headers=hdr(server, "admin"))
    assert r.status_code == 200, r.text
    trained = r.json()
    assert trained["version"]["version"] == 1 and trained["version"]["active"]
    assert trained["summary"]["n_people"] == 3 and trained["summary"]["n_faces"] == 6
    assert "report_dir" not in trained["version"]
    assert client.get("/api/v1/people/versions").json()["active"] == 1

    for key, (_, name) in PEOPLE.items():
        face = main_face(identify(client, photos(lfw, key)[2]))  # a photo that was not enrolled
        assert (face["key"], face["name"], face["label"]) == (key, name, key)
        assert face["confidence"] > 0 and face["similarity"] > 0.9 and len(face["box"]) == 4
    stranger = sorted((lfw / "strangers").glob("*.jpg"))[0]
    faces = identify(client, stranger)
    assert faces and all(f["label"] == "unknown" and f["key"] is None for f in faces)


def test_restore_versions(server, client):
    a = hdr(server, "admin")
    r = client.post("/api/v1/people/versions/1/restore", headers=a)
    assert r.status_code == 200 and r.json()["version"]["active"]
    assert_error(client.post("/api/v1/people/versions/99/restore", headers=a), 404, "not_found")
    assert_error(client.post("/api/v1/people/versions/1/restore", headers=hdr(server, "write")), 403)


def test_attendance_session(server, client, lfw):
    w = hdr(server, "write")
    r = client.post("/api/v1/attendance/sessions", json={"name": "Monday"}, headers=w)
    assert r.status_code == 201, r.text
    uid = r.json()["uid"]
    assert r.json()["name"] == "Monday" and r.json()["version"] == 1
    base = f"/api/v1/attendance/sessions/{uid}"
    photo = photos(lfw, "P002")[3]
    r = client.post(f"{base}/images", files=upload(photo), headers=w)
    assert r.status_code == 200, r.text
    assert r.json()["newly_present"] == ["P002"] and main_face(r.json()["faces"])["key"] == "P002"
    r = client.post(f"{base}/images", files=upload(photos(lfw, "P002")[2]), headers=w)
    assert r.json()["newly_present"] == []  # present once, seen twice

    report = client.get(f"{base}/report").json()
    assert report["present"] == 1 and report["absent"] == 2 and report["frames"] == 2
    present = [row for row in report["rows"] if row["present"]]
    assert [(p["key"], p["name"], p["sightings"]) for p in present] == [("P002", "Adrien Brody", 2)]
    r = client.get(f"{base}/report", params={"format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [(row["key"], row["present"]) for row in rows if row["present"] == "yes"] == [("P002", "yes")]
    assert len(rows) == 3

    listed = client.get("/api/v1/attendance/sessions").json()["sessions"]
    assert [(s["uid"], s["present"], s["stopped_at"]) for s in listed] == [(uid, 1, None)]
    assert_error(client.post(f"{base}/stop"), 401)
    r = client.post(f"{base}/stop", headers=w)
    assert r.status_code == 200 and r.json()["stopped_at"] and r.json()["present"] == 1
    assert_error(client.post(f"{base}/images", files=upload(photo), headers=w), 409, "refused", "stopped")
    assert_error(client.get("/api/v1/attendance/sessions/ffffffffffff/report"), 404, "not_found")
    r = client.post("/api/v1/attendance/sessions/ffffffffffff/images", files=upload(photo), headers=w)
    assert_error(r, 404, "not_found")


def test_delete_person(server, client, lfw):
    r = client.delete("/api/v1/people/P003", headers=hdr(server, "admin"))
    assert r.status_code == 200, r.text
    assert r.json()["key"] == "P003" and r.json()["deleted"]["face_embeddings"] == 2
    assert [p["key"] for p in client.get("/api/v1/people").json()["people"]] == ["P001", "P002"]
    faces = identify(client, photos(lfw, "P003")[2])
    assert faces and all(f["key"] != "P003" for f in faces)
    assert_error(client.delete("/api/v1/people/P003", headers=hdr(server, "admin")), 404)
