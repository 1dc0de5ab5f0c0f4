"""The real ``emolens`` command line, run in a subprocess as a user would run it."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from emolens.classify import EmotionModel
from emolens.image.io import load_image
from emolens.models import ASSETS

EXAMPLE = ASSETS / "examples" / "astronaut.jpg"
FAST = ASSETS / "fast.onnx"


def run_cli(*args: str | Path, cwd: Path, home: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMOLENS_")}
    env["EMOLENS_HOME"] = str(home or cwd / "emolens_home")
    return subprocess.run(
        [sys.executable, "-m", "emolens.cli", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def lines_naming(output: str, path: Path) -> list[str]:
    return [line for line in output.splitlines() if str(path) in line]


@pytest.fixture
def folder(tmp_path) -> dict[str, Path]:
    """Three good images (two with a face, one without) and five bad files, in one folder."""
    d = tmp_path / "in put"  # a space in the path, as users have
    d.mkdir()
    files = {
        "good": d / "good.jpg",
        "good2": d / "good2.png",
        "noface": d / "coffee.jpg",
        "corrupt": d / "corrupt.jpg",
        "empty": d / "empty.jpg",
        "text": d / "readme.png",
        "odd": d / "odd[red]name.jpg",  # rich markup in a name must print as is
    }
    shutil.copyfile(EXAMPLE, files["good"])
    Image.fromarray(skdata.astronaut()[:, ::-1]).save(files["good2"])
    Image.fromarray(skdata.coffee()).save(files["noface"])
    files["corrupt"].write_bytes(EXAMPLE.read_bytes()[:20_000])
    files["empty"].write_bytes(b"")
    files["text"].write_text("this is not a picture\n")
    files["odd"].write_bytes(np.random.default_rng(0).bytes(2000))
    (d / "notes.txt").write_text("ignored: not an image suffix")
    return files


GOOD, BAD = ("good", "good2", "noface"), ("corrupt", "empty", "text", "odd")


def test_python_m_emolens_cli_shows_help(tmp_path):
    proc = run_cli("--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for verb in ("analyze", "models", "detectors", "evaluate"):
        assert verb in proc.stdout


def test_analyze_without_arguments_uses_the_example(tmp_path):
    proc = run_cli("analyze", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert "astronaut.jpg" in out and "happy" in out and "Traceback" not in out


def test_analyze_a_folder_with_bad_files(folder, tmp_path):
    save, js, cs = tmp_path / "annotated", tmp_path / "out.json", tmp_path / "out.csv"
    proc = run_cli("analyze", folder["good"].parent, "--save", save, "--json", js, "--csv", cs, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr  # some files failed
    err = proc.stderr
    assert "Traceback" not in err
    for key, problem in [
        ("corrupt", "truncated"),
        ("empty", "empty file"),
        ("text", "not an image"),
        ("odd", "not an image"),
    ]:
        named = lines_naming(err, folder[key])  # the full path on one line, never wrapped or eaten as markup
        assert len(named) == 1 and problem in named[0], err
    assert "3 images analyzed, 2 faces found, 1 without a face, 4 failed" in err

    results = json.loads(js.read_text())
    by_source = {r["source"]: r for r in results}
    assert set(by_source) == {str(folder[k]) for k in GOOD + BAD}
    for key in GOOD:
        r = by_source[str(folder[key])]
        w, h = Image.open(folder[key]).size
        assert "error" not in r and (r["width"], r["height"]) == (w, h)  # kept though the image was dropped
    assert [f["label"] for f in by_source[str(folder["good"])]["faces"]] == ["happy"]
    assert len(by_source[str(folder["good2"])]["faces"]) == 1
    assert by_source[str(folder["noface"])]["faces"] == []
    for key in BAD:
        assert by_source[str(folder[key])]["error"]

    with open(cs, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["source"] for r in rows) == sorted(str(folder[k]) for k in GOOD)
    row = next(r for r in rows if r["source"] == str(folder["good"]))
    assert row["label"] == "happy" and float(row["p_happy"]) == float(row["confidence"])
    assert next(r for r in rows if r["source"] == str(folder["noface"]))["index"] == ""

    for key in GOOD:
        annotated = save / f"{folder[key].stem}_emolens.jpg"
        assert load_image(annotated).shape[2] == 3
    assert sorted(p.name for p in save.iterdir()) == sorted(f"{folder[k].stem}_emolens.jpg" for k in GOOD)


def test_analyze_a_glob_to_stdout_json(folder, tmp_path):
    pattern = folder["good"].parent / "good*"
    proc = run_cli("analyze", pattern, "--json", "-", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)  # stdout holds the JSON and nothing else
    assert [r["source"] for r in results] == [str(folder["good"]), str(folder["good2"])]
    assert [f["label"] for f in results[0]["faces"]] == ["happy"]


def test_analyze_csv_to_stdout(tmp_path):
    proc = run_cli("analyze", EXAMPLE, "--csv", "-", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(proc.stdout.splitlines()))
    assert len(rows) == 1 and rows[0]["label"] == "happy"


def test_analyze_nothing_found(tmp_path):
    proc = run_cli("analyze", tmp_path / "*.jpg", cwd=tmp_path)
    assert proc.returncode == 2 and "no images found" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--model", "nonexistent", "no model named 'nonexistent'"),
        ("--model", "missing.onnx", "model file not found: missing.onnx"),
        ("--detector", "nope", "unknown detector 'nope'"),
    ],
)
def test_analyze_bad_model_or_detector(tmp_path, option, value, message):
    proc = run_cli("analyze", EXAMPLE, option, value, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "error:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_annotations_that_cannot_be_saved_do_not_lose_the_results(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("a regular file where a folder should be")
    js = tmp_path / "out.json"
    proc = run_cli("analyze", EXAMPLE, "--save", blocker / "sub", "--json", js, cwd=tmp_path)
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 1  # the lost annotation is reported as a failure...
    named = lines_naming(proc.stderr, EXAMPLE)
    assert any("could not save annotated image" in line for line in named), proc.stderr
    results = json.loads(js.read_text())  # ...and the analysis is still written
    analysed = [r for r in results if "faces" in r]
    assert len(analysed) == 1 and [f["label"] for f in analysed[0]["faces"]] == ["happy"]
    assert "1 annotated image not saved" in proc.stderr


def test_models_lists_shipped_and_user_models(tmp_path):
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    shutil.copyfile(FAST, home / "models" / "mine.onnx")
    (home / "models" / "broken.onnx").write_bytes(b"not onnx")
    proc = run_cli("models", cwd=tmp_path, home=home)
    assert proc.returncode == 0, proc.stderr
    names = [line.split()[0] for line in proc.stdout.splitlines() if line.rstrip().endswith(".onnx")]
    assert {"fast", "mine", "broken"} <= set(names), proc.stdout
    assert "broken: cannot load model" in proc.stdout  # the reason, whole, below the table
    assert "Traceback" not in proc.stderr


def test_models_and_the_unknown_model_error_name_adaptive(tmp_path):
    """`adaptive` is a name like the others: listed by `emolens models` (as a route) and offered
    when a name is wrong."""
    listed = run_cli("models", "--json", "-", cwd=tmp_path, home=tmp_path / "home")
    assert listed.returncode == 0, listed.stderr
    adaptive = [m for m in json.loads(listed.stdout)["models"] if m["name"] == "adaptive"]
    assert adaptive and adaptive[0]["routes"] == {"clear": "fast", "poor": "robust"}, listed.stdout
    table = run_cli("models", cwd=tmp_path, home=tmp_path / "home")
    assert "adaptive" in table.stdout and "clear faces to fast" in table.stdout.replace("\n", " ")
    wrong = run_cli("analyze", EXAMPLE, "--model", "nosuch", cwd=tmp_path, home=tmp_path / "home")
    assert wrong.returncode == 2 and "adaptive" in wrong.stderr and "Traceback" not in wrong.stderr


def test_detectors_lists_the_backends(tmp_path):
    proc = run_cli("detectors", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert set(proc.stdout.split()) == {"retinaface", "dlib-hog", "dlib-cnn", "haar", "none"}


@pytest.fixture
def small_npz(shared_datasets, tmp_path) -> Path:
    val = shared_datasets / "fer2013" / "val.npz"
    if not val.is_file():
        pytest.skip(f"{val} not found")
    with np.load(val) as z:
        images, labels, classes = z["images"][:300], z["labels"][:300], z["classes"]
    out = tmp_path / "small.npz"
    np.savez(out, images=images, labels=labels, classes=classes)
    return out


def test_evaluate_matches_a_hand_computation(small_npz, tmp_path):
    pytest.importorskip("sklearn")
    js = tmp_path / "metrics.json"
    proc = run_cli("evaluate", "fast", small_npz, "--json", js, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "accuracy" in proc.stdout

    with np.load(small_npz) as z:
        images, labels, classes = z["images"], z["labels"], [str(c) for c in z["classes"]]
    model = EmotionModel(FAST)
    y_true = np.array([model.labels.index(classes[i]) for i in labels])
    y_pred = model.predict(images).argmax(axis=1)
    accuracy = float((y_pred == y_true).mean())

    report = json.loads(js.read_text())
    assert report["n"] == 300
    assert report["accuracy"] == pytest.approx(accuracy, abs=1e-9)
    assert f"accuracy {accuracy:.4f}" in proc.stdout
    assert np.array(report["confusion"]).sum() == 300 and np.trace(report["confusion"]) == round(accuracy * 300)
    for label, recall in report["per_class_recall"].items():
        k = model.labels.index(label)
        assert recall == pytest.approx(float((y_pred[y_true == k] == k).mean()))


def test_machine_output_on_stdout_is_only_that(small_npz, tmp_path):
    """`--json -` / `--csv -`: the data alone on stdout (pipeable), tables and notes on stderr."""
    proc = run_cli("evaluate", "fast", small_npz, "--json", "-", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["n"] == 300
    assert "precision" in proc.stderr and "accuracy 0." in proc.stderr
    proc = run_cli("analyze", EXAMPLE, "--csv", "-", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert rows and rows[0]["label"] and "1 image analyzed" in proc.stderr


def test_evaluate_missing_file(tmp_path):
    proc = run_cli("evaluate", "fast", tmp_path / "nope.npz", cwd=tmp_path)
    assert proc.returncode == 2 and "no such file" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_extra_stops_before_the_batch_and_names_the_install_command(tmp_path):
    # Hide dlib as if `emolens[dlib]` were not installed: the import then fails like a real absence.
    code = (
        "import sys; sys.modules['dlib'] = None\n"
        "from emolens.cli import app\n"
        f"app(['analyze', '--detector', 'dlib-hog', {str(EXAMPLE)!r}, {str(EXAMPLE)!r}])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMOLENS_")}
    env["EMOLENS_HOME"] = str(tmp_path / "home")
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 2, proc.stderr
    assert "pip install -e '.[dlib]'" in proc.stderr
    assert "Traceback" not in proc.stderr and "analyzed" not in proc.stderr


def test_annotate_makes_a_foreign_model_usable(tmp_path):
    onnx = pytest.importorskip("onnx")
    bare = onnx.load(str(ASSETS / "fast.onnx"))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "foreign.onnx"))
    before = run_cli("analyze", EXAMPLE, "--model", tmp_path / "foreign.onnx", cwd=tmp_path)
    assert before.returncode == 2 and "emolens annotate" in before.stderr

    labels = "angry,disgust,fear,happy,neutral,sad,surprise"
    done = run_cli("annotate", tmp_path / "foreign.onnx", "--labels", labels, "--size", "48", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    after = run_cli("analyze", EXAMPLE, "--model", tmp_path / "foreign.onnx", cwd=tmp_path)
    assert after.returncode == 0 and "happy" in after.stdout + after.stderr

    wrong = run_cli(
        "annotate", tmp_path / "foreign.onnx", "--labels", "a,b", "--out", tmp_path / "x.onnx", cwd=tmp_path
    )
    assert wrong.returncode == 2 and "7 outputs but 2 labels" in wrong.stderr
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == ["foreign.onnx"]  # nothing half-made is left


def test_evaluate_a_folder_of_labelled_photos(shared_datasets, tmp_path):
    people = sorted((shared_datasets / "identity" / "lfw" / "people").iterdir())[:2]
    for k, person in enumerate(people):
        (tmp_path / "photos" / ["happy", "neutral"][k]).mkdir(parents=True)
        for img in sorted(person.glob("*.jpg"))[:3]:
            shutil.copy(img, tmp_path / "photos" / ["happy", "neutral"][k] / img.name)
    Image.new("RGB", (120, 120), (30, 160, 90)).save(tmp_path / "photos" / "happy" / "lawn.png")
    proc = run_cli("evaluate", "fast", tmp_path / "photos", "--json", tmp_path / "r.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["n"] == 6 and sum(report["support"].values()) == 6
    assert len(report["not_counted"]) == 1 and "lawn.png: no face found" in report["not_counted"][0]
    assert "lawn.png" in proc.stderr
