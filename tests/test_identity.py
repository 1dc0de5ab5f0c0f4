"""Identity and attendance on real photos (LFW), the real dlib model and a real SQLite file.

Six people are enrolled once per module (3 photos each); tests that change the enrolled set
work on databases of their own. Photos: ``../shared/datasets/identity/lfw`` (see benchmarks/identity.py).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

pytest.importorskip("dlib")
pytest.importorskip("sklearn")

from emolens.core.errors import EmoLensError, NotFoundError, RefusedError  # noqa: E402
from emolens.identify import recognize  # noqa: E402
from emolens.identify.enrol import NoUsableFaceError, enrollment_face, parse_person_folder  # noqa: E402
from emolens.identify.gallery import People  # noqa: E402

PEOPLE = {  # folder in the class directory -> LFW name
    "STU001_Abdullah_Gul": "Abdullah_Gul",
    "STU002_Adrien_Brody": "Adrien_Brody",
    "STU003_Al_Gore": "Al_Gore",
    "STU004_Amelie_Mauresmo": "Amelie_Mauresmo",
    "STU005_Andre_Agassi": "Andre_Agassi",
    "STU006_Angelina_Jolie": "Angelina_Jolie",
}
ENROLLED_PHOTOS = 3


def photos(lfw: Path, name: str) -> list[Path]:
    return sorted((lfw / "people" / name).glob("*.jpg"))


@pytest.fixture(scope="module")
def lfw(shared_datasets) -> Path:
    path = shared_datasets / "identity" / "lfw"
    if not (path / "people").is_dir():
        pytest.skip(f"LFW identity set not found at {path}")
    return path


@pytest.fixture(scope="module")
def models():
    """One detector and one embedder for the module: loading dlib's models once is enough."""
    from emolens.identify.embed import DlibEmbedder
    from emolens.workspace import Workspace

    return {"detector": Workspace.default().detector(), "embedder": DlibEmbedder()}


@pytest.fixture(scope="module")
def world(lfw, models, tmp_path_factory):
    """A home with six people enrolled from a class folder and a trained recognizer (v1)."""
    from emolens.workspace import get_settings

    home = tmp_path_factory.mktemp("identity_home")
    klass = tmp_path_factory.mktemp("class")
    for folder, name in PEOPLE.items():
        (klass / folder).mkdir()
        for p in photos(lfw, name)[:ENROLLED_PHOTOS]:
            shutil.copy(p, klass / folder / p.name)
    (klass / "STU001_Abdullah_Gul" / "broken.jpg").write_bytes(b"not a jpeg at all")
    blank = np.full((200, 200, 3), 128, np.uint8)
    from PIL import Image

    Image.fromarray(blank).save(klass / "STU002_Adrien_Brody" / "wall.png")
    (klass / "loose.jpg").write_bytes((klass / "STU003_Al_Gore" / photos(lfw, "Al_Gore")[0].name).read_bytes())
    (klass / "STU001_Someone_Else").mkdir()  # the same id twice: never merged into one person
    shutil.copy(photos(lfw, "Ana_Palacio")[0], klass / "STU001_Someone_Else")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMOLENS_HOME", str(home))
        for key in ("EMOLENS_DATABASE_URL", "EMOLENS_EMBEDDER", "EMOLENS_IDENTITY_THRESHOLD", "EMOLENS_CONFIG"):
            mp.delenv(key, raising=False)
        get_settings.cache_clear()
        people = People(**models)
        report = people.enroll_folder(klass)
        trained = people.train()
        yield {"home": home, "people": people, "enroll": report, "train": trained, "class": klass}
    get_settings.cache_clear()


# ---------------------------------------------------------------- enrollment


def test_folder_names_give_id_and_display_name():
    assert parse_person_folder("STU001_Jane_Doe") == ("STU001", "Jane Doe")
    assert parse_person_folder("42_Bob") == ("42", "Bob")
    assert parse_person_folder("Jane_Doe") == ("Jane_Doe", "Jane Doe")
    assert parse_person_folder("Ms Smith") == ("Ms Smith", "Ms Smith")


def test_enroll_folder_enrolls_everyone_and_lists_what_it_skipped(world):
    report, people = world["enroll"], world["people"]
    assert sorted(report.people_added) == [f"STU00{i}" for i in range(1, 7)]
    assert len(report.enrolled) == len(PEOPLE) * ENROLLED_PHOTOS
    skipped = dict(report.skipped)
    assert "not an image" in skipped["broken.jpg"]
    assert skipped["wall.png"] == "no face found"
    assert skipped["loose.jpg"] == "not in a person's subfolder"
    assert "already used by folder STU001_Abdullah_Gul" in skipped["STU001_Someone_Else/"]
    listed = {p.key: p for p in people.list()}
    assert listed["STU004"].name == "Amelie Mauresmo"
    assert all(p.faces == ENROLLED_PHOTOS for p in listed.values())
    # Embeddings are in the database, crops in the blob store, nothing pickled anywhere.
    assert len(list((world["home"] / "identity" / "faces").rglob("*.jpg"))) == len(PEOPLE) * ENROLLED_PHOTOS
    assert not list(world["home"].rglob("*.pkl")) and not list(world["home"].rglob("*.npy"))


def test_enrolling_the_same_photo_twice_is_skipped_and_bad_ids_refused(world, lfw):
    again = world["people"].enroll_image(photos(lfw, "Al_Gore")[0], "STU003")
    assert again.enrolled == [] and again.skipped == [("Al_Gore_0001.jpg", "already enrolled for this person")]
    from emolens.store.people import InvalidPersonError

    for bad in ("", "a/b", "x" * 129):
        with pytest.raises(InvalidPersonError):
            world["people"].enroll_image(photos(lfw, "Al_Gore")[0], bad)


def test_several_faces_enroll_the_largest_and_small_faces_are_refused(lfw, models):
    big = _rgb(photos(lfw, "Andre_Agassi")[5])
    small = _rgb(photos(lfw, "Al_Gore")[5])[::2, ::2]
    canvas = np.full((300, 420, 3), 90, np.uint8)
    canvas[25:275, :250], canvas[80:205, 280:405] = big, small
    face, n = enrollment_face(canvas, models["detector"])
    assert n == 2 and face.box[0] < 250  # the large face, on the left
    with pytest.raises(NoUsableFaceError, match="too small"):
        enrollment_face(canvas, models["detector"], min_size=400)


# ---------------------------------------------------------------- recognition


def test_enrolled_people_are_recognised_on_photos_not_enrolled(world, lfw):
    people = world["people"]
    for folder, name in PEOPLE.items():
        key = folder.split("_")[0]
        for probe in photos(lfw, name)[ENROLLED_PHOTOS : ENROLLED_PHOTOS + 2]:
            matches = people.identify(probe)
            main = max(matches, key=lambda m: (m.box[2] - m.box[0]) * (m.box[3] - m.box[1]))
            assert main.key == key, f"{probe.name}: {main.to_dict()}"
            assert main.name == name.replace("_", " ")


def test_strangers_are_unknown(world, lfw):
    people = world["people"]
    strangers = sorted((lfw / "strangers").glob("*.jpg"))[:8]
    labels = [m.label for p in strangers for m in people.identify(p)]
    assert len(labels) >= 8
    assert labels.count("unknown") >= len(labels) - 1, labels
    # Without the threshold and the similarity check, everyone is taken for an enrolled person:
    # the rejection comes from them, not from an absence of candidates.
    forced = [m.label for p in strangers for m in people.identify(p, threshold=0.0, min_similarity=-1.0)]
    assert "unknown" not in forced


def test_training_compares_classifiers_and_reports_thresholds(world):
    result = world["train"]
    report = result.report
    assert {c["kind"] for c in report["classifiers"]} == {"centroid", "knn", "svm"}
    assert [r["threshold"] for r in report["thresholds"]] == list(recognize.THRESHOLDS)
    s = report["summary"]
    assert 0.5 <= s["threshold"] <= 0.98 and s["classifier"] in recognize.KINDS
    assert s["cv_accuracy"] >= 0.9 and s["false_accept_rate"] is not None and s["false_reject_rate"] is not None
    assert s["impostor_probes"] == s["genuine_probes"] == len(PEOPLE) * ENROLLED_PHOTOS
    folder = result.report_dir
    assert {p.name for p in folder.iterdir()} >= {"report.md", "report.json", "confusion.png"}
    md = (folder / "report.md").read_text()
    assert "Threshold analysis" in md and "Amelie Mauresmo" in md and "false accept" in md
    assert json.loads((folder / "report.json").read_text())["summary"] == s


def test_versions_are_kept_and_restored_identically(world, lfw):
    people = world["people"]
    rec1, info1, _ = people.recognizer()
    probes = people.embedder.embed_chips(
        [people.embedder.align(img, enrollment_face(img, people.detector)[0]) for img in map(_rgb, _probes(lfw))]
    )
    before = rec1.predict(probes)
    people.enroll_image(photos(lfw, "Al_Gore")[6], "STU003")
    v2 = people.train(classifier="centroid")
    assert v2.version.version == info1.version + 1 and v2.version.active
    assert [v.version for v in people.versions()] == [info1.version, info1.version + 1]
    assert people.active_version().version == v2.version.version
    restored = people.restore(info1.version)
    assert restored.active and people.active_version().version == info1.version
    from emolens.identify.versions import clear_cache

    clear_cache()  # force a refit from the stored faces
    rec1b, info1b, _ = people.recognizer()
    after = rec1b.predict(probes)
    assert info1b.version == info1.version and rec1b.effective_kind == rec1.effective_kind
    np.testing.assert_array_equal(after.label, before.label)
    np.testing.assert_allclose(after.confidence, before.confidence, atol=1e-9)
    with pytest.raises(NotFoundError):
        people.restore(99)


def test_one_enrolled_person_still_works(lfw, models, tmp_path):
    people = People(f"sqlite:///{tmp_path / 'one.db'}", home=tmp_path, **models)
    with pytest.raises(EmoLensError, match="train"):
        people.identify(photos(lfw, "Ai_Sugiyama")[0])
    people.enroll_images(photos(lfw, "Ai_Sugiyama")[:2], "ai", "Ai Sugiyama")
    result = people.train()
    assert result.report["summary"]["classifier"] == "centroid"
    assert result.report["summary"]["false_accept_rate"] is None  # nobody else to hold out...
    strangers = sorted((lfw / "strangers").glob("*.jpg"))[2:4]
    result = people.train(strangers=strangers)  # ...unless strangers' photos are given
    assert result.report["summary"]["impostor_probes"] == 2
    assert "rule of three" in (result.report_dir / "report.md").read_text()
    assert [m.label for m in people.identify(photos(lfw, "Ai_Sugiyama")[3])] == ["ai"]
    stranger = sorted((lfw / "strangers").glob("*.jpg"))[0]
    assert {m.label for m in people.identify(stranger)} == {"unknown"}
    with pytest.raises(EmoLensError, match="SVM"):
        people.train(classifier="svm")


def test_threshold_analysis_on_known_probes():
    genuine = recognize.Probes(
        pred=np.array([0, 1, 1, 2]), conf=np.array([0.9, 0.8, 0.6, 0.95]), sim=np.ones(4), true=np.array([0, 1, 2, 2])
    )
    impostor = recognize.Probes(pred=np.array([0, 1]), conf=np.array([0.7, 0.55]), sim=np.ones(2))
    table = recognize.threshold_table(genuine, impostor, min_similarity=0.5)
    at = {r["threshold"]: r for r in table}
    assert at[0.5]["coverage"] == 1.0 and at[0.5]["accuracy"] == 0.75 and at[0.5]["false_accept_rate"] == 1.0
    assert at[0.61]["coverage"] == 0.75 and at[0.61]["accuracy"] == 1.0 and at[0.61]["false_accept_rate"] == 0.5
    assert at[0.71]["false_accept_rate"] == 0.0 and at[0.71]["false_reject_rate"] == 0.25
    row, _ = recognize.recommend(table)
    assert row["threshold"] == 0.71  # the lowest threshold with no false accept and all accepted right
    # The similarity check rejects whatever the confidence.
    gated = recognize.threshold_table(genuine, impostor, min_similarity=1.5)
    assert gated[0]["coverage"] == 0.0 and gated[0]["false_accept_rate"] == 0.0


# ---------------------------------------------------------------- attendance


def test_attendance_from_images_and_a_video(world, lfw, tmp_path):
    import cv2

    from emolens.identify.attendance import AttendanceSession

    people = world["people"]
    session = AttendanceSession.start("maths", people=people)
    first = session.add_image(photos(lfw, "Abdullah_Gul")[4])
    assert first.newly_present == ["STU001"] and first.emotions[0]
    again = session.add_image(photos(lfw, "Abdullah_Gul")[5])
    assert again.newly_present == []  # marked present once

    video = tmp_path / "class.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (250, 250))
    frames = [photos(lfw, "Angelina_Jolie")[4], sorted((lfw / "strangers").glob("*.jpg"))[1]]
    for p in frames:
        for _ in range(3):
            writer.write(cv2.cvtColor(_rgb(p), cv2.COLOR_RGB2BGR))
    writer.release()
    ticks = []
    summary = session.add_video(video, every=3, progress=lambda done, total: ticks.append((done, total)))
    assert (summary.frames_read, summary.frames_used, summary.undecodable) == (6, 2, 0)
    assert ticks == [(1, 6), (4, 6), (6, 6)]  # the bar ends full though the last sampled frame is frame 3
    assert summary.newly_present == ["STU006"]

    truncated = tmp_path / "cut.avi"
    truncated.write_bytes(video.read_bytes()[: int(video.stat().st_size * 0.6)])
    cut = session.add_video(truncated, every=100)
    assert cut.frames_read < 6 and cut.undecodable == 6 - cut.frames_read
    damaged = bytearray(video.read_bytes())  # zeros in the second frame's JPEG data
    second = damaged.find(b"\xff\xd8", damaged.find(b"\xff\xd8") + 2)
    damaged[second + 200 : second + 2000] = bytes(1800)
    (tmp_path / "damaged.avi").write_bytes(bytes(damaged))
    hurt = session.add_video(tmp_path / "damaged.avi", every=100)
    assert (hurt.frames_read, hurt.undecodable) == (5, 1)  # counted, skipped, and reading went on

    report = session.stop()
    with pytest.raises(RefusedError):
        session.add_image(photos(lfw, "Al_Gore")[4])
    present = {r.key: r for r in report.present}
    assert set(present) == {"STU001", "STU006"}
    gul = present["STU001"]
    assert gul.sightings == 2 and gul.first_seen_source == photos(lfw, "Abdullah_Gul")[4].name
    assert gul.first_seen <= gul.last_seen and 0 < gul.confidence <= gul.best_confidence
    assert gul.emotion in gul.mean_probs and abs(sum(gul.emotion_shares.values()) - 1) < 1e-6
    assert "frame 0" in present["STU006"].first_seen_source
    assert report.unknown_faces >= 1 and report.undecodable == cut.undecodable + hurt.undecodable
    rows = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert [r["key"] for r in rows][:2] == ["STU001", "STU006"] and len(rows) == len(PEOPLE)
    assert {r["present"] for r in rows[2:]} == {"no"} and rows[0]["emotion"] == gul.emotion
    out = session.export_csv(tmp_path / "out" / "maths.csv")
    assert out.read_bytes().decode() == report.to_csv()


# ---------------------------------------------------------------- privacy


def test_remove_erases_every_trace_of_a_person(lfw, models, tmp_path):
    from emolens.identify.attendance import AttendanceSession
    from emolens.store.db import get_engine, session
    from emolens.store.people import FaceRow, PersonRow, RecordRow, VersionFaceRow

    url = f"sqlite:///{tmp_path / 'erase.db'}"
    people = People(url, home=tmp_path, **models)
    for key, name in (("STU010", "Al_Gore"), ("STU011", "Adrien_Brody"), ("STU012", "Amelie_Mauresmo")):
        people.enroll_images(photos(lfw, name)[:2], key, name.replace("_", " "))
    people.train()
    attendance = AttendanceSession.start("erase", people=people, emotions=False)
    attendance.add_image(photos(lfw, "Al_Gore")[3])
    attendance.add_image(photos(lfw, "Adrien_Brody")[3])
    with session(url) as s:
        gore = s.scalars(select(PersonRow).where(PersonRow.key == "STU010")).one()
        gore_id, crops = gore.id, [f.image_key for f in s.scalars(select(FaceRow).where(FaceRow.person_id == gore.id))]
        assert s.scalar(select(func.count()).select_from(RecordRow).where(RecordRow.person_id == gore_id)) == 1
    assert all(people.blobs.path(k).is_file() for k in crops)

    counts = people.remove("STU010")

    assert counts["people"] == 1 and counts["face_embeddings"] == 2 and counts["attendance_records"] == 1
    with session(url) as s:
        assert s.scalar(select(func.count()).select_from(PersonRow).where(PersonRow.id == gore_id)) == 0
        assert s.scalar(select(func.count()).select_from(FaceRow).where(FaceRow.person_id == gore_id)) == 0
        assert s.scalar(select(func.count()).select_from(RecordRow).where(RecordRow.person_id == gore_id)) == 0
        assert s.scalar(select(func.count()).select_from(VersionFaceRow)) == 4  # the two others' faces
    assert not any(people.blobs.path(k).exists() for k in crops)
    assert [r.key for r in attendance.report().rows] == ["STU011", "STU012"]
    # No trace in the reports, nor in the database file's bytes (freed pages are zeroed).
    for f in (tmp_path / "identity" / "versions").rglob("report.*"):
        text = f.read_text()
        assert "STU010" not in text and "Al Gore" not in text and "Al_Gore" not in text
    get_engine(url).dispose()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("erase.db*"))
    assert b"STU010" not in raw and b"Al Gore" not in raw and b"Al_Gore" not in raw
    assert b"Adrien Brody" in raw  # the check can see names: the others' are still there
    with pytest.raises(NotFoundError):
        people.remove("STU010")
    assert [m.label for m in people.identify(photos(lfw, "Al_Gore")[4])] == ["unknown"]


def test_enrollment_writes_nothing_personal_to_the_log(lfw, models, tmp_path, caplog):
    people = People(f"sqlite:///{tmp_path / 'log.db'}", home=tmp_path, **models)
    folder = tmp_path / "class" / "STU777_Secret_Person"
    folder.mkdir(parents=True)
    for p in photos(lfw, "Ana_Guevara")[:2]:
        shutil.copy(p, folder / p.name)
    with caplog.at_level(logging.DEBUG):
        report = people.enroll_folder(tmp_path / "class")
        people.enroll_image(photos(lfw, "Ana_Guevara")[2], "STU778", "Another Secret")
        people.train()
    assert len(report.enrolled) == 2
    from emolens.store.db import session
    from emolens.store.people import FaceRow

    with session(people.url) as s:
        vector = s.scalars(select(FaceRow)).first().embedding
    text = caplog.text
    assert "enrolled" in text  # the log is not silent: it counts
    for secret in ("STU777", "STU778", "Secret", "Ana_Guevara", "Ana Guevara", "Another"):
        assert secret not in text
    for v in vector[:8]:
        assert f"{v:.4f}" not in text and f"{v:.3f}"[1:] not in text


# ---------------------------------------------------------------- the ONNX embedder


def test_onnx_embedder_takes_size_and_normalisation_from_metadata(lfw, models, tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from emolens.identify.embed import OnnxEmbedder, create_embedder

    weights = np.random.default_rng(0).normal(size=(3, 16)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=0),
            helper.make_node("MatMul", ["m", "w"], ["y"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 64, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor("w", TensorProto.FLOAT, weights.shape, weights.ravel())],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    meta = model.metadata_props.add()
    meta.key, meta.value = "emolens.input", json.dumps({"size": 64, "mean": [0.5], "std": [0.5], "range": 255})
    path = tmp_path / "tiny_arcface.onnx"
    onnx.save(model, path)

    emb = create_embedder(str(path))
    assert isinstance(emb, OnnxEmbedder) and emb.size == 64
    np.testing.assert_allclose(emb.mean, [127.5]) and np.testing.assert_allclose(emb.std, [127.5])
    image = _rgb(photos(lfw, "Al_Gore")[0])
    face, _ = enrollment_face(image, models["detector"])
    chip = emb.align(image, face)
    vec = emb.embed(image, [face])
    assert chip.shape == (64, 64, 3) and vec.shape == (1, 16)
    assert abs(np.linalg.norm(vec) - 1) < 1e-5
    expected = ((chip.astype(np.float32) - 127.5) / 127.5).mean((0, 1)) @ weights
    np.testing.assert_allclose(vec[0], expected / np.linalg.norm(expected), rtol=1e-4, atol=1e-5)
    assert emb.name.startswith("onnx-")

    # Embeddings of one embedder are never compared with another's.
    people = People(f"sqlite:///{tmp_path / 'onnx.db'}", home=tmp_path, embedder=emb, detector=models["detector"])
    people.enroll_images(photos(lfw, "Al_Gore")[:2], "gore")
    people.train()
    dlib_people = People(f"sqlite:///{tmp_path / 'onnx.db'}", home=tmp_path, **models)
    assert dlib_people.list()[0].faces == 0
    with pytest.raises(EmoLensError, match="embedder"):
        dlib_people.identify(photos(lfw, "Al_Gore")[3])


# ---------------------------------------------------------------- command line


def test_cli_enroll_identify_attend_remove(lfw, emolens_home, tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from emolens.cli import app

    klass = tmp_path / "class"
    for folder, name in (("STU101_Al_Gore", "Al_Gore"), ("STU102_Angelina_Jolie", "Angelina_Jolie")):
        (klass / folder).mkdir(parents=True)
        for p in photos(lfw, name)[:2]:
            shutil.copy(p, klass / folder / p.name)
    # A third person whose second photo has no face: the skipped line names them, and they are
    # left with fewer photos than the others, which enrolment warns about.
    (klass / "STU103_Ana_Palacio").mkdir()
    shutil.copy(photos(lfw, "Ana_Palacio")[0], klass / "STU103_Ana_Palacio")
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(klass / "STU103_Ana_Palacio" / "wall.png")
    runner = CliRunner()

    def run(*args: str, stdout: bool = False) -> str:
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return result.stdout if stdout else result.output

    out = run("people", "enroll", klass)
    assert "5 faces enrolled for 3 people" in out and "version 1" in out
    assert "skipped STU103: wall.png: no face found" in out
    assert "STU103 (Ana Palacio) has 1 photo(s) enrolled, most people have 2" in out
    assert "STU101 (" not in out.split("version 1")[0].split("warning")[-1]  # only the short one is warned about
    stranger = sorted((lfw / "strangers").glob("*.jpg"))[0]
    unknown = run("identify", stranger)
    assert "unknown (best confidence" in unknown and "similarity 0." in unknown
    assert "Angelina Jolie" in run("people", "list")
    probe = photos(lfw, "Angelina_Jolie")[3]
    faces = json.loads(run("identify", probe, "--json", "-", stdout=True))["faces"]
    main = max(faces, key=lambda f: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))
    assert main["label"] == "STU102" and main["name"] == "Angelina Jolie"
    probes = tmp_path / "probes"  # a folder, as `analyze` takes: one record per photo
    probes.mkdir()
    shutil.copy(probe, probes / "a.jpg")
    shutil.copy(photos(lfw, "Al_Gore")[3], probes / "b.jpg")
    records = json.loads(run("identify", probes, "--json", "-", stdout=True))
    assert [Path(r["source"]).name for r in records] == ["a.jpg", "b.jpg"]
    assert "b.jpg: face 0" in run("identify", probes) and "STU101" in run("identify", probes / "b.jpg")
    started = run("attendance", "start", photos(lfw, "Al_Gore")[3], "--name", "cli")
    assert "present: STU101" in started
    # `add` feeds the open session without its id; the older form with the id first still works.
    assert "present: STU102" in run("attendance", "add", photos(lfw, "Angelina_Jolie")[4])
    uid = started.split("session ")[1].split()[0]
    assert f"session {uid} (open)" in run("attendance", "add", uid, photos(lfw, "Al_Gore")[4])
    run("attendance", "stop")
    no_open = runner.invoke(app, ["attendance", "add", str(photos(lfw, "Al_Gore")[5])])
    assert no_open.exit_code == 2 and "no open attendance session" in no_open.output
    report = runner.invoke(app, ["attendance", "report", "--csv", "-"])
    assert report.exit_code == 0 and "session " not in report.stdout  # the CSV alone on stdout
    rows = list(csv.DictReader(io.StringIO(report.stdout)))
    assert {r["key"]: r["present"] for r in rows} == {"STU101": "yes", "STU102": "yes", "STU103": "no"}
    assert "removed STU101" in run("people", "remove", "STU101", "--yes")
    assert "STU101" not in run("people", "list")
    bad = runner.invoke(app, ["people", "remove", "STU101", "--yes"])
    assert bad.exit_code == 2 and "no enrolled person" in bad.output


def test_cli_training_with_one_photo_each_says_what_cannot_be_estimated(lfw, emolens_home, tmp_path):
    from typer.testing import CliRunner

    from emolens.cli import app

    klass = tmp_path / "class"
    for n, name in enumerate(("Al_Gore", "Angelina_Jolie", "Andre_Agassi")):
        (klass / f"STU20{n}_{name}").mkdir(parents=True)
        shutil.copy(photos(lfw, name)[0], klass / f"STU20{n}_{name}")
    result = CliRunner().invoke(app, ["people", "enroll", str(klass)])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "accuracy and false rejects cannot be estimated: nobody has a second photo" in out
    assert "cross-validated accuracy" not in out
    # What can be measured: how close never-enrolled faces come, against the acceptance minimum.
    assert "faces probed as strangers; never-enrolled faces reach similarity" in out and "(highest)" in out


# ---------------------------------------------------------------- helpers


def _rgb(path: Path) -> np.ndarray:
    from emolens.image.io import load_image

    return load_image(path)


def _probes(lfw: Path) -> list[Path]:
    return [photos(lfw, name)[ENROLLED_PHOTOS] for name in PEOPLE.values()]
