"""One place for settings: defaults < config file < environment (EMOLENS_*) < explicit arguments.

The config file is ``$EMOLENS_HOME/config.toml`` (or the path in ``EMOLENS_CONFIG``).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource


def default_home() -> Path:
    env = os.environ.get("EMOLENS_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "emolens"


def _config_file() -> Path:
    return Path(os.environ.get("EMOLENS_CONFIG", default_home() / "config.toml"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMOLENS_", extra="ignore")

    home: Path = default_home()
    detector: str = "retinaface"
    model: str = "fast"
    min_face_size: int = 20
    detection_threshold: float = 0.6
    max_faces: int = 100
    max_pixels: int = 100_000_000  # refuse to decode larger images: ~300 MB of RGB
    max_side: int = 1600  # detectors work on a copy downscaled to at most this side
    threads: int = 0  # ONNX Runtime intra-op threads; 0 = its default (all cores)
    database_url: str | None = None  # SQLAlchemy URL; None = SQLite file $EMOLENS_HOME/emolens.db
    # Learning from corrections (emolens finetune --from-feedback)
    min_feedback: int = 20  # refuse to fine-tune on fewer corrections than this
    replay_data: Path | None = None  # a sample of the base model's training data, replayed so it does not forget
    base_val_data: Path | None = None  # the fixed validation set of the promotion gate

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, _config_file()))


@lru_cache
def get_settings() -> Settings:
    return Settings()
