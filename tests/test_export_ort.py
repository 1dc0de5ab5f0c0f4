"""`emolens export MODEL OUT.ort`: ONNX Runtime's mobile format, with the metadata and the answers kept."""

from __future__ import annotations

import numpy as np
from typer.testing import CliRunner

from emolens.classify.emotion import EmotionModel
from emolens.cli import EXAMPLE, app
from emolens.export.ort import parity_tolerance
from emolens.workspace import Workspace


def test_export_ort_keeps_metadata_and_answers(tmp_path, emolens_home):
    out = tmp_path / "phone" / "fast-int8.ort"
    result = CliRunner().invoke(app, ["export", "fast-int8", str(out)])
    assert result.exit_code == 0, result.output
    assert "metadata kept" in result.output
    assert out.read_bytes()[4:8] == b"ORTM"  # a FlatBuffers ORT model, not protobuf ONNX

    mobile, onnx = EmotionModel(out), EmotionModel(Workspace.default().models.path("fast-int8"))
    assert mobile.meta.to_props() == onnx.meta.to_props()  # what a Kotlin/Swift app reads
    crops = np.random.default_rng(1).integers(0, 256, (4, 48, 48), dtype=np.uint8)
    # INT8: the mobile graph keeps quantize/dequantize pairs apart that the .onnx session fuses (see
    # parity_tolerance); the same answers, probabilities within its tolerance.
    p_mobile, p_onnx = mobile.predict(crops), onnx.predict(crops)
    np.testing.assert_allclose(p_mobile, p_onnx, atol=parity_tolerance(onnx.meta.card))
    assert (p_mobile.argmax(1) == p_onnx.argmax(1)).all()

    # The analyzer takes the .ort file like any model path.
    analyzed = CliRunner().invoke(app, ["analyze", str(EXAMPLE), "--model", str(out), "--save", str(tmp_path / "o")])
    assert analyzed.exit_code == 0 and "happy" in analyzed.output, analyzed.output


def test_a_float_model_converts_exactly(tmp_path, emolens_home):
    out = tmp_path / "fast.ort"
    result = CliRunner().invoke(app, ["export", "fast", str(out)])
    assert result.exit_code == 0, result.output
    crops = np.random.default_rng(2).integers(0, 256, (4, 48, 48), dtype=np.uint8)
    onnx = EmotionModel(Workspace.default().models.path("fast"))
    assert parity_tolerance(onnx.meta.card) == 1e-4
    np.testing.assert_allclose(EmotionModel(out).predict(crops), onnx.predict(crops), atol=1e-5)


def test_export_ort_refuses_bad_input_in_one_line(tmp_path, emolens_home):
    runner = CliRunner()
    missing = runner.invoke(app, ["export", "no-such-model", str(tmp_path / "x.ort")])
    assert missing.exit_code == 2 and "no model named 'no-such-model'" in missing.output
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(b"not a model")
    broken = runner.invoke(app, ["export", str(bare), str(tmp_path / "x.ort")])
    assert broken.exit_code == 2 and "corrupt or not ONNX" in broken.output
    assert not list(tmp_path.glob("*.ort")) and not list(tmp_path.glob(".*.ort"))  # nothing half-written
