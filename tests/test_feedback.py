"""Feedback store, model registry, fine-tuning from feedback with gated promotion, and their CLI."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from emolens.core.errors import BadLabelError, NotFoundError, RefusedError
from emolens.workspace import Workspace

EXAMPLE = Path(__file__).resolve().parents[1] / "src" / "emolens" / "assets" / "examples" / "astronaut.jpg"


@pytest.fixture(scope="module")
def analysed():
    from emolens import Analyzer

    return Analyzer(model="fast")(EXAMPLE)


@pytest.fixture
def store(emolens_home, database_url):
    """The feedback store on SQLite, then on PostgreSQL (see ``database_url``)."""
    from emolens.feedback import FeedbackService

    return FeedbackService()


@pytest.fixture
def sqlite_store(emolens_home):
    """The feedback store on SQLite only: for slow tests whose subject is not the database."""
    from emolens.feedback import FeedbackService

    return FeedbackService()


def face_crops(results, n: int) -> list[np.ndarray]:
    """``n`` different real face crops: the astronaut's face aligned at slightly different scales."""
    from emolens.image.align import align_face

    f = results[0]
    out = []
    for k in range(n):
        box = f.box + np.array([-1, -1, 1, 1]) * k * 0.7
        out.append(align_face(results.image, box, None, 48, 1))
    return out


def test_add_from_results_stores_crop_prediction_and_files(store, analysed):
    rec = store.add_from_results(analysed, 0, "Sadness", keep_image=True, user_id="u1")
    assert rec.label == "sad" and rec.predicted == analysed[0].label and rec.is_correction
    assert rec.model_version == "fast" and rec.user_id == "u1" and len(rec.box) == 4
    crop = store.crop(rec.uid)
    assert crop.shape == (96, 96, 3)
    assert store.blobs.verify(rec.crop_key) and store.blobs.verify(rec.image_key)
    same = store.add_from_results(analysed, 0, correct=True)
    assert not same.is_correction and same.label == analysed[0].label
    assert same.crop_key == rec.crop_key  # stored once by content
    assert [r.uid for r in store.list()] == [same.uid, rec.uid]  # newest first
    assert store.count(label="sad") == 1 and store.count(label="sad", corrections_only=True) == 1
    st = store.stats()
    assert st["total"] == 2 and st["corrections"] == 1 and st["confirmations"] == 1
    assert st["confusions"] == {f"{analysed[0].label} → sad": 1}


def test_bad_labels_faces_and_ids_are_refused_and_nothing_stored(store, analysed):
    with pytest.raises(BadLabelError, match="unknown emotion 'bored'"):
        store.add_from_results(analysed, 0, "bored")
    with pytest.raises(NotFoundError, match="no face 5"):
        store.add_from_results(analysed, 5, "sad")
    with pytest.raises(BadLabelError):
        store.add(face_crops(analysed, 1)[0])  # neither a label nor a confirmation
    with pytest.raises(NotFoundError):
        store.get("nope")
    assert store.count() == 0 and list(store.blobs.stored()) == []


def test_delete_removes_row_and_unshared_files(store, analysed):
    a = store.add_from_results(analysed, 0, "sad", keep_image=True)
    b = store.add_from_results(analysed, 0, "angry")  # shares the crop file with a
    store.delete(a.uid)
    assert store.blobs.verify(b.crop_key) and not store.blobs.path(a.image_key).exists()
    store.delete(b.uid)
    assert list(store.blobs.stored()) == [] and store.count() == 0


def test_export_writes_an_image_folder_dataset_and_csv(store, analysed, tmp_path):
    from emolens.data.datasets import load_dataset

    for crop, label in zip(face_crops(analysed, 3), ["sad", "happy", "sad"], strict=True):
        store.add(crop, label, predicted="happy", confidence=0.8)
    csv_path = store.export(tmp_path / "out")
    rows = csv_path.read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("uid,created_at,label")
    ds = load_dataset(tmp_path / "out" / "images")
    assert ds.counts() == {"happy": 1, "sad": 2}


def write_streamlit_folder(root: Path, crops: list[np.ndarray]) -> Path:
    """The earlier Streamlit app's layout: feedback_log.csv beside feedback_images/ (48x48 grey PNGs)."""
    from PIL import Image

    images = root / "feedback_images"
    images.mkdir(parents=True)
    names = [f"20260227_10304{i}_00012{i}_Happy_to_Sad.png" for i in range(len(crops))]
    for name, crop in zip(names, crops, strict=True):
        Image.fromarray(crop).save(images / name)
    (images / "broken.png").write_bytes(b"not a png")
    lines = [
        "timestamp,predicted_emotion,confidence,corrected_emotion,image_path",
        f"2026-02-27 10:30:45,Happy,0.7500,Sad,{names[0]}",
        f"2026-02-27 10:31:00,Angry,0.6200,Neutral,C:\\Users\\moham\\project\\feedback_images\\{names[1]}",
        f"2026-02-27 10:32:00,Happy,0.9100,Happy,{names[2]}",
        "2026-02-27 10:33:00,Happy,0.5000,Sad,missing.png",
        f"2026-02-27 10:34:00,Happy,0.5000,Bored,{names[0]}",
        "2026-02-27 10:35:00,Happy,0.5000,Sad,broken.png",
    ]
    (root / "feedback_log.csv").write_text("\n".join(lines) + "\n")
    return root


def test_import_streamlit_reports_bad_rows_and_is_idempotent(store, analysed, tmp_path):
    folder = write_streamlit_folder(tmp_path / "app", face_crops(analysed, 3))
    report = store.import_streamlit(folder)
    assert report.imported == 3
    assert len(report.skipped) == 3
    assert any("row 5 (missing.png): image not found" in s for s in report.skipped)
    assert any("row 6" in s and "unknown emotion 'Bored'" in s for s in report.skipped)
    assert any("row 7 (broken.png)" in s for s in report.skipped)
    recs = {r.created_at.strftime("%H:%M:%S"): r for r in store.list()}
    assert recs["10:30:45"].label == "sad" and recs["10:30:45"].predicted == "happy"
    assert recs["10:31:00"].label == "neutral"  # a Windows path in image_path still finds the file
    assert not recs["10:32:00"].is_correction and recs["10:32:00"].source == "import:streamlit"
    assert store.crop(recs["10:30:45"]).shape == (48, 48)  # grey stays grey
    again = store.import_streamlit(folder)
    assert again.imported == 0 and store.count() == 3
    with pytest.raises(NotFoundError, match="feedback_log.csv"):
        store.import_streamlit(tmp_path)


WRITER = """
import sys, numpy as np
from emolens.feedback import FeedbackService
from emolens.image.io import load_image
base = np.load(sys.argv[1])
store = FeedbackService()
worker, n = int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    crop = np.clip(base.astype(int) + worker * 7 + i % 5, 0, 255).astype(np.uint8)
    crop[0, 0] = (worker * 31 + i) % 256  # every write a distinct file
    store.add(crop, ["sad", "happy", "angry"][i % 3], predicted="happy", source=f"w{worker}")
    print(i, flush=True)
"""


def _writer(tmp_path: Path, analysed, worker: int, n: int) -> subprocess.Popen:
    crop_file = tmp_path / "crop.npy"
    if not crop_file.exists():
        np.save(crop_file, face_crops(analysed, 1)[0])
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(crop_file), str(worker), str(n)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )


def test_concurrent_writers_from_several_processes_lose_nothing(store, analysed, tmp_path):
    procs = [_writer(tmp_path, analysed, w, 25) for w in range(4)]
    for p in procs:
        out, errs = p.communicate(timeout=180)
        assert p.returncode == 0, errs
    assert store.count() == 100
    assert store.stats()["by_source"] == {f"w{w}": 25 for w in range(4)}
    report = store.check()
    assert report["records"] == 100 and report["broken"] == [] and report["orphans"] == 0


def test_first_statement_waits_out_a_lock_the_busy_handler_does_not_cover(tmp_path):
    # WAL recovery and last-close cleanup answer SQLITE_BUSY without consulting busy_timeout:
    # the connection's first pragma must retry instead of failing the whole process.
    from emolens.store.db import _retry_busy

    class LockedTwice:
        def __init__(self, cur):
            self.cur, self.failures = cur, 2

        def execute(self, sql):
            if self.failures:
                self.failures -= 1
                raise sqlite3.OperationalError("database is locked")
            return self.cur.execute(sql)

    conn = sqlite3.connect(tmp_path / "x.db")
    cur = LockedTwice(conn.cursor())
    _retry_busy(cur, "PRAGMA journal_mode=WAL")
    assert cur.failures == 0
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    cur.failures = 1_000_000  # a lock that never clears ends in the error, not a hang
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        _retry_busy(cur, "SELECT 1", wait_s=0.2)
    with pytest.raises(sqlite3.OperationalError, match="syntax"):  # other errors are not retried
        _retry_busy(conn.cursor(), "SELEC 1")


def test_kill_during_writes_leaves_the_store_consistent(store, analysed, tmp_path):
    for round_ in range(3):
        p = _writer(tmp_path, analysed, 10 + round_, 10_000)
        for _ in range(5 + round_ * 3):  # wait for a few committed writes, then kill mid-stream
            assert p.stdout.readline()
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    report = store.check()
    assert report["broken"] == []  # every row has its whole crop
    assert report["records"] >= 5 + 8 + 11
    # A crash between the file write and the commit can only leave an unreferenced file,
    # which a repair removes; no row is ever half-written.
    repaired = store.check(repair=True, grace_s=0)
    assert repaired["removed"] == report["orphans"]
    assert store.check()["orphans"] == 0


def test_crash_between_file_and_row_leaves_only_an_orphan_file_that_repair_removes(store, analysed, tmp_path):
    np.save(tmp_path / "crop.npy", face_crops(analysed, 1)[0])
    code = (
        "import os, numpy as np\n"
        "import emolens.store.feedback as fb\n"
        "def crash(*a, **k):\n    os._exit(9)\n"
        "fb.session = crash\n"
        "from emolens.feedback import FeedbackService\n"
        f"FeedbackService().add(np.load({str(tmp_path / 'crop.npy')!r}), 'sad')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=os.environ.copy(), capture_output=True)
    assert proc.returncode == 9
    assert store.count() == 0
    assert store.check() == {"records": 0, "broken": [], "orphans": 1, "removed": 0}
    assert store.check(repair=True)["removed"] == 0  # younger than the grace period: maybe a live writer
    assert store.check(repair=True, grace_s=0)["removed"] == 1
    assert list(store.blobs.stored()) == []


def test_full_disk_is_a_clear_error_and_stores_nothing(store, analysed, monkeypatch):
    from emolens.core.errors import StorageError

    def no_space(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(StorageError, match="No space left on device"):
        store.add(face_crops(analysed, 1)[0], "sad")
    monkeypatch.undo()
    assert store.count() == 0 and list(store.blobs.stored()) == []
    assert not any(store.blobs.root.rglob("*.tmp"))


# -- registry --------------------------------------------------------------------------------


def test_registry_promote_rollback_and_analyzer_reload_without_restart(emolens_home, tmp_path):
    import shutil

    from emolens import Analyzer
    from emolens.workspace import Workspace

    reg = Workspace.default().registry
    analyzer = Analyzer()
    assert analyzer(EXAMPLE).model == "fast"  # empty registry: the shipped model
    v1 = reg.ensure_base()
    assert (v1.name, v1.active, v1.source, v1.parent) == ("v1", True, "shipped:fast", None)
    assert v1.checkpoint is not None and v1.metrics["accuracy"] > 0.6
    other = tmp_path / "int8.onnx"
    shutil.copyfile(Workspace.default().models.path("fast-int8"), other)
    v2 = reg.register(other, parent="v1", source="test", metrics={"accuracy": 0.5})
    assert not v2.active and reg.active_name() == "v1"
    assert analyzer(EXAMPLE).model == "v1"
    reg.promote("v2")
    res = analyzer(EXAMPLE)  # the same Analyzer object picks up the new active model
    assert res.model == "v2" and analyzer.model.path == reg.get("v2").path
    assert (
        Workspace.default().models.path("active") == reg.get("v2").path
        and Workspace.default().models.path("v1") == v1.path
    )
    assert reg.rollback().name == "v1" and analyzer(EXAMPLE).model == "v1"
    with pytest.raises(RefusedError, match="nothing to roll back"):
        reg.rollback()
    assert [v.name for v in reg.versions()] == ["v1", "v2"]  # nothing is deleted
    with pytest.raises(NotFoundError, match="no model version 'v9'"):
        reg.promote("v9")


def test_promoting_the_flagship_by_name_registers_it_after_the_default(emolens_home):
    from emolens import Analyzer
    from emolens.cli import app
    from emolens.core.errors import ModelNotFoundError
    from emolens.workspace import Workspace

    analyzer = Analyzer()
    assert analyzer(EXAMPLE).model == "fast"
    r = CliRunner().invoke(app, ["models", "promote", "accurate"])
    assert r.exit_code == 0 and "v2 is now active" in r.output, r.output
    reg = Workspace.default().registry
    v1, v2 = reg.versions()
    assert (v1.source, v1.active) == ("shipped:fast", False)
    assert (v2.source, v2.active, v2.checkpoint is not None) == ("shipped:accurate", True, True)
    assert (
        v2.path.read_bytes() == Workspace.default().models.path("accurate").read_bytes()
        and v2.metrics["accuracy"] > 0.6
    )
    assert analyzer(EXAMPLE).model == "v2"  # fine-tuning from feedback now starts from the flagship
    assert reg.rollback().name == "v1" and analyzer(EXAMPLE).model == "v1"
    assert reg.promote("accurate").name == "v2"  # the same file again: the same version, no copy
    with pytest.raises(ModelNotFoundError, match="no model named 'nope'"):
        reg.promote("nope")
    assert [v.name for v in reg.versions()] == ["v1", "v2"]


def test_models_cli_lists_promotes_and_rolls_back(emolens_home, tmp_path):
    from emolens.cli import app
    from emolens.workspace import Workspace

    reg = Workspace.default().registry
    reg.ensure_base()
    reg.register(Workspace.default().models.path("fast-int8"), parent="v1", source="test")
    runner = CliRunner()
    r = runner.invoke(app, ["models", "promote", "v2"])
    assert r.exit_code == 0 and "v2 is now active" in r.output
    r = runner.invoke(app, ["models"])
    assert r.exit_code == 0 and "registry" in r.output and "v2" in r.output
    r = runner.invoke(app, ["models", "rollback"])
    assert r.exit_code == 0 and "v1 is active again" in r.output
    r = runner.invoke(app, ["models", "promote", "v7"])
    assert r.exit_code == 2 and "no model version 'v7'" in r.output
    # Long paths are folded onto more lines, never cut; --json gives them whole, and alone on stdout.
    long = emolens_home / "models" / ("a-model-with-a-name-long-enough-to-overflow-any-column-" * 2 + ".onnx")
    long.write_bytes(Workspace.default().models.path("fast").read_bytes())
    r = runner.invoke(app, ["models"])
    assert r.exit_code == 0 and "…" not in r.output  # nothing cut short
    r = runner.invoke(app, ["models", "--json", "-"])
    doc = json.loads(r.stdout)
    assert str(long) in [m["path"] for m in doc["models"]] and [v["version"] for v in doc["registry"]] == ["v1", "v2"]


# -- fine-tuning with gates ------------------------------------------------------------------


@pytest.fixture
def fer_sets(shared_datasets, tmp_path):
    """Small real sets: replay from FER2013 Training, base validation and feedback from PublicTest."""
    fer = shared_datasets / "fer2013"
    train, val = np.load(fer / "train.npz"), np.load(fer / "val.npz")
    classes = np.array([str(c) for c in val["classes"]])
    rng = np.random.default_rng(0)
    r = rng.choice(len(train["labels"]), 400, replace=False)
    v = rng.permutation(len(val["labels"]))
    np.savez(tmp_path / "replay.npz", images=train["images"][r], labels=train["labels"][r], classes=classes)
    np.savez(tmp_path / "base.npz", images=val["images"][v[:300]], labels=val["labels"][v[:300]], classes=classes)
    fb = v[300:400]
    return tmp_path / "replay.npz", tmp_path / "base.npz", val["images"][fb], val["labels"][fb], list(classes)


def fill(store, images, labels, classes) -> None:
    for img, y in zip(images, labels, strict=True):
        store.add(img, classes[y], predicted="happy" if classes[y] != "happy" else "sad", source="test")


def test_finetune_refuses_below_the_minimum_and_without_data(sqlite_store, emolens_home, fer_sets):
    store = sqlite_store
    from emolens.feedback.learn import finetune_from_feedback

    replay, base, x, y, classes = fer_sets

    fill(store, x[:5], y[:5], classes)
    with pytest.raises(RefusedError, match="only 5 correction"):
        finetune_from_feedback(store, Workspace.default().registry, min_feedback=20, replay=replay, base_val=base)
    with pytest.raises(RefusedError, match="--replay"):
        finetune_from_feedback(store, Workspace.default().registry, min_feedback=1, replay=None, base_val=None)
    from emolens.cli import app

    r = CliRunner().invoke(
        app,
        ["finetune", "--from-feedback", "--min", "20", "--replay", str(replay), "--base-val", str(base)],
    )
    assert r.exit_code == 2 and "fine-tuning needs at least 20" in r.output


def test_failed_gate_keeps_the_active_model_and_passing_gate_promotes(sqlite_store, emolens_home, fer_sets):
    from emolens.classify.emotion import EmotionModel
    from emolens.cli import app

    store = sqlite_store
    from emolens.feedback.learn import FinetuneOptions, Gates, finetune_from_feedback

    replay, base, x, y, classes = fer_sets
    fill(store, x, y, classes)
    opts = FinetuneOptions(epochs=1, replay_size=400, batch_size=64, threads=2)
    reg = Workspace.default().registry
    # Fewer independent held-out groups than the gate asks for: refused before any training.
    with pytest.raises(RefusedError, match="at least 1000 are needed.*before fine-tuning fast, before training"):
        finetune_from_feedback(
            store, reg, replay=replay, base_val=base, min_feedback=10, options=opts,
            gates=Gates(min_holdout_groups=1000), progress=False,
        )  # fmt: skip
    assert [v.name for v in reg.versions()] == ["v1"]
    # An impossible gate (base accuracy must rise 100 points) must fail: v1 stays active.
    plans = []
    failed = finetune_from_feedback(
        store, reg, replay=replay, base_val=base, min_feedback=10, options=opts,
        gates=Gates(max_base_drop=-1.0), promote=True, progress=False, on_plan=plans.append,
    )  # fmt: skip
    assert not failed.passed and not failed.promoted and not failed.gates["base_holds"]["passed"]
    fb_gate = failed.gates["feedback_improves"]
    assert (
        fb_gate["low"] <= fb_gate["change"] <= fb_gate["high"] and fb_gate["groups"] == failed.counts["holdout_groups"]
    )
    # The held-out part it was judged on is the one `feedback stats` shows.
    stats = store.stats()
    assert (failed.counts["feedback_holdout"], failed.counts["holdout_groups"]) == (
        stats["holdout"],
        stats["holdout_groups"],
    )
    # The plan came first, with the base and an estimate of the time; the time taken is recorded.
    assert plans[0].base == "v1" and plans[0].counts == failed.counts and plans[0].estimate_s > 0
    assert failed.timing["estimated_s"] > 0 and failed.timing["taken_s"] > 0
    assert reg.active_name() == "v1" and failed.candidate == "v2"
    v2 = reg.get("v2")
    assert not v2.promoted and v2.parent == "v1" and v2.checkpoint and v2.report
    report = v2.report.read_text()
    assert "gates failed" in report and "95% CI" in report and "Recall per class" in report and "ECE" in report
    assert "base_calibration_holds" in report and "estimated" in report
    assert failed.counts["feedback_holdout"] > 0 and failed.counts["replay"] == 400
    # The temperature fitted on the held-out feedback and the base set is in the candidate's model file.
    cal = failed.calibration
    assert EmotionModel(v2.path).meta.temperature == cal["temperature"] and 0.1 <= cal["temperature"] <= 10
    assert {"ece_parent", "ece_before", "ece_after", "base_ece_after"} <= set(cal)
    # Lenient gates pass; the CLI shows the whole report, then asks; the answer promotes.
    r = CliRunner().invoke(
        app,
        ["finetune", "--from-feedback", "--replay", str(replay), "--base-val", str(base), "--min", "10",
         "--epochs", "1", "--replay-size", "400", "--min-gain", "-1", "--max-base-drop", "1"],
        input="y\n",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    question = r.output.index("make v3 the active model?")
    assert -1 < r.output.find("base model: v1, the active model: 0 of 100 correction(s)") < question
    assert -1 < r.output.find("expected time: about") < r.output.find("held-out feedback")
    for part in ("held-out feedback", "feedback_improves", "Recall per class", "Calibration", "surprise"):
        assert -1 < r.output.find(part) < question, part
    assert "v3 is now active" in r.output[question:]
    assert reg.active_name() == "v3" and reg.get("v3").metrics["gates_passed"] is True
    assert reg.rollback().name == "v1"


def test_feedback_cli_add_list_stats_export_import_check(emolens_home, analysed, tmp_path):
    from emolens.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["feedback", "add", str(EXAMPLE), "--label", "sad", "--user", "ann", "--person", "p1"])
    assert r.exit_code == 0 and f"corrected {analysed[0].label} → sad" in r.output
    r = runner.invoke(app, ["feedback", "add", str(EXAMPLE), "--correct"])
    assert r.exit_code == 0 and "confirmed" in r.output
    r = runner.invoke(app, ["feedback", "add", str(EXAMPLE), "--label", "bored"])
    assert r.exit_code == 2 and "unknown emotion 'bored'" in r.output
    r = runner.invoke(app, ["feedback", "add", str(EXAMPLE), "--label", "sad", "--face", "3"])
    assert r.exit_code == 2 and "no face 3" in r.output
    r = runner.invoke(app, ["feedback", "list", "--json", "-"])
    rows = json.loads(r.stdout)
    assert [row["label"] for row in rows] == [analysed[0].label, "sad"] and rows[1]["user_id"] == "ann"
    # One face of one photo: the same side of the split, whatever ties were given.
    assert rows[1]["person"] == "p1" and rows[0]["origin"].startswith("photo:") and len(rows[0]["phash"]) == 64
    assert rows[0]["holdout"] == rows[1]["holdout"]
    r = runner.invoke(app, ["feedback", "stats", "--json", "-"])
    assert json.loads(r.output)["total"] == 2
    r = runner.invoke(app, ["feedback", "export", str(tmp_path / "exp")])
    assert r.exit_code == 0 and (tmp_path / "exp" / "feedback.csv").is_file()
    folder = write_streamlit_folder(tmp_path / "app", face_crops(analysed, 3))
    r = runner.invoke(app, ["feedback", "import", str(folder)])
    assert r.exit_code == 0 and "imported 3 record(s), skipped 3" in r.output and "missing.png" in r.output
    r = runner.invoke(app, ["feedback", "check"])
    assert r.exit_code == 0 and "5 record(s), 0 broken" in r.output
