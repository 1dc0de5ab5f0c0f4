"""Where commands write and how they report: one default place (./emolens-output/<command>/), never
inside the installed package, and `--json FILE|-` / `--csv FILE|-` the same on every command."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import emolens
from emolens.cli.analyze import EXAMPLE

PACKAGE = Path(emolens.__file__).resolve().parent


def run_cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMOLENS_")}
    env |= {"EMOLENS_HOME": str(cwd / "home"), "COLUMNS": "100"}
    return subprocess.run(
        [sys.executable, "-m", "emolens.cli", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def package_state() -> dict[str, str]:
    return {
        str(p.relative_to(PACKAGE)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(PACKAGE.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


@pytest.fixture
def calibration(shared_datasets, tmp_path) -> Path:
    val = shared_datasets / "fer2013" / "val.npz"
    if not val.is_file():
        pytest.skip(f"{val} not found")
    with np.load(val) as z:
        images, labels, classes = z["images"][:200], z["labels"][:200], z["classes"]
    out = tmp_path / "cal.npz"
    np.savez(out, images=images, labels=labels, classes=classes)
    return out


def test_quantize_of_a_shipped_model_leaves_the_package_untouched(calibration, tmp_path):
    pytest.importorskip("onnx")
    before = package_state()
    proc = run_cli("quantize", "fast", "--calibration", calibration, "--samples", "40", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "emolens-output" / "quantize" / "fast-int8.onnx").is_file()
    # Asked to write into the package: one line, exit 2, nothing written.
    inside = PACKAGE / "assets" / "fast-int8.onnx"
    proc = run_cli("quantize", "fast", "--calibration", calibration, "--samples", "40", "--out", inside, cwd=tmp_path)
    assert proc.returncode == 2 and "inside the installed emolens package" in proc.stderr
    assert "Traceback" not in proc.stderr
    # In place into a shipped model's file, by its path: refused before evaluating.
    proc = run_cli(
        "evaluate", PACKAGE / "assets" / "fast.onnx", calibration, "--target-coverage", "0.9", "--save-thresholds",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2 and "inside the installed emolens package" in proc.stderr
    assert package_state() == before


def test_writes_into_the_package_are_refused_below_the_cli(tmp_path):
    from emolens.classify.modelfile import annotate
    from emolens.core.errors import EmoLensError
    from emolens.core.fileio import atomic_write, refuse_package
    from emolens.workspace import Workspace

    fast = PACKAGE / "assets" / "fast.onnx"
    with pytest.raises(EmoLensError, match="inside the installed emolens package"):
        annotate(fast, Workspace.default().models.load(str(fast)).meta)
    with pytest.raises(EmoLensError, match="inside the installed emolens package"):
        atomic_write(PACKAGE / "assets" / "x.json", b"{}")
    assert not (PACKAGE / "assets" / "x.json").exists()
    assert refuse_package(tmp_path / "x.onnx") == tmp_path / "x.onnx"


def test_default_places_are_under_emolens_output(calibration, tmp_path):
    """Without --out/--save each command writes under ./emolens-output/<command>/."""
    out = tmp_path / "emolens-output"
    assert run_cli("analyze", "-q", cwd=tmp_path).returncode == 0
    assert (out / "analyze" / "astronaut_emolens.jpg").is_file()
    proc = run_cli("explain", EXAMPLE, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in (out / "explain").iterdir()] == ["astronaut_explain_gradcam.jpg"]
    assert run_cli("eda", calibration, cwd=tmp_path).returncode == 0
    assert (out / "eda" / "report.md").is_file()
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(EXAMPLE.read_bytes())
    proc = run_cli("batch", photos, "--workers", "1", "-q", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert list((out / "batch" / "photos").rglob("*.parquet"))
    # Nothing else was written beside the user.
    assert {p.name for p in tmp_path.iterdir()} <= {"cal.npz", "emolens-output", "home", "photos"}
    assert sorted(p.name for p in out.iterdir()) == ["analyze", "batch", "eda", "explain"]


def test_video_default_place(tmp_path):
    from emolens.video.synthetic import astronaut_patch, compose_clip

    compose_clip(tmp_path / "clip.mp4", [astronaut_patch(140)], [(10, 20)], [(200, 60)], frames=4)
    proc = run_cli("video", "clip.mp4", "--no-video", "-q", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "emolens-output" / "video" / "clip" / "timeline.csv").is_file()


def _json_and_csv_options() -> list[tuple[str, object]]:
    from typer.main import get_command

    from emolens.cli import app

    found, stack = [], [("emolens", get_command(app))]
    while stack:
        name, cmd = stack.pop()
        for p in cmd.params:
            if set(getattr(p, "opts", ())) & {"--json", "--csv"}:
                found.append((name, p))
        if hasattr(cmd, "commands"):  # a group (Typer's vendored Click: no isinstance against click)
            stack += [(f"{name} {n}", c) for n, c in cmd.commands.items()]
    return found


def test_every_json_and_csv_option_takes_file_or_dash():
    """One option helper: `--json FILE|-` and `--csv FILE|-`, never a bare flag."""
    options = _json_and_csv_options()
    commands = {name for name, _ in options}
    for expected in ("analyze", "evaluate", "compare", "batch", "identify", "models", "models list",
                     "people list", "feedback list", "feedback stats", "attendance report",
                     "models shadow report", "attendance list", "keys list", "people versions"):  # fmt: skip
        assert f"emolens {expected}" in commands, expected
    for name, opt in options:
        assert not opt.is_flag and opt.metavar == "FILE|-", (name, opt.opts)
        assert "('-': stdout)" in (opt.help or ""), (name, opt.opts)


def test_models_json_and_csv_to_a_file_and_to_stdout(tmp_path):
    proc = run_cli("models", "--json", "-", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    names = [m["name"] for m in json.loads(proc.stdout)["models"]]
    assert "fast" in names
    proc = run_cli("models", "list", "--csv", "-", "--json", tmp_path / "m.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert [r["name"] for r in rows] == names and rows[0]["labels"].split()[0] == "angry"
    assert json.loads((tmp_path / "m.json").read_text())["models"][0]["name"] == names[0]
    proc = run_cli("people", "list", "--json", "-", cwd=tmp_path)
    assert proc.returncode == 0 and json.loads(proc.stdout) == []
    proc = run_cli("models", "--json", cwd=tmp_path)  # the value is required: one line, no traceback
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_models_fits_80_columns(tmp_path):
    """One line per model, the registry's sources whole, nothing past column 80."""
    assert run_cli("models", "promote", "accurate", cwd=tmp_path).returncode == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMOLENS_")}
    env |= {"EMOLENS_HOME": str(tmp_path / "home"), "COLUMNS": "80"}
    proc = subprocess.run([sys.executable, "-m", "emolens.cli", "models"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    for name in ("accurate", "fast", "fast-int8", "robust"):
        (row,) = [line for line in lines if line.split()[:1] == [name]]
        assert f"{name}.onnx" in row and "48x48x1" in row
    assert "angry disgust fear happy neutral sad surprise" in proc.stdout  # the labels once
    assert f"shipped models in {PACKAGE / 'assets'}" in proc.stdout  # the folder whole, once
    assert any("shipped:accurate" in line and "active" in line for line in lines)
