"""The resolved job: everything a worker needs to process a shard, and what makes two runs the same job."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from emolens.core.errors import EmoLensError, require

FORMAT_VERSION = 1
STATE_DIR = "_emolens_batch"  # a leading underscore: Parquet readers skip it when reading OUTPUT
JOB_FILE = "job.json"

# What decides the rows of the output: a resumed run must agree on all of them, or it would mix
# two different jobs in one dataset. Threads, worker count and backend change speed only.
FINGERPRINT_FIELDS = (
    "format_version",
    "input_sha256",
    "n_images",
    "shard_size",
    "model_sha256",
    "labels",
    "detector",
    "min_face_size",
    "detection_threshold",
    "max_faces",
    "max_side",
    "max_pixels",
    "embedder",
)


@dataclass
class Shard:
    """A slice of the manifest, processed and written as one file: ``shard-NNNNN.parquet``."""

    index: int
    ids: list[str]
    paths: list[str]


@dataclass
class JobSpec:
    output: str
    input_sha256: str
    n_images: int
    shard_size: int
    model: str  # the version that runs, as named: fast, accurate, v3, or a path
    model_path: str
    model_sha256: str
    labels: list[str]
    detector: str
    min_face_size: int
    detection_threshold: float
    max_faces: int
    max_side: int
    max_pixels: int
    embedder: str | None  # None: no embeddings
    threads: int = 0  # ONNX Runtime threads in each worker
    face_batch: int = 256  # faces classified per ONNX Runtime call
    format_version: int = FORMAT_VERSION
    # The model file itself, for workers on machines where model_path does not hold it (Ray clusters).
    model_bytes: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def n_shards(self) -> int:
        return math.ceil(self.n_images / self.shard_size)

    @property
    def digits(self) -> int:
        return max(5, len(str(self.n_shards - 1)))

    def shard_name(self, index: int) -> str:
        return f"shard-{index:0{self.digits}d}.parquet"

    def shard_path(self, index: int) -> Path:
        return Path(self.output) / self.shard_name(index)

    def fingerprint(self) -> dict:
        d = asdict(self)
        return {k: d[k] for k in FINGERPRINT_FIELDS}

    def to_json(self) -> str:
        d = asdict(self)
        d.pop("model_bytes")
        return json.dumps(d, indent=2)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_resumable(spec: JobSpec, job_file: Path) -> None:
    """Refuse to continue a run in OUTPUT that a different job started; say what differs."""
    try:
        before = json.loads(job_file.read_text())
    except (OSError, ValueError) as exc:
        raise EmoLensError(f"cannot read {job_file} ({exc}); write to a new OUTPUT folder") from None
    now = spec.fingerprint()
    changed = [k for k in FINGERPRINT_FIELDS if before.get(k) != now[k]]
    if not changed:
        return
    explain = {
        "input_sha256": "the input's images or ids changed",
        "n_images": f"{before.get('n_images')} images then, {now['n_images']} now",
        "model_sha256": f"a different model file (was {before.get('model')!r})",
        "shard_size": f"shard size {before.get('shard_size')} then, {now['shard_size']} now",
    }
    what = "; ".join(explain.get(k, f"{k}: {before.get(k)!r} then, {now[k]!r} now") for k in changed)
    raise EmoLensError(
        f"{spec.output} holds a batch run of a different job ({what}); run the same command as before to "
        "resume it, or write this job to a new OUTPUT folder"
    )


def pyarrow_modules():
    """(pyarrow, pyarrow.parquet), or the error that names the extra to install."""
    return require("pyarrow", "batch"), require("pyarrow.parquet", "batch", "pyarrow")
