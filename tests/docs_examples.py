"""What tests/test_docs_examples.py needs: the examples of README.md and docs/*.md as they are on
disk, the small files they name (built once from the shipped example photo), and the static
checks of a command line.

An example is a fenced ```bash or ```python block. An HTML comment on the line right before it
says how the suite treats it:

- ``<!-- not-run: REASON -->``: not run (a server, a camera, hours of training...); its
  ``emolens`` command lines and ``pip install`` extras are still checked against the CLI and
  pyproject.toml;
- ``<!-- slow: REASON -->``: run, but its page counts as slow (left out of ``QUICK=1``).
"""

from __future__ import annotations

import csv
import functools
import re
import shlex
import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = REPO_ROOT / "src" / "emolens" / "assets" / "examples" / "astronaut.jpg"
CLASSES = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
MARKER = re.compile(r"<!--\s*(not-run|slow)\s*:\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)


@dataclass
class Example:
    page: str
    line: int
    lang: str  # "bash" or "python"
    code: str
    skip: str | None = None  # the not-run reason
    slow: str | None = None

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def pages() -> list[Path]:
    return [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def examples(path: Path) -> list[Example]:
    """The ```bash and ```python blocks of one page, with the marker right before each."""
    text = path.read_text(encoding="utf-8")
    found = []
    for m in FENCE.finditer(text):
        if m.group(1) not in ("bash", "python"):
            continue
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.search(before)
        ex = Example(
            page=str(path.relative_to(REPO_ROOT)),
            line=text.count("\n", 0, m.start()) + 1,
            lang=m.group(1),
            code=m.group(2),
        )
        if marker and marker.group(1) == "not-run":
            ex.skip = marker.group(2)
        elif marker:
            ex.slow = marker.group(2)
        found.append(ex)
    return found


def stray_markers(path: Path) -> list[str]:
    """Markers that stand before no example (so they would silently do nothing), or have no reason."""
    lines = path.read_text(encoding="utf-8").split("\n")
    bad = []
    fenced = False
    for i, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"\s*<!--\s*(not-run|slow)\b", line):
            m = MARKER.search(line)
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            if not m or not m.group(2):
                bad.append(f"{path.name}:{i + 1}: a marker needs a reason: <!-- not-run: why -->")
            elif not re.match(r"```(bash|python)\b", nxt):
                bad.append(f"{path.name}:{i + 1}: a marker must stand right before a ```bash or ```python block")
    return bad


# --- static checks of shell lines --------------------------------------------------------------------

_SEPARATORS = {"|", "||", "&&", ";", "&", "(", ")"}
_REDIRECTS = {">", ">>", "<", "2>", "&>"}


def shell_commands(code: str) -> list[list[str]]:
    """The simple commands of a shell block, as argument lists (variables left unexpanded)."""
    text = code.replace("\\\n", " ")
    commands = []
    for line in text.split("\n"):
        lexer = shlex.shlex(line, posix=True, punctuation_chars="|&;()<>")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        try:
            tokens = list(lexer)
        except ValueError:  # an unbalanced quote: not a command we can check
            continue
        current: list[str] = []
        skip_next = False
        for tok in tokens:
            if skip_next:
                skip_next = False
            elif tok in _SEPARATORS:
                if current:
                    commands.append(current)
                current = []
            elif tok in _REDIRECTS:
                skip_next = True
            else:
                current.append(tok)
        if current:
            commands.append(current)
    out = []
    for cmd in commands:
        while cmd and re.match(r"^[A-Z_][A-Z0-9_]*=", cmd[0]):  # VAR=value before a command
            cmd = cmd[1:]
        if cmd:
            out.append(cmd)
    return out


def emolens_args(command: list[str]) -> list[str] | None:
    if command and command[0] in ("emolens", ".venv/bin/emolens"):
        return command[1:]
    return None


@functools.cache
def _cli_command():
    import typer

    from emolens.cli import app

    return typer.main.get_command(app)


def cli_problem(args: list[str]) -> str | None:
    """Why the CLI would refuse this command line as written (an unknown command or option), or None.

    Only the parser runs: nothing is loaded or executed. Values that the parser checks against the
    disk (a file that must exist) are not judged here."""
    try:  # newer Typer carries its own copy of Click
        from typer._click import exceptions as click
    except ImportError:
        from click import exceptions as click

    args = [a for a in args if a not in ("--help", "--version")]  # eager: they would exit
    command = _cli_command()
    name, ctx, rest = "emolens", None, list(args)
    while rest or ctx is None:
        if not rest and hasattr(command, "get_command"):
            return None
        try:
            ctx = command.make_context(name, rest, parent=ctx)
        except (click.NoSuchOption, click.BadOptionUsage) as exc:
            return exc.format_message()
        except click.UsageError as exc:
            if "No such command" in exc.format_message() or "Got unexpected extra" in exc.format_message():
                return exc.format_message()
            return None  # a missing argument or a value checked against the disk
        if not hasattr(command, "get_command"):
            return None
        remaining = [*getattr(ctx, "_protected_args", []), *ctx.args]
        if not remaining:
            return None
        name = remaining[0]
        sub = command.get_command(ctx, name)
        if sub is None:
            return f"No such command {name!r} under {ctx.command_path!r}"
        command, rest = sub, remaining[1:]
    return None


def pip_problem(command: list[str]) -> str | None:
    """A ``pip install -e '.[extra,...]'`` line naming an extra that pyproject.toml lacks."""
    if not command or Path(command[0]).name not in ("pip", "pip3") or "install" not in command:
        return None
    extras = set(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    for arg in command:
        m = re.fullmatch(r"\.\[([^\]]*)\]", arg)
        if m:
            unknown = [e for e in m.group(1).split(",") if e.strip() not in extras]
            if unknown:
                return f"no extra {unknown} in pyproject.toml"
    return None


def pip_shim(args: list[str]) -> int:
    """``pip`` in the examples: an install of this checkout's extras is checked, not run (the test
    environment has them all); anything else fails, so that an example cannot install from elsewhere."""
    command = ["pip", *args]
    if args[:1] != ["install"] or not any(a == "." or a.startswith(".[") for a in args):
        print(f"docs test: pip {' '.join(args)}: only 'pip install -e .[extra]' is allowed in an example")
        return 1
    why = pip_problem(command)
    if why:
        print(f"docs test: {why}")
        return 1
    return 0


# --- the files the examples name -------------------------------------------------------------------


def _crops(photo, box: list[int], n_per_class: int, seed: int, size: int) -> tuple[list, np.ndarray]:
    """Crops of one face, jittered, flipped and lit differently, labelled round the 7 classes: 48x48
    grey face crops (``size`` 48, FER2013's kind) or ``size``-px photos with a margin round the face."""
    from PIL import ImageEnhance, ImageOps

    rng = np.random.default_rng(seed)
    x0, y0, x1, y1 = box
    margin = 0.0 if size == 48 else 0.6
    mx, my = int((x1 - x0) * margin), int((y1 - y0) * margin)
    images, labels = [], []
    for i in range(n_per_class * len(CLASSES)):
        dx, dy = (int(v) for v in rng.integers(-(x1 - x0) // 10, (x1 - x0) // 10 + 1, size=2))
        crop = photo.crop((x0 - mx + dx, y0 - my + dy, x1 + mx + dx, y1 + my + dy)).resize((size, size))
        crop = ImageEnhance.Brightness(crop).enhance(float(rng.uniform(0.6, 1.3)))
        crop = ImageOps.mirror(crop) if i % 2 else crop
        images.append(np.asarray(crop.convert("L")) if size == 48 else crop)
        labels.append(i % len(CLASSES))
    return images, np.asarray(labels, dtype=np.int64)


def _save_npz(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    names = np.asarray([f"{path.stem}_{i}.jpg" for i in range(len(labels))])
    np.savez(path, images=images, labels=labels, names=names, classes=np.asarray(CLASSES))


def _save_votes(path: Path, labels: np.ndarray, names: np.ndarray) -> None:
    columns = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF"]
    column_of = {"angry": 4, "disgust": 5, "fear": 6, "happy": 1, "neutral": 0, "sad": 3, "surprise": 2}
    votes = np.zeros((len(labels), 10), dtype=np.uint8)
    for i, label in enumerate(labels):
        votes[i, column_of[CLASSES[label]]] = 7
        votes[i, (column_of[CLASSES[label]] + 1) % 8] = 3
    np.savez(
        path,
        votes=votes,
        columns=np.asarray(columns),
        names=names,
        status=np.zeros(len(labels), dtype=np.int8),
        csv_row=np.arange(len(labels)),
    )


def _foreign_model(path: Path) -> None:
    """An ONNX classifier from elsewhere, without EmoLens metadata: 64x64 RGB in, 3 logits out."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.eye(3, dtype=np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input"], ["pooled"], axes=[2, 3], keepdims=0),
            helper.make_node("MatMul", ["pooled", "w"], ["logits"]),
        ],
        "foreign",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 64, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        [weights],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def build_fixtures(root: Path) -> None:
    """``root/work`` (the examples' working folder) and ``root/shared/datasets`` (its ``../shared``)."""
    import cv2
    from PIL import Image, ImageOps

    from emolens import Analyzer

    work = root / "work"
    work.mkdir(parents=True)
    one = Image.open(EXAMPLE).convert("RGB")
    pair = Image.new("RGB", (one.width * 2, one.height))
    pair.paste(one, (0, 0))
    pair.paste(ImageOps.mirror(one), (one.width, 0))  # two faces: face 0 and face 1 exist
    box = [int(v) for v in Analyzer()(np.asarray(one))[0].box]
    face = np.asarray(one)[box[1] : box[3], box[0] : box[2]]

    for name in ["group.jpg", "photo.jpg", "party.jpg", "class.jpg", "door.jpg", "a.jpg", "cctv_frame.jpg"]:
        pair.save(work / name)
    for name in ["webcam.jpg", "b.jpg", "me.jpg", "me2.jpg", "jane1.jpg", "frame1.jpg", "frame2.jpg", "frame3.jpg"]:
        one.save(work / name)
    pair.save(work / "one.png")
    for folder, images in {
        "photos": {"pair.jpg": pair, "one.jpg": one},
        "more": {"more1.jpg": one},
        "frames": {"frame_000.jpg": one, "frame_001.jpg": pair},
        "archive/2025": {"x.jpg": pair},
        "class/STU001_Jane_Doe": {f"{i}.jpg": one.rotate(4 * i - 6) for i in range(3)},
        "class/STU002_John_Smith": {f"{i}.jpg": ImageOps.mirror(one).rotate(4 * i - 6) for i in range(3)},
    }.items():
        (work / folder).mkdir(parents=True)
        for name, img in images.items():
            img.save(work / folder / name)
    Image.fromarray(face).resize((96, 96)).save(work / "face.png")
    Image.fromarray(face).convert("L").resize((48, 48)).save(work / "face_0031.png")

    with open(work / "manifest.csv", "w", newline="") as f:
        csv.writer(f).writerows([["id", "path"], ["pair", "photos/pair.jpg"], ["one", "photos/one.jpg"]])
    import pyarrow as pa
    import pyarrow.parquet as pq

    manifest = pa.table({"id": ["pair", "one"], "path": ["photos/pair.jpg", "photos/one.jpg"]})
    pq.write_table(manifest, work / "manifest.parquet")

    frames = np.asarray(pair.resize((pair.width // 2, pair.height // 2)))[..., ::-1]
    for name in ["meeting.mp4", "clip.mp4", "lecture.mp4"]:
        out = cv2.VideoWriter(str(work / name), cv2.VideoWriter_fourcc(*"mp4v"), 5, frames.shape[1::-1])
        for i in range(10):
            out.write(np.roll(frames, 2 * i, axis=1))
        out.release()

    # Labelled faces: .npz files (FER2013's layout, FER+ votes beside), class folders, a CSV.
    train, train_labels = _crops(one, box, 8, seed=1, size=48)
    val, val_labels = _crops(one, box, 3, seed=2, size=48)
    train, val = np.stack(train), np.stack(val)
    shared = root / "shared" / "datasets" / "fer2013"
    for folder in (work, work / "fer2013", shared):
        _save_npz(folder / "train.npz", train, train_labels)
        _save_npz(folder / "val.npz", val, val_labels)
        _save_votes(folder / "train_ferplus.npz", train_labels, np.load(folder / "train.npz")["names"])
        _save_votes(folder / "val_ferplus.npz", val_labels, np.load(folder / "val.npz")["names"])
    for name in ["my_val.npz", "data.npz", "my_faces.npz"]:
        _save_npz(work / name, val if "val" in name else train, val_labels if "val" in name else train_labels)
    for folder, count, seed in [("my_faces", 5, 3), ("my_test", 2, 4)]:  # 5 a class: --cv 5 works
        photos, labels = _crops(one, box, count, seed=seed, size=160)
        for i, (img, label) in enumerate(zip(photos, labels, strict=True)):
            (work / folder / CLASSES[label]).mkdir(parents=True, exist_ok=True)
            img.save(work / folder / CLASSES[label] / f"{i:03d}.jpg")

    # The earlier Streamlit app's feedback: feedback_log.csv beside feedback_images/.
    (work / "old_app" / "feedback_images").mkdir(parents=True)
    Image.fromarray(val[0]).save(work / "old_app" / "feedback_images" / "face_1.png")
    (work / "old_app" / "feedback_log.csv").write_text(
        "timestamp,image_path,predicted_emotion,corrected_emotion,confidence\n"
        "2024-05-01 10:00:00,feedback_images/face_1.png,neutral,sad,0.55\n"
    )
    (work / "recipe.yaml").write_text("epochs: 2\nbatch_size: 32\n")
    (work / "space.yaml").write_text("lr: {low: 0.001, high: 0.01, log: true}\n")
    for name in ["my.onnx", "my_model.onnx"]:
        shutil.copy(REPO_ROOT / "src" / "emolens" / "assets" / "fast.onnx", work / name)
    _foreign_model(work / "foreign.onnx")
    assets = work / "src" / "emolens" / "assets"  # the paths the docs give from a source checkout
    assets.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "src" / "emolens" / "assets" / "fast.pt", assets / "fast.pt")
    shutil.copytree(REPO_ROOT / "configs", work / "configs")
