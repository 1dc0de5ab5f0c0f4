"""The path of a new user: version, help text, missing extras, core video, numbered faces,
mirrored --save, URLs, small datasets, a short repr. Each as the user meets it, in a subprocess
where the user's own shell would show it."""

from __future__ import annotations

import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
import typer

from emolens.core.errors import BadImageError, BadLabelError
from emolens.models import ASSETS
from emolens.pipeline.results import FaceResult, Results

EXAMPLE = ASSETS / "examples" / "astronaut.jpg"


def emolens(*args, cwd: Path, hide: tuple[str, ...] = (), columns: int = 80) -> subprocess.CompletedProcess:
    """``emolens ARGS`` in a fresh process; ``hide`` makes those modules fail to import, as on a
    core install without the extra that provides them."""
    code = "".join(f"sys.modules[{m!r}] = None\n" for m in hide)
    code = f"import sys\n{code}from emolens.cli import app\napp({[str(a) for a in args]!r}, prog_name='emolens')\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMOLENS_")}
    env.update(EMOLENS_HOME=str(cwd / "home"), COLUMNS=str(columns))
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The single line the CLI printed for a refused command (no traceback, nothing else)."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    return lines[0]


def test_version(tmp_path):
    from emolens import __version__

    proc = emolens("--version", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == f"emolens {__version__}"


def _commands(cmd: click.Command, prefix: str = "emolens"):
    yield prefix, cmd
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from _commands(sub, f"{prefix} {name}")


def test_help_has_no_type_tags_on_flags_and_no_hard_wraps():
    from emolens.cli import app

    root = typer.main.get_command(app)
    checked = 0
    for name, cmd in _commands(root):
        ctx = click.Context(cmd, info_name=name, terminal_width=200, max_content_width=200)
        text = cmd.get_help(ctx)
        assert "<bool>" not in text, f"{name} --help:\n{text}"
        # Each paragraph of the docstring is re-flowed to the terminal: on a wide one it is one line.
        for paragraph in inspect.cleandoc(cmd.help or "").split("\n\n"):
            flat = " ".join(paragraph.split())
            if len(flat) < 180:
                assert any(flat in line for line in text.splitlines()), f"{name}: {flat!r} is hard-wrapped:\n{text}"
        checked += 1
    assert checked > 40  # every command and sub-command was looked at


def test_command_list_fits_an_80_column_terminal(tmp_path):
    proc = emolens("--help", cwd=tmp_path)
    commands = proc.stdout.split("Commands:", 1)[1].splitlines()
    assert proc.returncode == 0 and len(commands) > 15
    assert not [line for line in commands if line.rstrip().endswith("...")], proc.stdout


@pytest.mark.parametrize(
    ("args", "hide", "extra"),
    [
        (["train", "data/"], ("torch",), "train"),
        (["export", "best.pt", "out.onnx"], ("torch",), "train"),
        (["quantize", "fast", "--calibration", "c.npz"], ("onnx",), "export"),
        (["explain", str(EXAMPLE)], ("torch",), "explain"),
    ],
)
def test_a_missing_extra_is_one_line_naming_the_install_command(tmp_path, args, hide, extra):
    (tmp_path / "data").mkdir()
    (tmp_path / "best.pt").write_bytes(b"a checkpoint")  # present: the missing extra is what stops it
    line = one_error_line(emolens(*args, cwd=tmp_path, hide=hide))
    assert f"pip install -e '.[{extra}]'" in line and repr(hide[0]) in line


def test_enroll_without_dlib_stops_at_once(tmp_path):
    klass = tmp_path / "class"
    for person in ("STU001_Ada", "STU002_Grace"):
        (klass / person).mkdir(parents=True)
        shutil.copy(EXAMPLE, klass / person / "1.jpg")
    proc = emolens("people", "enroll", klass, cwd=tmp_path, hide=("dlib",))
    line = one_error_line(proc)
    assert "pip install -e '.[identity]'" in line
    assert "skipped" not in proc.stdout + proc.stderr and "enrolled" not in proc.stdout


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    from emolens.video.synthetic import astronaut_patch, compose_clip

    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    # Odd sides on purpose: H.264 in yuv420p needs even ones.
    compose_clip(path, [astronaut_patch(140)], [(20, 40)], [(160, 90)], frames=10, size=(321, 241))
    return path


def test_core_video_completes_without_matplotlib_or_pyav(tmp_path, clip):
    proc = emolens("video", clip, "--out", tmp_path / "out", "-q", cwd=tmp_path, hide=("matplotlib", "av"))
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr and "Traceback" not in proc.stderr
    assert "timeline plot not drawn: it needs matplotlib" in proc.stderr
    assert "encoded as MPEG-4 Part 2" in proc.stderr and "pip install -e '.[video]'" in proc.stderr
    out = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert out == ["annotated.mp4", "timeline.csv", "timeline.json"]


def test_annotated_video_is_h264_with_pyav(tmp_path, clip):
    av = pytest.importorskip("av", reason="H.264 output needs the video extra: pip install -e '.[video]'")
    proc = emolens("video", clip, "--out", tmp_path / "out", "-q", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "annotated video encoded as H.264 (PyAV)" in proc.stderr
    with av.open(str(tmp_path / "out" / "annotated.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and (stream.width, stream.height) == (320, 240)
        assert sum(1 for _ in container.decode(stream)) == 10  # every frame, the encoder flushed


def test_faces_are_numbered_in_text_and_on_the_image(tmp_path):
    from emolens.image.io import load_image

    proc = emolens("analyze", EXAMPLE, cwd=tmp_path)
    assert proc.returncode == 0 and "1 face: [0] happy" in proc.stderr, proc.stderr

    image = load_image(EXAMPLE)
    face = FaceResult(np.array([180.0, 200, 270, 300]), 0.9, None, {"happy": 0.8, "sad": 0.2})
    other = FaceResult(np.array([20.0, 400, 90, 480]), 0.9, None, {"happy": 0.8, "sad": 0.2})
    alone = Results([face], image=image).plot(landmarks=False)  # "0: happy 80%" over the face
    second = Results([other, face], image=image).plot(landmarks=False)  # the same face is now "1: ..."
    label = np.s_[170:200, 180:300]  # the caption above the box
    assert (alone[label] != second[label]).any()
    assert not (alone[390:490, 10:100] == second[390:490, 10:100]).all()  # and the other face is drawn


def test_analyze_save_mirrors_the_input_tree_and_says_when_it_replaces(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / "coll" / sub).mkdir(parents=True)
        shutil.copy(EXAMPLE, tmp_path / "coll" / sub / "x.jpg")
    shutil.copy(EXAMPLE, tmp_path / "coll" / "a" / "x.png")
    proc = emolens("analyze", tmp_path / "coll", "--save", tmp_path / "out", "-q", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    written = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.jpg"))
    assert written == ["a/x_emolens.jpg", "a/x_png_emolens.jpg", "b/x_emolens.jpg"]
    assert "replaced" not in proc.stderr
    again = emolens("analyze", tmp_path / "coll", "--save", tmp_path / "out", "-q", cwd=tmp_path)
    assert "3 annotated images from an earlier run replaced" in again.stderr


def test_a_url_is_refused_with_the_offline_message(tmp_path):
    from emolens.image.io import load_image

    url = "https://example.com/photos/party.jpg"
    line = one_error_line(emolens("analyze", EXAMPLE, url, cwd=tmp_path))
    assert url in line and "offline" in line and "download the file and pass its path" in line
    with pytest.raises(BadImageError, match="offline"):
        load_image(url)


def _dataset(counts: dict[str, int]):
    from emolens.data.datasets import FaceDataset

    classes = sorted(counts)
    labels = np.array([i for i, c in enumerate(classes) for _ in range(counts[c])])
    images = np.zeros((len(labels), 48, 48), np.uint8)
    return FaceDataset(images=images, labels=labels, classes=classes)


def test_a_small_dataset_gets_a_split_with_every_class_on_both_sides():
    from emolens.data import split

    pytest.importorskip("sklearn", reason="splitting needs scikit-learn (the train extra)")
    parts = split(_dataset({"happy": 4, "sad": 4}), val=0.1)  # 0.8 of a face would be held out
    for name in ("train", "val"):
        assert sorted(set(parts[name].labels.tolist())) == [0, 1]
    assert len(parts["train"]) + len(parts["val"]) == 8
    with pytest.raises(BadLabelError, match=r"too few.*--val"):
        split(_dataset({"happy": 2, "sad": 2, "fear": 2}), val=0.7)  # 5 held out, 1 left


@pytest.mark.slow  # imports PyTorch in a fresh process
def test_train_on_too_small_a_dataset_says_what_to_do(tmp_path):
    pytest.importorskip("torch", reason="training needs the train extra: pip install -e '.[train]'")
    data = tmp_path / "tiny.npz"
    np.savez(data, images=np.zeros((3, 48, 48), np.uint8), labels=np.array([0, 0, 1]), classes=["happy", "sad"])
    line = one_error_line(emolens("train", data, "--set", "epochs=1", "--out", tmp_path / "run", cwd=tmp_path))
    assert "fewer than 2 samples" in line and "sad 1" in line and "--val" in line


def test_print_results_is_a_short_summary():
    image = np.zeros((480, 640, 3), np.uint8)
    faces = [
        FaceResult(np.array([10.0, 10, 60, 60]), 0.9, np.zeros((5, 2)), {"happy": 0.9, "sad": 0.1}) for _ in range(7)
    ]
    res = Results(faces, image=image, source="group.jpg")
    text = repr(res)
    assert text.startswith("Results(group.jpg: 640x480, 7 faces: happy 90%") and text.endswith(", ...)")
    assert len(text) < 200 and len(repr(faces[0])) < 80
    assert repr(Results([], image=image)) == "Results(image: 640x480, 0 faces)"


ROOT = Path(__file__).resolve().parents[1]


def test_readme_is_short_and_says_how_to_activate_and_add_extras():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    assert "source .venv/bin/activate" in text and ".venv/bin/pip install -e '.[" in text
    assert "not on PyPI" in text and "emolens analyze" in text
    for note in ("figures given in the issue", "No GPU was lent"):  # notes from development stay out
        assert note not in text


def test_the_test_command_says_what_it_does_to_the_machine():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    script = (ROOT / "scripts" / "test.sh").read_text(encoding="utf-8")
    minutes = re.search(r"about (\d+) minutes", readme.replace("\n", " "))
    assert minutes, "the README says how long the test command takes"
    for text in (readme, script):  # one time, the same in both
        flat = text.replace("\n", " ").replace("# ", "")
        assert "chromium" in text and f"about {minutes[1]} minutes" in flat and "QUICK=1 bash scripts/test.sh" in text
    assert "mkdocs build --strict" in script  # the docs site is built with the tests: a stale reference fails
