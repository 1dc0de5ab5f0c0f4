"""`emolens export MODEL OUT.ort`: ONNX Runtime's mobile format, with the metadata and the answers kept."""

from __future__ import annotations

import numpy as np
from typer.testing import CliRunner

from emolens.classify.emotion import EmotionModel
from emolens.cli import EXAMPLE, app
from emolens.models import resolve_model


def test_export_ort_keeps_metadata_and_answers(tmp_path, emolens_home):
    out = tmp_path / "phone" / "fast-int8.ort"
    result = CliRunner().invoke(app, ["export", "fast-int8", str(out)])
    assert result.exit_code == 0, result.output
    assert "metadata kept" in result.output
    assert out.read_bytes()[4:8] == b"ORTM"  # a FlatBuffers ORT model, not protobuf ONNX

    mobile, onnx = EmotionModel(out), EmotionModel(resolve_model("fast-int8"))
    assert mobile.meta.to_props() == onnx.meta.to_props()  # what a Kotlin/Swift app reads
    crops = np.random.default_rng(1).integers(0, 256, (4, 48, 48), dtype=np.uint8)
    np.testing.assert_allclose(mobile.predict(crops), onnx.predict(crops), atol=1e-5)

    # The analyzer takes the .ort file like any model path.
    analyzed = CliRunner().invoke(app, ["analyze", str(EXAMPLE), "--model", str(out), "--save", str(tmp_path / "o")])
    assert analyzed.exit_code == 0 and "happy" in analyzed.output, analyzed.output


def test_export_ort_refuses_bad_input_in_one_line(tmp_path, emolens_home):
    runner = CliRunner()
    missing = runner.invoke(app, ["export", "no-such-model", str(tmp_path / "x.ort")])
    assert missing.exit_code == 2 and "no model named 'no-such-model'" in missing.output
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(b"not a model")
    broken = runner.invoke(app, ["export", str(bare), str(tmp_path / "x.ort")])
    assert broken.exit_code == 2 and "corrupt or not ONNX" in broken.output
    assert not list(tmp_path.glob("*.ort")) and not list(tmp_path.glob(".*.ort"))  # nothing half-written
