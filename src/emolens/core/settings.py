"""One place for settings: defaults < config file < environment (EMOLENS_*) < explicit arguments.

The config file is ``$EMOLENS_HOME/config.toml`` (or the path in ``EMOLENS_CONFIG``).
"""

from __future__ import annotations

import os
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
    model: str = "active"  # the registry's active version (`fast` while it is empty); or an ensemble: fast+accurate
    tta: bool = False  # the analyzer also averages each model over the mirrored face
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
    # Video (emolens video, live mode)
    video_detect_every: int = 3  # detect faces every N frames; optical flow follows them in between
    video_smoothing: float = 0.3  # EMA weight of each new reading of a track's emotions (1 = no smoothing)
    video_max_side: int = 640  # the detector sees video frames downscaled to at most this side
    # Identity and attendance (emolens people / identify / attendance)
    embedder: str = "dlib"  # "dlib" (built-in ResNet) or the path of an ArcFace-style .onnx model
    embedder_size: int = 112  # ONNX embedder input side, unless the model's metadata says otherwise
    embedder_mean: float = 127.5  # ONNX embedder input: (pixel - mean) / std, RGB
    embedder_std: float = 127.5
    identity_threshold: float | None = None  # None: the active recognizer version's recommended threshold
    identity_min_similarity: float | None = None  # None: the embedder's own (cosine, measured on LFW)
    # Serving (emolens serve)
    api_read_key_required: bool = False  # reads (analyze, lists, models) need an API key too
    # Faces, names and attendance (feedback records and crops, people, identify, attendance reports)
    # need a read key even when other reads are open; True opens them (a trusted, single-user machine).
    api_personal_reads_open: bool = False
    max_upload_mb: float = 20.0  # request bodies above this are refused (413) while being read
    request_timeout_s: float = 30.0  # a request not answered by then gets 504
    header_timeout_s: float = 10.0  # a connection that sends no complete request head by then is closed
    cors_origins: list[str] = []  # browser origins allowed to call the API; [] = same origin only
    allow_finetune_from_web: bool = True  # admin keys may start fine-tuning from the API and page
    serve_threads: int = 2  # analyses at once per server process (the rest queue); threads=0 splits the cores
    serve_queue: int = 64  # analyses allowed to wait; beyond that 503 "busy"
    analysis_cache: int = 256  # recent analyses kept (in the database) so feedback can point at their faces
    analysis_ttl_s: float = 3600.0  # ... for at most this long (swept on a timer)
    analysis_cache_mb: float = 200.0  # ... and at most this many megabytes of uploads (the oldest go first)
    database_timeout_s: float = 10.0  # a request waits this long for the database, then 503
    # Host header names the server answers (DNS rebinding); [] = loopback names and `serve --host`'s
    allowed_hosts: list[str] = []
    shadow_model: str | None = None  # a candidate run beside the active model on a share of requests
    shadow_share: float = 0.1  # the share of analyses the shadow model also classifies (0..1)
    shadow_queue: int = 32  # shadow classifications allowed to wait; beyond that a sample is skipped

    @property
    def db_url(self) -> str:
        """The database's SQLAlchemy URL: ``database_url``, else the SQLite file ``home/emolens.db``."""
        return self.database_url or f"sqlite:///{self.home / 'emolens.db'}"

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, _config_file()))
