"""Settings precedence: defaults < config file < environment < explicit arguments."""

from __future__ import annotations

from emolens.core.settings import Settings
from emolens.pipeline.analyzer import Analyzer
from emolens.workspace import get_settings


def test_config_file_then_environment_then_arguments(emolens_home, monkeypatch):
    assert Settings().detector == "retinaface" and Settings().max_faces == 100  # defaults
    (emolens_home / "config.toml").write_text('detector = "haar"\nmax_faces = 7\n')
    assert Settings().detector == "haar" and Settings().max_faces == 7
    monkeypatch.setenv("EMOLENS_MAX_FACES", "3")
    assert Settings().max_faces == 3 and Settings().detector == "haar"
    get_settings.cache_clear()
    analyzer = Analyzer(max_faces=5)
    assert analyzer.detector.name == "haar" and analyzer.detector.options.max_faces == 5
    assert Analyzer().detector.options.max_faces == 3


def test_config_file_can_live_elsewhere(emolens_home, monkeypatch, tmp_path):
    other = tmp_path / "elsewhere.toml"
    other.write_text("min_face_size = 64\n")
    monkeypatch.setenv("EMOLENS_CONFIG", str(other))
    assert Settings().min_face_size == 64
