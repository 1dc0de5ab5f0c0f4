"""The shadow model in serving, on a real uvicorn server: sampled, off the response path, every
comparison stored once under concurrent requests, disagreements with their crops, corrections
matched to them, the report (API and CLI), and promotion through the gates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from emolens.workspace import Workspace
from test_serve import ASTRONAUT, running_server

# Group photos where `fast` and `accurate` disagree on some faces (5 of 16 when this was written).
PHOTOS = ["compreface/016_8.jpg", "compreface/015_6.jpg", "dlib_voc/2007_007763.jpg", "dlib_voc/2008_004176.jpg"]


@pytest.fixture(scope="module")
def photos(shared_datasets) -> list[bytes]:
    folder = shared_datasets / "photos"
    if not all((folder / p).is_file() for p in PHOTOS):
        pytest.skip(f"group photos not found in {folder}")
    return [ASTRONAUT] + [(folder / p).read_bytes() for p in PHOTOS]


@pytest.fixture(scope="module")
def shadowed(tmp_path_factory):
    """A server whose active model is `fast`, with `accurate` as the shadow on every request."""
    home = tmp_path_factory.mktemp("shadow_home")
    with running_server(home, model="fast", shadow_model="accurate", shadow_share=1.0, serve_threads=2) as (url, app):
        from emolens.store.keys import KeyStore

        key = KeyStore(app.state.emolens.db_url).create("writer", "write")[1]
        with httpx.Client(base_url=url, timeout=120) as client:
            yield {"url": url, "app": app, "home": home, "client": client, "key": key}


def rows(state) -> list:
    from sqlalchemy import select

    from emolens.store.db import session
    from emolens.store.shadow import ShadowRow

    with session(state.db_url) as s:
        return list(s.scalars(select(ShadowRow)))


def test_concurrent_requests_each_compared_and_stored_once(shadowed, photos):
    client, state = shadowed["client"], shadowed["app"].state.emolens

    def post(data: bytes) -> dict:
        r = client.post("/api/v1/analyze", files={"image": ("p.jpg", data, "image/jpeg")})
        assert r.status_code == 200, r.text
        return r.json()

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, photos * 3))
    assert state.shadow.drain(120)
    faces = {(a["analysis_id"], f["index"]): f for a in answers for f in a["faces"]}
    stored = rows(state)
    assert len(stored) == len(faces) > len(answers)  # every face of every request, once
    assert {(r.analysis_id, r.face) for r in stored} == set(faces)
    st = state.shadow.status()
    assert st["sampled"] == len(answers) and st["stored"] == len(faces) and st["failed"] == st["skipped"] == 0
    blobs = Path(shadowed["home"]) / "shadow"
    for r in stored:
        answer = faces[(r.analysis_id, r.face)]
        assert r.active_model == "fast" and r.shadow_model == "accurate"
        assert r.active_label == answer["label"] and r.agree == (r.active_label == r.shadow_label)
        assert r.active_probs == pytest.approx(answer["probs"], abs=1e-3)
        if r.agree:
            assert r.crop_key is None
        else:  # the face crop, stored as feedback stores crops
            assert (blobs / r.crop_key[:2] / r.crop_key).is_file()
    assert any(not r.agree for r in stored), "fast and accurate agree on every face: no disagreement to test"


def test_the_answer_never_waits_for_the_shadow(shadowed, photos):
    """With the shadow model blocked, analyses are still answered; the comparison happens later."""
    client, state = shadowed["client"], shadowed["app"].state.emolens
    runner = state.shadow
    release = threading.Event()
    original = runner.analyzer.classify_faces

    def blocked(image, faces):
        release.wait(60)
        return original(image, faces)

    before = len(rows(state))
    runner.analyzer.classify_faces = blocked
    try:
        for _ in range(3):
            r = client.post("/api/v1/analyze", files={"image": ("a.jpg", ASTRONAUT, "image/jpeg")})
            assert r.status_code == 200 and len(r.json()["faces"]) == 1
        assert runner.pending == 3 and len(rows(state)) == before  # answered, shadow still waiting
    finally:
        release.set()
        runner.analyzer.classify_faces = original
    assert runner.drain(60)
    assert len(rows(state)) == before + 3


def test_report_and_a_correction_of_a_disagreement(shadowed):
    client, state = shadowed["client"], shadowed["app"].state.emolens
    rep = client.get("/api/v1/shadow").json()
    assert rep["model"] == "accurate" and rep["error"] is None and rep["status"]["share"] == 1.0
    body = rep["report"]
    stored = rows(state)
    assert (body["active"], body["shadow"], body["faces"]) == ("fast", "accurate", len(stored))
    assert body["agree"] == sum(r.agree for r in stored)
    assert body["agreement"] == pytest.approx(body["agree"] / body["faces"])
    assert sum(n for row in body["confusion"].values() for n in row.values()) == body["faces"]
    assert body["corrections"]["corrected"] == 0

    read = {"X-API-Key": shadowed["key"]}  # faces: the personal-read rule
    query = {"active": "fast", "shadow": "accurate"}
    d = client.get("/api/v1/shadow/disagreements", params=query, headers=read).json()
    assert d and all(x["active_label"] != x["shadow_label"] and x["corrected"] is None for x in d)
    crop = client.get(f"/api/v1/shadow/crops/{d[0]['crop_key']}", headers=read)
    assert crop.status_code == 200 and crop.headers["content-type"] == "image/png"
    assert client.get(f"/api/v1/shadow/crops/{d[0]['crop_key']}").status_code == 401
    assert client.get("/api/v1/shadow/crops/../../emolens.db", headers=read).status_code == 404

    # A user says the shadow was right on that face: the feedback crop has the same key.
    target = d[0]
    fb = client.post(
        "/api/v1/feedback",
        json={"analysis_id": target["analysis_id"], "face": target["face"], "label": target["shadow_label"]},
        headers={"X-API-Key": shadowed["key"]},
    )
    assert fb.status_code == 201, fb.text
    c = client.get("/api/v1/shadow").json()["report"]["corrections"]
    assert c == {"corrected": 1, "active_right": 0, "shadow_right": 1, "neither_right": 0, "more_often_right": "shadow"}


def test_cli_report_reads_the_same_database(shadowed):
    r = shadowed["client"].post("/api/v1/analyze", files={"image": ("a.jpg", ASTRONAUT, "image/jpeg")})
    assert r.status_code == 200 and shadowed["app"].state.emolens.shadow.drain(60)
    env = {"EMOLENS_HOME": str(shadowed["home"]), "COLUMNS": "200"}
    run = subprocess.run(
        [sys.executable, "-m", "emolens.cli", "models", "shadow", "report", "--json", "-"],
        capture_output=True,
        text=True,
        env=os.environ | env,
    )
    assert run.returncode == 0, run.stderr
    rep = json.loads(run.stdout)
    assert rep["shadow"] == "accurate" and rep["faces"] == len(rows(shadowed["app"].state.emolens))
    text = subprocess.run(
        [sys.executable, "-m", "emolens.cli", "models", "shadow", "report"], capture_output=True, text=True,
        env=os.environ | env,
    )  # fmt: skip
    assert f"agreement {rep['agreement']:.1%}" in text.stdout
    corrected = rep["corrections"]["corrected"]  # 1 after the correction test, 0 when run alone
    assert (f"corrected disagreements: {corrected}" in text.stdout) == bool(corrected)


def test_a_sampled_share_a_full_queue_and_a_broken_shadow(tmp_path):
    image = {"image": ("a.jpg", ASTRONAUT, "image/jpeg")}
    with running_server(tmp_path / "a", model="fast", shadow_model="fast-int8", shadow_share=0.0) as (url, app):
        state = app.state.emolens
        for _ in range(3):
            assert httpx.post(f"{url}/api/v1/analyze", files=image, timeout=60).status_code == 200
        assert state.shadow.status()["sampled"] == 0 and rows(state) == []
    with running_server(tmp_path / "b", model="fast", shadow_model="nonexistent", shadow_share=1.0) as (url, app):
        r = httpx.post(f"{url}/api/v1/analyze", files=image, timeout=60)
        assert r.status_code == 200  # a broken shadow never stops the active model
        rep = httpx.get(f"{url}/api/v1/shadow").json()
        assert "no model named 'nonexistent'" in rep["error"] and rep["status"] is None
    cfg = {"model": "fast", "shadow_model": "accurate", "shadow_share": 1.0, "shadow_queue": 1}
    with running_server(tmp_path / "c", **cfg) as (url, app):
        runner = app.state.emolens.shadow
        release = threading.Event()
        original = runner.analyzer.classify_faces

        def blocked(image, faces):
            release.wait(60)
            return original(image, faces)

        runner.analyzer.classify_faces = blocked
        try:
            for _ in range(3):  # the first waits in the shadow's thread; the queue (1) is then full
                assert httpx.post(f"{url}/api/v1/analyze", files=image, timeout=60).status_code == 200
        finally:
            release.set()
        assert runner.drain(60)
        st = runner.status()
        assert (st["sampled"], st["skipped"], st["stored"]) == (3, 2, 1)


def test_promote_the_shadow_through_the_gates(shared_datasets, emolens_home):
    """`fast-int8` is not more accurate than `fast`: refused; `accurate` is more accurate than `fast-int8`
    with confidence: promoted."""
    import numpy as np

    from emolens.shadow.promote import promote_shadow

    val = shared_datasets / "fer2013" / "val.npz"
    with np.load(val) as z:  # a random sixth: enough to see fast-int8 is no better
        pick = np.random.default_rng(0).choice(len(z["labels"]), 600, replace=False)
        np.savez(emolens_home / "part.npz", images=z["images"][pick], labels=z["labels"][pick], classes=z["classes"])
    cmd = ["models", "shadow", "promote", "fast-int8", "--base-val", str(emolens_home / "part.npz")]
    refused = subprocess.run(
        [sys.executable, "-m", "emolens.cli", *cmd],
        capture_output=True,
        text=True,
        env=os.environ | {"EMOLENS_HOME": str(emolens_home), "COLUMNS": "200"},
    )
    assert refused.returncode == 3, refused.stderr
    assert "gate base_gain_confident: failed" in refused.stdout and "not promoted" in refused.stdout
    assert (
        Workspace.default().registry.active_name() == "v1"
    )  # the shipped default, registered by the gates; nothing promoted

    # On PublicTest's FER2013 labels `accurate` leads `fast-int8` by 1.9 points (p < 0.001; both now
    # learn from the FER+ votes, and on those labels `fast` leads): make `fast-int8` active.
    assert Workspace.default().registry.promote("fast-int8").name == "v2"
    outcome = promote_shadow(Workspace.default(), "accurate", base_val=val, promote=True)
    assert outcome.passed and outcome.promoted and outcome.active == "v2"
    g = outcome.gates
    assert g["base_gain_confident"]["passed"] and g["base_gain_confident"]["p_value"] < 0.05
    assert g["base_holds"]["passed"] and "skipped" in g["feedback_improves"]
    assert Workspace.default().registry.active_name() == outcome.version == "v3"
    with pytest.raises(Exception, match="ensemble"):
        promote_shadow(Workspace.default(), "fast+accurate", base_val=val)
