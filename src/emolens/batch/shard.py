"""The per-shard function, the same locally and on Ray: decode, detect and align each image of a
shard, classify all its faces together, and write the rows as one Parquet file, atomically.

A ``ShardWorker`` loads the models once; each process (or Ray actor) keeps one for all its shards.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from emolens.batch.spec import JobSpec, Shard, file_sha256, pyarrow_modules
from emolens.core.errors import EmoLensError, ImageTooLargeError, ModelError, StorageError

STAGES = ("decode", "detect", "align", "classify", "embed", "write")
PARQUET_MAGIC = b"PAR1"


@dataclass
class ShardReport:
    """What one shard produced; the driver sums these into the run's figures."""

    index: int
    images: int = 0
    faces: int = 0
    no_face: int = 0
    failed: int = 0
    rows: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)  # reason -> images (and "face: ..." -> faces)
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> seconds spent in this shard
    cpu_seconds: float = 0.0  # the worker process's CPU time on this shard (all its threads)
    pid: int = 0  # the worker process that wrote it

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ShardReport:
        return cls(**json.loads(text))


def output_schema(labels: list[str], embeddings: bool):
    """One fixed schema per job, so every shard (even one of failures only) reads as one dataset. A
    face's columns are the face record's flat row (``FaceResult.to_row``), under the same names."""
    pa, _ = pyarrow_modules()
    f32, text = pa.float32(), pa.string()
    fields = [
        ("image_id", text),
        ("source", text),  # the image's path
        ("shard", pa.int32()),
        ("status", text),  # face | no_face | error
        ("index", pa.int32()),  # the face's number in its image, from 0, highest detection score first
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("x1", f32),
        ("y1", f32),
        ("x2", f32),
        ("y2", f32),
        ("score", f32),
        ("landmarks", pa.list_(f32, 10)),  # x, y of: eye, eye, nose, mouth corner, mouth corner
        ("label", text),
        ("top_label", text),
        ("confidence", f32),
        ("uncertain", pa.bool_()),
        # why the label is not a plain emotion (blurry, too small, ...), or, for a failure, the error's
        # message without the file name and details, to count failures by
        ("reason", text),
        ("rule", text),
        ("quality", f32),
        *[(f"p_{label}", f32) for label in labels],
        ("error", text),  # the full message, for an image that failed or a face that could not be classified
        *([("embedding", pa.list_(f32)), ("embedder", text)] if embeddings else []),
        ("model", text),
        ("model_sha256", text),
        ("detector", text),
        ("decode_ms", f32),
        ("detect_ms", f32),
        ("align_ms", f32),
        ("classify_ms", f32),  # this image's share of its shard's batched classification
        *([("embed_ms", f32)] if embeddings else []),
    ]
    return pa.schema(fields)


def failure_reason(exc: BaseException, path: str) -> str:
    """A short, countable reason: the message without the file name or parenthesised details."""
    if isinstance(exc, ImageTooLargeError):
        return "image too large"
    if not isinstance(exc, EmoLensError):
        return type(exc).__name__
    msg = str(exc)
    if path and msg.startswith(path + ": "):
        msg = msg[len(path) + 2 :]
    return re.sub(r"\s*\(.*\)\s*$", "", msg).strip() or type(exc).__name__


class ShardWorker:
    """Holds the detector, the emotion model and (optionally) the embedder of one worker."""

    def __init__(self, spec: JobSpec):
        from emolens.core.settings import Settings
        from emolens.pipeline.analyzer import Analyzer
        from emolens.workspace import Workspace

        self.spec = spec
        # A worker is an entry point: its root is made from the job's own settings, not the machine's.
        ws = Workspace(Settings(max_pixels=spec.max_pixels, threads=spec.threads))
        self.analyzer = Analyzer(
            _model_file(spec),
            spec.detector,
            min_face_size=spec.min_face_size,
            detection_threshold=spec.detection_threshold,
            max_faces=spec.max_faces,
            max_side=spec.max_side,
            workspace=ws,
        ).warmup()
        self.embedder = None
        if spec.embedder:
            from emolens.identify.embed import create_embedder

            self.embedder = create_embedder(spec.embedder)
        self.schema = output_schema(spec.labels, bool(spec.embedder))
        self._labels = self.analyzer.labels
        self._const = {"model": spec.model, "model_sha256": spec.model_sha256, "detector": spec.detector}

    def run(self, shard: Shard) -> ShardReport:
        """Process one shard and write its file; a bad image becomes an error row, never an exception."""
        report = ShardReport(index=shard.index, pid=os.getpid())
        cpu0 = time.process_time()
        sec = Counter({s: 0.0 for s in STAGES})
        images: list[dict] = []  # per image: its rows' common fields, faces and crops
        crops: list[np.ndarray] = []
        chips: list[np.ndarray] = []
        for image_id, path in zip(shard.ids, shard.paths, strict=True):
            # Only the crops (and chips) of an image are kept until the shard is classified, not its pixels.
            images.append(self._image(image_id, path, shard.index, sec, crops, chips))
        t = time.perf_counter()
        probs = None
        if crops:
            try:
                probs = self.analyzer.model.predict(np.stack(crops), batch_size=self.spec.face_batch)
            except Exception as exc:  # the faces keep their boxes, marked; the shard is still written
                for img in images:
                    for f in img["faces"]:
                        if f["crop"] is not None:
                            f["crop"], f["result"].error = None, f"classification failed: {exc}"
        sec["classify"] += time.perf_counter() - t
        t = time.perf_counter()
        vectors = None
        if chips:
            try:
                vectors = self.embedder.embed_chips(chips)
            except Exception as exc:  # the emotions stand without the embeddings
                for img in images:
                    for f in img["faces"]:
                        if f["chip"] is not None:
                            f["chip"], f["embed_error"] = None, f"embedding failed: {exc}"
        sec["embed"] += time.perf_counter() - t
        rows = self._rows(images, probs, vectors, sec, report)
        t = time.perf_counter()
        write_shard(self.schema, rows, self.spec.shard_path(shard.index), shard.index, self.spec)
        sec["write"] += time.perf_counter() - t
        report.rows = len(rows)
        report.seconds = dict(sec)
        report.cpu_seconds = time.process_time() - cpu0
        return report

    def _image(self, image_id, path, index, sec, crops, chips) -> dict:
        from emolens.image.io import load_image

        img = {"image_id": image_id, "source": path, "shard": index, "faces": [], "error": None}
        t0 = time.perf_counter()
        try:
            pixels = load_image(path, max_pixels=self.spec.max_pixels) if path else None
            if pixels is None:
                raise EmoLensError("no path given for this image")
        except Exception as exc:  # a bad file is a row, not a failed job
            img.update(error=str(exc), reason=failure_reason(exc, path), decode_ms=_ms(t0))
            sec["decode"] += time.perf_counter() - t0
            return img
        t1 = time.perf_counter()
        img.update(width=pixels.shape[1], height=pixels.shape[0], decode_ms=(t1 - t0) * 1e3)
        try:
            faces = self.analyzer.detector(pixels)
        except Exception as exc:  # a detector crash on one image must not lose the shard
            img.update(error=f"{path}: detection failed: {exc}", reason=f"detection failed: {type(exc).__name__}")
            sec["decode"] += t1 - t0
            sec["detect"] += time.perf_counter() - t1
            return img
        t2 = time.perf_counter()
        results, face_crops, ok = self.analyzer.align_faces(pixels, faces)
        crop_of = dict(zip(ok, face_crops, strict=True))
        for i, res in enumerate(results):
            crop_at = None
            if i in crop_of:
                crop_at = len(crops)
                crops.append(crop_of[i])
            chip, embed_error = None, None
            if self.embedder is not None:
                try:
                    chip = self.embedder.align(pixels, faces[i])
                    chips.append(chip)
                except Exception as exc:  # one face without an embedding keeps its emotion
                    embed_error = f"embedding failed: {exc}"
            img["faces"].append({"result": res, "crop": crop_at, "chip": chip, "embed_error": embed_error})
        t3 = time.perf_counter()
        img.update(detect_ms=(t2 - t1) * 1e3, align_ms=(t3 - t2) * 1e3)
        sec["decode"] += t1 - t0
        sec["detect"] += t2 - t1
        sec["align"] += t3 - t2
        return img

    def _rows(self, images, probs, vectors, sec, report: ShardReport) -> list[dict]:
        n_crops = max(1, sum(f["crop"] is not None for img in images for f in img["faces"]))
        n_chips = max(1, sum(f["chip"] is not None for img in images for f in img["faces"]))
        labels, failures = Counter(), Counter()
        rows: list[dict] = []
        chip_at = 0
        for img in images:
            report.images += 1
            base = {k: img.get(k) for k in ("image_id", "source", "shard", "width", "height", "decode_ms")}
            base.update(self._const, detect_ms=img.get("detect_ms"), align_ms=img.get("align_ms"))
            if img["error"] is not None:
                report.failed += 1
                failures[img["reason"]] += 1
                rows.append({**base, "status": "error", "error": img["error"], "reason": img["reason"]})
                continue
            if not img["faces"]:
                report.no_face += 1
                rows.append({**base, "status": "no_face"})
                continue
            mine = sum(f["crop"] is not None for f in img["faces"])
            base["classify_ms"] = sec["classify"] * 1e3 * mine / n_crops
            if self.embedder is not None:
                base["embed_ms"] = sec["embed"] * 1e3 * sum(f["chip"] is not None for f in img["faces"]) / n_chips
            for i, f in enumerate(img["faces"]):
                res = f["result"]
                if f["crop"] is not None:
                    res.probs = {k: float(v) for k, v in zip(self._labels, probs[f["crop"]], strict=True)}
                res.index = i
                row = {**base, "status": "face", **res.to_row()}
                del row["track_id"]  # no tracks in a collection of photos
                if res.probs:  # Parquet keeps the probabilities whole (float32), not rounded as for CSV
                    row.update({f"p_{k}": v for k, v in res.probs.items()}, confidence=res.confidence)
                    labels[res.label] += 1
                errors = [e for e in (res.error, f["embed_error"]) if e]
                if self.embedder is not None:
                    row["embedder"] = self.embedder.name
                    if f["chip"] is not None and vectors is not None:
                        row["embedding"] = vectors[chip_at].tolist()
                        chip_at += 1
                if errors:
                    row.update(error="; ".join(errors), reason=errors[0].split(":")[0])
                    failures["face: " + row["reason"]] += 1
                report.faces += 1
                rows.append(row)
        report.labels, report.failures = dict(labels), dict(failures)
        return rows


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3


def _model_file(spec: JobSpec) -> str:
    """The model file to load: the driver's path when it holds the same bytes here, else a copy of
    the bytes the driver sent (a worker on another machine), checked by hash either way."""
    path = Path(spec.model_path)
    if path.is_file() and file_sha256(path) == spec.model_sha256:
        return str(path)
    if spec.model_bytes is None:
        raise ModelError(f"model {spec.model_path} is missing or different on this worker ({os.uname().nodename})")
    cache = Path(tempfile.gettempdir()) / "emolens-batch-models"
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"{spec.model_sha256}.onnx"
    if not target.is_file() or file_sha256(target) != spec.model_sha256:
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
        tmp.write_bytes(spec.model_bytes)
        os.replace(tmp, target)
    return str(target)


def write_shard(schema, rows: list[dict], target: Path, index: int, spec: JobSpec) -> None:
    """Write the shard's rows under a hidden temporary name, flush it to disk, then rename it into
    place: a reader, a crash or a power loss sees the whole file or none of it."""
    pa, pq = pyarrow_modules()
    table = pa.Table.from_pylist(rows, schema=schema).replace_schema_metadata(
        {"emolens.shard": str(index), "emolens.model_sha256": spec.model_sha256, "emolens.rows": str(len(rows))}
    )
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        if spec.embedder:  # identity embeddings are biometric data: the shard is private (0600) from the start
            from emolens.core.fileio import private_new_file

            private_new_file(tmp)
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except OSError as exc:
        raise StorageError(
            f"could not write {target}: {exc}; finished shards are kept: free space or fix the folder, "
            "then run the same command to resume"
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (a power loss after it keeps the new name)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open a folder; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def shard_done(path: Path) -> bool:
    """A finished shard: a complete Parquet file (it ends with the format's magic bytes)."""
    try:
        size = path.stat().st_size
        if size < 12:
            return False
        with open(path, "rb") as fh:
            fh.seek(size - 4)
            return fh.read(4) == PARQUET_MAGIC
    except OSError:
        return False
