"""Plan a batch job, run its pending shards locally (processes) or on Ray Data, and sum it up.

The plan is fixed by the input and the options: the same command cuts the same shards, a finished
shard (a complete file in OUTPUT) is skipped, and ``job.json`` refuses a different job in the same
folder. Both backends call the same ``ShardWorker.run`` on each shard.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from emolens.batch.manifest import Manifest, read_input
from emolens.batch.shard import STAGES, ShardReport, ShardWorker, shard_done
from emolens.batch.spec import JOB_FILE, STATE_DIR, JobSpec, Shard, check_resumable, file_sha256, pyarrow_modules
from emolens.core.errors import EmoLensError, StorageError, require

if TYPE_CHECKING:
    from emolens.workspace import Workspace

DEFAULT_SHARD_SIZE = 256
MAX_POOL_RESTARTS = 3  # local runs: worker processes that die (OOM killer...) are replaced this many times

OnShard = Callable[[ShardReport], None]


@dataclass
class BatchOptions:
    """How to run a job. None takes the setting (``EMOLENS_*``, config file) or the default."""

    model: str | None = None
    detector: str | None = None
    min_face_size: int | None = None
    detection_threshold: float | None = None
    max_faces: int | None = None
    embeddings: bool = False  # add each face's identity embedding (needs emolens[identity])
    shard_size: int | None = None  # images per shard file; None: the running job's, or 256
    workers: int | None = None  # processes (local) or actors (Ray); None: all cores / all cluster CPUs
    ray: bool = False  # run on Ray Data (a local Ray instance unless ``address`` is given)
    address: str | None = None  # an existing Ray cluster: "auto", "ray://host:10001", ...
    face_batch: int = 256  # faces per ONNX Runtime call


class BatchInterruptedError(EmoLensError):
    """Ctrl-C: finished shards are kept and the same command resumes."""


@dataclass
class BatchSummary:
    """The whole output (every finished shard, this run's and earlier ones) and this run's figures."""

    output: str
    images: int = 0
    faces: int = 0
    no_face: int = 0
    failed: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    shards: int = 0
    shards_done: int = 0
    shards_skipped: int = 0  # already finished when this run started
    shards_run: int = 0
    images_run: int = 0
    faces_run: int = 0
    seconds: float = 0.0  # wall time of this run's processing
    stage_seconds: dict[str, float] = field(default_factory=dict)  # wall-clock, summed over workers
    cpu_seconds: float = 0.0  # CPU time of the workers on this run's shards (model loading excluded)
    backend: str = "local"
    workers: int = 1
    worker_restarts: int = 0

    @property
    def complete(self) -> bool:
        return self.shards_done == self.shards

    @property
    def images_per_s(self) -> float:
        return self.images_run / self.seconds if self.seconds else 0.0

    @property
    def faces_per_s(self) -> float:
        return self.faces_run / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "images_per_s": self.images_per_s, "faces_per_s": self.faces_per_s}


class BatchJob:
    """One job: INPUT analysed into a Parquet dataset in OUTPUT, by shards, resumable.

    >>> job = BatchJob("photos/", "out/", BatchOptions(workers=2))
    >>> job.pending_images, job.n_shards
    >>> summary = job.run()           # pyarrow.parquet.read_table("out/") reads the rows
    """

    def __init__(
        self,
        source: str | Path,
        output: str | Path,
        options: BatchOptions | None = None,
        workspace: Workspace | None = None,
    ):
        pyarrow_modules()  # the extra first: nothing below is of use without it
        self.options = o = options or BatchOptions()
        if workspace is None:  # the convenience entry point: the process's workspace
            from emolens.workspace import Workspace

            workspace = Workspace.default()
        self.settings = s = workspace.settings
        if o.workers is not None and o.workers < 1:
            raise EmoLensError(f"--workers must be at least 1, not {o.workers}")
        if o.shard_size is not None and o.shard_size < 1:
            raise EmoLensError(f"--shard-size must be at least 1, not {o.shard_size}")
        self.use_ray = o.ray or o.address is not None
        if self.use_ray:
            require("ray.data", "ray", "ray[data]")
        self.output = Path(output).absolute()
        self.job_file = self.output / STATE_DIR / JOB_FILE
        self._check_output()
        self.manifest: Manifest = read_input(source)
        # None on a cluster: as many as its CPUs allow, known once connected.
        self.workers: int | None = o.workers or (None if o.address else os.cpu_count() or 1)
        threads = s.threads or (1 if self.use_ray else max(1, (os.cpu_count() or 1) // (self.workers or 1)))
        detector_name = o.detector or s.detector
        # An unknown detector or model fails here, not in every worker.
        from emolens.pipeline.analyzer import Analyzer

        analyzer = Analyzer(o.model, detector_name, threads=threads, workspace=workspace)
        model = analyzer.model  # loads it: a missing or broken model fails before any shard
        embedder = None
        if o.embeddings:
            from emolens.identify.embed import settings_embedder

            settings_embedder(s)  # an unknown embedder fails here; dlib's models load in the workers
            if s.embedder == "dlib":
                require("dlib", "identity")
            embedder = s.embedder
        model_sha = file_sha256(model.path)
        self.spec = JobSpec(
            output=str(self.output),
            input_sha256=self.manifest.sha256,
            n_images=len(self.manifest),
            shard_size=o.shard_size or self._previous_shard_size() or DEFAULT_SHARD_SIZE,
            model=analyzer.model_version,
            model_path=str(Path(model.path).absolute()),
            model_sha256=model_sha,
            labels=list(model.labels),
            detector=detector_name,
            min_face_size=s.min_face_size if o.min_face_size is None else o.min_face_size,
            detection_threshold=s.detection_threshold if o.detection_threshold is None else o.detection_threshold,
            max_faces=s.max_faces if o.max_faces is None else o.max_faces,
            max_side=s.max_side,
            max_pixels=s.max_pixels,
            embedder=embedder,
            threads=threads,
            face_batch=o.face_batch,
            # Workers of a cluster may sit on machines without this file: they get its bytes (a few MB, once
            # per worker). A local Ray instance shares this machine's files.
            model_bytes=Path(model.path).read_bytes() if o.address else None,
        )
        if self.job_file.is_file():
            check_resumable(self.spec, self.job_file)
        self.pending = [i for i in range(self.spec.n_shards) if not shard_done(self.spec.shard_path(i))]

    # -- the plan ---------------------------------------------------------------------------------

    @property
    def n_shards(self) -> int:
        return self.spec.n_shards

    @property
    def total_images(self) -> int:
        return self.spec.n_images

    @property
    def pending_images(self) -> int:
        return sum(len(self.shard(i).ids) for i in self.pending)

    def shard(self, index: int) -> Shard:
        a = index * self.spec.shard_size
        b = a + self.spec.shard_size
        return Shard(index, self.manifest.ids[a:b], self.manifest.paths[a:b])

    def _check_output(self) -> None:
        if self.output.exists() and not self.output.is_dir():
            raise EmoLensError(f"OUTPUT {self.output} is a file; give a folder for the Parquet dataset")
        # A folder holding only an empty state folder is a run killed before it wrote its job.json.
        if (
            self.output.is_dir()
            and not self.job_file.is_file()
            and any(p.name != STATE_DIR for p in self.output.iterdir())
        ):
            raise EmoLensError(
                f"OUTPUT {self.output} is not empty and holds no EmoLens batch run; give a new or empty folder"
            )

    def _previous_shard_size(self) -> int | None:
        import json

        try:
            return int(json.loads(self.job_file.read_text())["shard_size"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    # -- running ----------------------------------------------------------------------------------

    def run(self, on_shard: OnShard | None = None) -> BatchSummary:
        """Process every pending shard; ``on_shard`` hears of each as it is written (progress bars)."""
        from filelock import FileLock, Timeout

        state = self.job_file.parent
        try:
            if self.spec.embedder:  # identity embeddings: a new output folder is the owner's only
                from emolens.core.fileio import private_dir

                private_dir(state)
            state.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {state}: {exc}") from exc
        lock = FileLock(str(state / "lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise EmoLensError(f"another batch run is writing to {self.output}; wait for it or stop it") from None
        try:
            if not self.job_file.is_file():
                _write_text(self.job_file, self.spec.to_json())
            for stale in self.output.glob(".shard-*.tmp"):  # left by a run that was killed mid-write
                stale.unlink(missing_ok=True)
            summary = BatchSummary(
                output=str(self.output),
                shards=self.n_shards,
                shards_skipped=self.n_shards - len(self.pending),
                backend="ray" if self.use_ray else "local",
                workers=min(self.workers or len(self.pending), max(1, len(self.pending))),
            )
            stage = Counter({s: 0.0 for s in STAGES})

            def done(report: ShardReport) -> None:  # sums only: a job may have 100,000s of shards
                summary.shards_run += 1
                summary.images_run += report.images
                summary.faces_run += report.faces
                summary.cpu_seconds += report.cpu_seconds
                stage.update(report.seconds)
                if on_shard:
                    on_shard(report)

            t0 = time.perf_counter()
            shards = [self.shard(i) for i in self.pending]
            try:
                if not shards:
                    pass
                elif self.use_ray:
                    summary.workers = _run_ray(self.spec, shards, self.workers, self.options.address, done)
                elif summary.workers == 1:
                    worker = ShardWorker(self.spec)
                    for shard in shards:
                        done(worker.run(shard))
                else:
                    summary.worker_restarts = _run_local(self.spec, shards, summary.workers, done)
            except KeyboardInterrupt:
                raise BatchInterruptedError(
                    f"interrupted: {summary.shards_run} of {len(shards)} shards of this run finished and are kept; "
                    "run the same command to resume"
                ) from None
            summary.seconds = time.perf_counter() - t0
            summary.stage_seconds = dict(stage)
            self.pending = [i for i in self.pending if not shard_done(self.spec.shard_path(i))]
            _count_output(self.spec, summary)
            return summary
        finally:
            lock.release()


def run_batch(
    source: str | Path, output: str | Path, options: BatchOptions | None = None, settings=None, on_shard=None
) -> BatchSummary:
    """Analyse every image of ``source`` into a Parquet dataset in ``output``; resumes an earlier run."""
    return BatchJob(source, output, options, settings).run(on_shard)


def read_output(output: str | Path, columns: list[str] | None = None):
    """The rows of a batch output as a pyarrow Table (finished shards only)."""
    _, pq = pyarrow_modules()
    return pq.read_table(Path(output), columns=columns)


def _count_output(spec: JobSpec, summary: BatchSummary) -> None:
    """Totals over every finished shard of the job, whichever run wrote it."""
    pa, _ = pyarrow_modules()
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    files = [str(p) for i in range(spec.n_shards) if shard_done(p := spec.shard_path(i))]
    summary.shards_done = len(files)
    if not files:
        return
    t = pads.dataset(files, format="parquet").to_table(columns=["image_id", "status", "label", "reason"])
    status = t.column("status")
    summary.images = pc.count_distinct(t.column("image_id")).as_py()
    summary.faces = pc.sum(pc.equal(status, "face")).as_py() or 0
    summary.no_face = pc.sum(pc.equal(status, "no_face")).as_py() or 0
    summary.failed = pc.sum(pc.equal(status, "error")).as_py() or 0
    faces = t.filter(pc.equal(status, "face"))
    summary.labels = _counts(faces.column("label"))
    failures = _counts(t.filter(pc.equal(status, "error")).column("reason"))
    for reason, n in _counts(faces.column("reason")).items():
        failures[f"face: {reason}"] = n
    summary.failures = dict(sorted(failures.items(), key=lambda kv: -kv[1]))


def _counts(column) -> dict[str, int]:
    import pyarrow.compute as pc

    pairs = pc.value_counts(pc.drop_null(column)).to_pylist()
    return {p["values"]: p["counts"] for p in sorted(pairs, key=lambda p: -p["counts"])}


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot write {path}: {exc}") from exc


# -- local processes ------------------------------------------------------------------------------

_WORKER: ShardWorker | None = None


def _init_worker(spec: JobSpec, driver: int) -> None:
    import signal

    from emolens.batch.lifeline import die_with_parent

    die_with_parent(driver)  # a driver killed with SIGKILL takes its workers with it
    # Ctrl-C reaches the whole process group: the driver alone decides, and stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    global _WORKER
    _WORKER = ShardWorker(spec)  # the models, once per process


def _run_in_worker(shard: Shard) -> ShardReport:
    assert _WORKER is not None
    return _WORKER.run(shard)


def _run_local(spec: JobSpec, shards: list[Shard], workers: int, done: OnShard) -> int:
    """Run shards on a pool of spawned processes, at most two per worker in flight; a pool whose
    worker died (killed, out of memory) is replaced and its unfinished shards run again. Returns
    how many times the pool was replaced."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    todo = list(reversed(shards))  # pop() takes them in order
    restarts = 0
    while todo:
        pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),  # no forked ONNX Runtime or Ray state
            initializer=_init_worker,
            initargs=(spec, os.getpid()),
        )
        running: dict = {}
        try:
            while todo or running:
                while todo and len(running) < 2 * workers:
                    shard = todo.pop()
                    running[pool.submit(_run_in_worker, shard)] = shard
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in finished:
                    report = fut.result()  # a worker's EmoLensError (a full disk...) stops the run
                    del running[fut]  # only now: a shard whose worker died stays to run again
                    done(report)
            pool.shutdown()
        except BrokenProcessPool:
            restarts += 1
            todo.extend(running.values())
            todo.sort(key=lambda s: -s.index)
            _stop(pool)
            if restarts > MAX_POOL_RESTARTS:
                raise EmoLensError(
                    f"worker processes died {restarts} times (out of memory? killed?); finished shards are kept: "
                    "run the same command with fewer --workers to resume"
                ) from None
        except BaseException:
            _stop(pool)
            raise
    return restarts


def _stop(pool) -> None:
    """Stop a pool now: its workers are killed, whatever they were doing (their temporary files are
    hidden and removed by the next run)."""
    for proc in list(getattr(pool, "_processes", {}).values()):  # no public API before Python 3.14
        if proc.is_alive():
            proc.kill()
    pool.shutdown(wait=True, cancel_futures=True)


# -- Ray Data -------------------------------------------------------------------------------------


class RayShardWorker:
    """A Ray Data actor: one ShardWorker (models loaded once) for every shard sent to it."""

    def __init__(self, spec: JobSpec):
        self.worker = ShardWorker(spec)

    def __call__(self, batch: dict) -> dict:
        reports = []
        for index, ids, paths in zip(batch["shard"], batch["ids"], batch["paths"], strict=True):
            shard = Shard(int(index), [str(i) for i in ids], [str(p) for p in paths])
            reports.append(self.worker.run(shard).to_json())
        return {"report": reports}


def _run_ray(spec: JobSpec, shards: list[Shard], workers: int | None, address: str | None, done: OnShard) -> int:
    """Run shards on a Ray Data actor pool, one ShardWorker per actor; returns the pool's size."""
    ray = require("ray", "ray")
    ray_data = require("ray.data", "ray", "ray[data]")

    started = False
    if not ray.is_initialized():
        try:
            ray.init(
                address=address,
                num_cpus=None if address else (workers or 1) * max(1, spec.threads),
                include_dashboard=False,
                # Ray's own notes (token authentication, ...) are not the user's business on a run that
                # works; a failure is reported by EmoLens in one line.
                logging_level=logging.ERROR,
                log_to_driver=False,
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise EmoLensError(f"cannot reach the Ray cluster at {address!r}: {exc}") from None
        started = True
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its notes on its own progress bars
    ctx = ray_data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the caller shows its own
    try:
        if workers is None:
            workers = max(1, int(ray.cluster_resources().get("CPU", 1)) // max(1, spec.threads))
        workers = min(workers, len(shards))
        items = [{"shard": s.index, "ids": s.ids, "paths": s.paths} for s in shards]
        # One block per shard (up to a bound), so results stream back as shards finish.
        ds = ray_data.from_items(items, override_num_blocks=min(len(items), 10_000))
        results = ds.map_batches(
            RayShardWorker,
            fn_constructor_kwargs={"spec": spec},
            batch_size=1,
            compute=ray_data.ActorPoolStrategy(size=workers),
            num_cpus=max(1, spec.threads),
            batch_format="numpy",
        )
        try:
            for row in results.iter_rows():
                done(ShardReport.from_json(str(row["report"])))
        except EmoLensError:
            raise
        except Exception as exc:  # Ray wraps a worker's error in its own types, as text with its traceback
            raise EmoLensError(_worker_error(exc)) from exc
        return workers
    finally:
        if started:
            ray.shutdown()


def _worker_error(exc: BaseException) -> str:
    """The message of the EmoLens error a Ray worker raised (they say what to do), else Ray's first line."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # Ray colours its messages
    ours = re.findall(r"emolens\.errors\.\w+: (.+)", text)
    if ours:
        return ours[-1]
    first = (text.strip().splitlines() or [type(exc).__name__])[0][:300]
    return f"the Ray job stopped: {first}; finished shards are kept: run the same command to resume"
