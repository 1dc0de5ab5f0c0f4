"""One front door: the composition root builds the parts once and hands them down; a face is the
same record in every output."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from emolens.pipeline.results import FaceRecord
from emolens.workspace import Workspace
from test_serve import ASTRONAUT, EXAMPLE, running_server


def blurred_astronaut(tmp_path: Path) -> Path:
    """The example photo, blurred until its face is too soft to read: the analyzer says "uncertain"."""
    image = cv2.imread(str(EXAMPLE))
    path = tmp_path / "blurred.jpg"
    cv2.imwrite(str(path), cv2.GaussianBlur(image, (0, 0), 6))
    return path


def test_one_workspace_shares_its_resolver_registry_and_stores(emolens_home):
    from emolens.pipeline.analyzer import Analyzer

    ws = Workspace.default()
    assert Workspace.default() is ws  # made once per process's settings
    a, b = Analyzer("fast", workspace=ws), Analyzer("accurate", workspace=ws)
    assert a.resolver is b.resolver is ws.models and ws.registry is ws.models.registry
    assert ws.feedback_store is ws.feedback_store and ws.feedback_store.url == ws.db_url == ws.keys.url
    assert ws.db_url == f"sqlite:///{emolens_home / 'emolens.db'}"


def test_the_server_decodes_an_upload_once_and_reports_the_analyzers_timing(tmp_path, monkeypatch):
    """Seam: the router decoded and timed the upload, the analyzer checked and timed it again,
    and the router's figure replaced the analyzer's."""
    import emolens.image.io
    import emolens.pipeline.analyzer

    calls = []
    real = emolens.image.io.load_image

    def counting(source, *args, **kwargs):
        calls.append(type(source).__name__)
        return real(source, *args, **kwargs)

    monkeypatch.setattr(emolens.image.io, "load_image", counting)
    monkeypatch.setattr(emolens.pipeline.analyzer, "load_image", counting)
    with running_server(tmp_path / "home") as (url, _app):
        calls.clear()
        r = httpx.post(f"{url}/api/v1/analyze", files={"image": ("a.jpg", ASTRONAUT, "image/jpeg")}, timeout=60)
    assert r.status_code == 200, r.text
    assert calls == ["bytes"], calls  # decoded once, from the upload's bytes
    body = r.json()
    assert set(body["timings_ms"]) >= {"decode", "detect", "classify"}
    assert all(set(face) == set(FaceRecord.model_fields) for face in body["faces"])


def test_a_face_is_the_same_record_in_python_cli_json_csv_and_rest(tmp_path, emolens_home):
    from typer.testing import CliRunner

    from emolens.cli import app
    from emolens.pipeline.analyzer import Analyzer

    photo = blurred_astronaut(tmp_path)
    results = Analyzer()(photo)
    face = results[0]
    assert face.uncertain and face.reason == "blurry" and face.index == 0
    assert "[0] uncertain: blurry (" in results.summary()
    record = face.to_dict()
    assert list(record) == list(FaceRecord.model_fields)  # every field, in the schema's order
    FaceRecord(**record)

    out = CliRunner().invoke(app, ["analyze", str(photo), "--json", "-", "--csv", str(tmp_path / "f.csv"), "-q"])
    assert out.exit_code == 0, out.output
    cli_face = json.loads(out.stdout)[0]["faces"][0]
    assert cli_face == json.loads(json.dumps(record))
    header, row = (tmp_path / "f.csv").read_text().splitlines()[:2]
    columns = header.split(",")
    assert columns[:2] == ["source", "index"] and {"reason", "uncertain", "landmarks", "top_label"} <= set(columns)
    values = dict(zip(columns, row.split(","), strict=True))
    assert values["reason"] == "blurry" and len(values["landmarks"].split()) == 10


@pytest.mark.slow
def test_batch_parquet_uses_the_face_records_names(tmp_path, emolens_home):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from emolens.batch import BatchJob, BatchOptions

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(ASTRONAUT)
    blurred_astronaut(photos)
    BatchJob(photos, tmp_path / "out", BatchOptions(workers=1)).run()
    table = pq.read_table(tmp_path / "out").to_pylist()
    rows = {Path(r["source"]).name: r for r in table}
    flat = set(row_names())
    assert flat - {"track_id"} <= set(table[0]), flat - set(table[0])
    assert rows["blurred.jpg"]["reason"] == "blurry" and rows["blurred.jpg"]["uncertain"]
    assert rows["a.jpg"]["index"] == 0 and rows["a.jpg"]["reason"] is None


def row_names() -> list[str]:
    from emolens.pipeline.results import FaceResult

    face = FaceResult(box=np.zeros(4), score=1.0, landmarks=np.zeros((5, 2)), probs={})
    return list(face.to_row())
