"""The data tools against what a careless or hostile folder holds: images of extreme shape, file
names carrying HTML, links out of the folder, and non-finite numbers in an imported log."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from emolens.cli import app
from emolens.core.errors import EmoLensError
from emolens.models import ASSETS

EXAMPLE = ASSETS / "examples" / "astronaut.jpg"
HOSTILE_NAME = "<img src=x onerror=alert(1)>[click](javascript:alert(2))"


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def noise(h: int, w: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_filter_survives_long_thin_images_and_escapes_names_in_its_report(emolens_home, tmp_path):
    folder = tmp_path / "generated" / "happy"
    folder.mkdir(parents=True)
    noise(10, 10_000).save(folder / "wide.png")
    noise(10_000, 10, 1).save(folder / "tall.png")
    shutil.copyfile(EXAMPLE, folder / f"{HOSTILE_NAME}.jpg")
    shutil.copyfile(EXAMPLE, folder / "copy.jpg")  # a duplicate whose reason names the hostile file
    report = tmp_path / "report"
    r = cli("data", "filter", folder.parent, "--report", report)
    assert r.exit_code == 0, r.output
    checks = {c["path"]: c for c in json.loads((report / "filter.json").read_text())["checks"]}
    assert not checks["happy/wide.png"]["kept"] and not checks["happy/tall.png"]["kept"]
    assert len(list((report / "dropped").glob("*.jpg"))) >= 3  # thumbnails of the thin images too
    html = (report / "report.html").read_text()
    assert "<img src=x" not in html
    assert 'href="javascript' not in html and "<script" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html  # shown as text
    md = (report / "report.md").read_text()
    assert "<img src=x" not in md and "](javascript" not in md


def test_merge_refuses_a_link_that_leaves_the_folder(emolens_home, tmp_path):
    from emolens.data.quality import merge

    real, synthetic = tmp_path / "real", tmp_path / "synthetic"
    for root in (real, synthetic):
        (root / "happy").mkdir(parents=True)
        (root / "sad").mkdir(parents=True)
    for i in range(4):
        noise(48, 48, i).save(real / "happy" / f"h{i}.png")
        noise(48, 48, 10 + i).save(real / "sad" / f"s{i}.png")
    noise(48, 48, 99).save(synthetic / "happy" / "g0.png")
    secret = tmp_path / "elsewhere" / "shadow"
    secret.parent.mkdir()
    secret.write_text("root:$6$not-an-image")
    (synthetic / "sad" / "g1.jpg").symlink_to(secret)
    r = cli("data", "merge", real, synthetic, "--out", tmp_path / "merged")
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "g1.jpg" in lines[0] and "outside" in lines[0], r.output
    assert not (tmp_path / "merged" / "train.csv").exists()
    (synthetic / "sad" / "g1.jpg").unlink()
    (real / "sad" / "s9.png").symlink_to(secret)  # the real set is held to the same rule
    with pytest.raises(EmoLensError, match="s9.png.*outside"):
        merge(real, synthetic, tmp_path / "merged")
    (real / "sad" / "s9.png").unlink()
    (real / "sad" / "s9.png").symlink_to(real / "sad" / "s0.png")  # a link inside the folder is fine
    assert merge(real, synthetic, tmp_path / "merged").train_csv.exists()


def strict_json(text: str):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_import_refuses_non_finite_confidences_and_json_stays_valid(emolens_home, tmp_path):
    folder = tmp_path / "export"
    (folder / "feedback_images").mkdir(parents=True)
    rows = ["timestamp,image_path,predicted_emotion,corrected_emotion,confidence"]
    for i, conf in enumerate(["0.9", "inf", "nan", "-Infinity", "1e999", "1.5", ""]):
        Image.fromarray(np.full((48, 48), 40 + 20 * i, np.uint8)).save(folder / "feedback_images" / f"f{i}.png")
        rows.append(f"2024-01-01 10:0{i}:00,feedback_images/f{i}.png,happy,sad,{conf}")
    (folder / "feedback_log.csv").write_text("\n".join(rows) + "\n")
    r = cli("feedback", "import", folder)
    assert r.exit_code in (0, 1), r.output
    for bad in ("'inf'", "'nan'", "'-Infinity'", "'1e999'", "'1.5'"):
        assert bad in r.output, r.output
    listed = cli("feedback", "list", "--json", "-")
    assert listed.exit_code == 0, listed.output
    records = strict_json(listed.stdout)
    assert sorted(str(rec["confidence"]) for rec in records) == ["0.9", "None"]


def test_json_output_of_a_stored_infinity_is_valid_json(emolens_home):
    """A value stored before the import refused them (or by any other way in) prints as null."""
    from emolens.feedback import FeedbackService

    FeedbackService().add(np.full((48, 48), 90, np.uint8), "sad", predicted="happy", confidence=float("inf"))
    listed = cli("feedback", "list", "--json", "-")
    assert listed.exit_code == 0, listed.output
    (record,) = strict_json(listed.stdout)
    assert record["confidence"] is None
