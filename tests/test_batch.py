"""`emolens batch`: real photos into a Parquet dataset, locally and on a local Ray cluster; runs
killed (the whole process, one worker process, one Ray worker) and resumed without a row lost or
doubled; bad files as error rows; the rows checked against `emolens analyze` on the same files."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

import emolens  # noqa: E402
from emolens.batch import BatchJob, BatchOptions, read_output, run_batch  # noqa: E402
from emolens.core.errors import EmoLensError  # noqa: E402

SRC = Path(emolens.__file__).resolve().parents[1]  # the emolens under test, for subprocesses and Ray workers
# Real photos with 0 to 7 faces, small enough to keep the module fast; plus three bad files.
PHOTOS = {
    "dlib_voc": ["2008_001009.jpg", "2008_001322.jpg", "dogs.jpg"],
    "compreface": ["009_C.jpg", "010_2.jpg", "017_0.jpg"],
}
N_IMAGES = 9
BAD = {"notes.jpg": "not an image, or a format EmoLens cannot read", "empty.jpg": "empty file"}
BAD_TRUNCATED = "cut.jpg"


@pytest.fixture(scope="module")
def photos(shared_datasets, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("batch") / "photos"
    for sub, names in PHOTOS.items():
        (folder / sub).mkdir(parents=True)
        for name in names:
            shutil.copyfile(shared_datasets / "photos" / sub / name, folder / sub / name)
    (folder / "bad").mkdir()
    (folder / "bad" / "notes.jpg").write_text("a shopping list, not a photo\n")
    (folder / "bad" / "empty.jpg").write_bytes(b"")
    whole = (folder / "dlib_voc" / "dogs.jpg").read_bytes()
    (folder / "bad" / BAD_TRUNCATED).write_bytes(whole[: len(whole) // 3])
    return folder


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """One EMOLENS_HOME for the module (model-loading caches stay warm across its tests)."""
    from emolens.models import clear_model_cache
    from emolens.workspace import get_settings

    path = tmp_path_factory.mktemp("home")
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("EMOLENS_")}
    os.environ["EMOLENS_HOME"] = str(path)
    get_settings.cache_clear()
    clear_model_cache()
    yield path
    os.environ.pop("EMOLENS_HOME", None)
    os.environ.update(saved)
    get_settings.cache_clear()
    clear_model_cache()


@pytest.fixture(scope="module")
def analyzed(photos, home, tmp_path_factory) -> dict[str, dict]:
    """`emolens analyze --json` on the same folder, by image id (path relative to the folder)."""
    target = tmp_path_factory.mktemp("analyze") / "results.json"
    proc = run_cli("analyze", photos, "--json", target, "-q", home=home)
    assert proc.returncode == 1, proc.stderr  # 1: some files failed, as they should
    return {str(Path(r["source"]).relative_to(photos).as_posix()): r for r in json.loads(target.read_text())}


@pytest.fixture(scope="module")
def reference(photos, home, tmp_path_factory) -> Path:
    """A whole local run in one process: the rows the other runs must reproduce exactly."""
    out = tmp_path_factory.mktemp("ref") / "out"
    summary = run_batch(photos, out, BatchOptions(workers=1, shard_size=4))
    assert summary.complete and summary.shards_run == summary.shards == 3
    return out


def run_cli(*args, home: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(_cli(*args), env=_env(home), capture_output=True, text=True, timeout=300, **kwargs)


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "emolens.cli", *map(str, args)]


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMOLENS_")}
    env.update(EMOLENS_HOME=str(home), PYTHONPATH=str(SRC))
    return env


def rows_of(out: Path):
    """The output read back with pyarrow, as a pandas frame in a stable order."""
    df = pq.read_table(out).to_pandas()
    return df.sort_values(["image_id", "index"], na_position="first").reset_index(drop=True)


def assert_same_rows(out: Path, reference: Path) -> None:
    """Every row of the reference once, no other row; equal up to ONNX Runtime's float noise."""
    a, b = rows_of(out), rows_of(reference)
    keys = list(zip(a.image_id, a["index"].fillna(-1), strict=True))
    assert len(keys) == len(set(keys)), "a row is duplicated"
    assert keys == list(zip(b.image_id, b["index"].fillna(-1), strict=True)), "rows differ from the reference"
    assert (a.status == b.status).all() and (a.label.fillna("") == b.label.fillna("")).all()
    assert (a.reason.fillna("") == b.reason.fillna("")).all()
    probs = [c for c in a.columns if c.startswith("p_")]
    np.testing.assert_allclose(a[probs].fillna(0).to_numpy(), b[probs].fillna(0).to_numpy(), atol=1e-4)
    np.testing.assert_allclose(a[["x1", "y1", "x2", "y2"]].fillna(0), b[["x1", "y1", "x2", "y2"]].fillna(0), atol=0.05)


def assert_matches_analyze(out: Path, analyzed: dict[str, dict]) -> None:
    """Each image accounted for once: its faces as `emolens analyze` finds and reads them, or its failure."""
    df = rows_of(out)
    assert set(df.image_id) == set(analyzed)
    for image_id, rec in analyzed.items():
        rows = df[df.image_id == image_id]
        if "error" in rec:
            assert list(rows.status) == ["error"], image_id
            assert rows.error.iloc[0] == rec["error"]
            continue
        if not rec["faces"]:
            assert list(rows.status) == ["no_face"], image_id
            assert rows.width.iloc[0] == rec["width"] and rows.height.iloc[0] == rec["height"]
            continue
        assert list(rows.status) == ["face"] * len(rec["faces"]), image_id
        assert list(rows["index"]) == list(range(len(rec["faces"])))
        for (_, row), face in zip(rows.iterrows(), rec["faces"], strict=True):
            np.testing.assert_allclose([row.x1, row.y1, row.x2, row.y2], face["box"], atol=0.06)
            np.testing.assert_allclose(np.reshape(row.landmarks, (5, 2)), face["landmarks"], atol=0.06)
            assert row.label == face["label"], image_id
            assert row.confidence == pytest.approx(face["confidence"], abs=1e-4)
            for label, p in face["probs"].items():
                assert row[f"p_{label}"] == pytest.approx(p, abs=1e-4)


# -- local ----------------------------------------------------------------------------------------


def test_local_run_matches_analyze_and_bad_files_are_rows(reference, analyzed, photos):
    df = rows_of(reference)
    assert_matches_analyze(reference, analyzed)
    failed = df[df.status == "error"].set_index("image_id")
    assert set(failed.index) == {f"bad/{n}" for n in [*BAD, BAD_TRUNCATED]}
    for name, reason in BAD.items():
        assert failed.loc[f"bad/{name}", "reason"] == reason
    assert failed.loc[f"bad/{BAD_TRUNCATED}", "reason"] == "corrupt or truncated image"
    # dogs.jpg: RetinaFace's 0.8x first pass misses its dog faces (found at native size).
    assert list(df[df.status == "no_face"].image_id) == ["compreface/017_0.jpg", "dlib_voc/dogs.jpg"]
    faces = df[df.status == "face"]
    assert len(faces) >= 8 and faces.model.eq("fast").all() and faces.detector.eq("retinaface").all()
    assert (faces[[c for c in df.columns if c.startswith("p_")]].sum(axis=1) - 1).abs().max() < 1e-4
    assert (faces[["decode_ms", "detect_ms", "align_ms", "classify_ms"]] > 0).all().all()
    # One shard per file, written whole: no temporary file is left beside them.
    assert sorted(p.name for p in reference.iterdir()) == [
        "_emolens_batch",
        *[f"shard-{i:05d}.parquet" for i in range(3)],
    ]


def test_finished_job_run_again_changes_nothing(reference, photos, home):
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in reference.rglob("*") if p.is_file()}
    summary = run_batch(photos, reference, BatchOptions(workers=2))
    assert summary.shards_run == 0 and summary.shards_skipped == 3 and summary.complete
    assert summary.images == N_IMAGES and summary.failed == 3 and summary.no_face == 2
    assert sum(summary.labels.values()) == summary.faces
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in reference.rglob("*") if p.is_file()}
    assert after == before


def test_a_different_job_in_the_same_output_is_refused(reference, photos, home):
    proc = run_cli("batch", photos, reference, "--max-faces", "1", home=home)
    assert proc.returncode == 2
    assert "holds a batch run of a different job (max_faces: 100 then, 1 now)" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    with pytest.raises(EmoLensError, match="not empty and holds no EmoLens batch run"):
        BatchJob(photos, photos)  # a folder of other files is never written into


def _stop_after(cmd: list[str], out: Path, shards: int, sig: int, home: Path) -> tuple[int, str, int]:
    """Start ``cmd``, send ``sig`` to its process group once ``shards`` shard files exist; returns
    (exit code, stderr, shard files then)."""
    # SIGINT back to its default in the child: an in-process library of an earlier test (Ray) may have set
    # it to "ignore" here, which a child inherits, and Python then never turns Ctrl-C into KeyboardInterrupt
    proc = subprocess.Popen(
        cmd,
        env=_env(home),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 240
    while len(list(out.glob("shard-*.parquet"))) < shards and proc.poll() is None:
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.02)
    os.killpg(proc.pid, sig)  # as a terminal's Ctrl-C does: the driver and its workers
    _, stderr = proc.communicate(timeout=120)
    return proc.returncode, stderr, len(list(out.glob("shard-*.parquet")))


def test_ctrl_c_then_kill_9_at_random_shards_then_resume(reference, photos, home, tmp_path):
    """A run with 2 worker processes stopped by Ctrl-C, its resumption killed with SIGKILL (driver
    and all), each after a random number of shards; the same command then finishes the job with
    exactly the reference's rows."""
    out = tmp_path / "out"
    args = ("batch", photos, out, "--shard-size", "1", "-q")
    rng = random.Random()
    code, stderr, first = _stop_after(_cli(*args, "--workers", "2"), out, rng.randint(1, 3), signal.SIGINT, home)
    assert code == 130, stderr
    assert "shards of this run finished and are kept; run the same command to resume" in stderr
    assert "Traceback" not in stderr and 1 <= first < N_IMAGES - 2
    target = min(first + rng.randint(1, 2), N_IMAGES - 2)
    code, _, second = _stop_after(_cli(*args, "--workers", "1"), out, target, signal.SIGKILL, home)
    assert code == -signal.SIGKILL and target <= second < N_IMAGES, f"killed after {second} shards, not mid-run"
    resumed = run_cli(*args, "--json", "-", home=home)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["shards_skipped"] == second and summary["shards_run"] == N_IMAGES - second
    assert not list(out.glob(".*.tmp"))
    assert_same_rows(out, reference)


def test_a_local_worker_process_killed_mid_run(reference, photos, home, tmp_path):
    """A worker process dies (as under the OOM killer): its pool is replaced, its shards rerun."""
    killed: list[int] = []

    def kill_first_worker(report):
        if not killed:
            killed.append(report.pid)
            os.kill(report.pid, signal.SIGKILL)

    out = tmp_path / "out"
    summary = run_batch(photos, out, BatchOptions(workers=2, shard_size=2), on_shard=kill_first_worker)
    assert killed and killed[0] != os.getpid()
    assert summary.worker_restarts == 1 and summary.complete and summary.images == N_IMAGES
    assert_same_rows(out, reference)


def test_manifest_with_ids_and_missing_files(photos, home, tmp_path):
    manifest = tmp_path / "list.csv"
    manifest.write_text(
        "id,path\n"
        f"kid,{photos / 'compreface' / '009_C.jpg'}\n"
        "gone,photos/missing.jpg\n"  # relative: from the manifest's folder
        "blank,\n"
    )
    summary = run_batch(manifest, tmp_path / "out", BatchOptions(workers=1))
    df = rows_of(tmp_path / "out").set_index("image_id")
    assert summary.images == 3 and summary.failed == 2 and summary.faces == 1
    assert df.loc["kid", "status"] == "face"
    assert df.loc["gone", "reason"] == "no such file"
    assert df.loc["gone", "source"] == str(tmp_path / "photos" / "missing.jpg")
    assert df.loc["blank", "reason"] == "no path given for this image"
    (tmp_path / "nopath.csv").write_text("file\na.jpg\n")
    with pytest.raises(EmoLensError, match="has no 'path' column"):
        BatchJob(tmp_path / "nopath.csv", tmp_path / "out2")


def test_embeddings_when_the_identity_extra_is_installed(photos, home, tmp_path):
    pytest.importorskip("dlib")
    summary = run_batch(photos / "compreface" / "010_2.jpg", tmp_path / "out", BatchOptions(embeddings=True))
    df = rows_of(tmp_path / "out")
    assert summary.faces == len(df) == 2
    vectors = np.stack(df.embedding.to_list())
    assert vectors.shape == (2, 128) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    assert df.embedder.eq("dlib-resnet-v1").all() and (df.embed_ms > 0).all()
    # Embeddings are biometric data: the output folder it made and every shard are the owner's only.
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o700
    shards = list((tmp_path / "out").glob("shard-*.parquet"))
    assert shards and all(p.stat().st_mode & 0o777 == 0o600 for p in shards)


# -- Ray ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster(home):
    """One local Ray cluster (2 CPUs) for the module; its workers import the emolens under test."""
    ray = pytest.importorskip("ray")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(SRC), "EMOLENS_HOME": str(home)}},
    )
    yield ray
    ray.shutdown()


def test_ray_run_matches_analyze(ray_cluster, reference, analyzed, photos, tmp_path):
    out = tmp_path / "out"
    summary = run_batch(photos, out, BatchOptions(ray=True, workers=2, shard_size=3))
    assert summary.backend == "ray" and summary.complete and summary.shards_run == 3
    assert summary.images == N_IMAGES and summary.failed == 3
    assert len({p.name for p in out.glob("shard-*.parquet")}) == 3
    assert pq.read_table(out).num_rows == read_output(reference).num_rows
    assert_matches_analyze(out, analyzed)
    assert_same_rows(out, reference)


def test_a_ray_worker_killed_mid_run(ray_cluster, reference, photos, tmp_path):
    """SIGKILL one Ray actor while it works: Ray restarts it and retries its shards; each shard
    file is written whole once more, so no row is lost or doubled."""
    killed: list[int] = []
    reported: list[int] = []

    def kill_first_worker(report):
        reported.append(report.index)
        if not killed:
            killed.append(report.pid)
            os.kill(report.pid, signal.SIGKILL)

    out = tmp_path / "out"
    summary = run_batch(photos, out, BatchOptions(ray=True, workers=2, shard_size=1), on_shard=kill_first_worker)
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0], 0)  # it really died
    assert sorted(set(reported)) == list(range(N_IMAGES))
    assert summary.complete and summary.images == N_IMAGES
    assert_same_rows(out, reference)


def test_inputs_folder_glob_and_parquet_manifest(photos, tmp_path):
    from emolens.batch import read_input

    folder = read_input(photos)
    assert len(folder) == N_IMAGES and "compreface/009_C.jpg" in folder.ids
    assert all(Path(p).is_absolute() for p in folder.paths)
    globbed = read_input(f"{photos}/*/0*.jpg")
    assert globbed.ids == ["compreface/009_C.jpg", "compreface/010_2.jpg", "compreface/017_0.jpg"]
    table = pa.table({"path": [str(photos / "compreface" / "010_2.jpg"), "dogs.jpg"], "id": [7, 8]})
    pq.write_table(table, tmp_path / "list.parquet")
    manifest = read_input(tmp_path / "list.parquet")
    assert manifest.ids == ["7", "8"] and manifest.paths == [
        str(photos / "compreface" / "010_2.jpg"),
        str(tmp_path / "dogs.jpg"),
    ]
    assert manifest.sha256 != read_input(photos / "compreface" / "010_2.jpg").sha256
    (tmp_path / "twice.csv").write_text("id,path\na,x.jpg\na,y.jpg\n")
    with pytest.raises(EmoLensError, match="ids occur more than once"):
        read_input(tmp_path / "twice.csv")


def test_a_worker_without_the_model_file_uses_the_bytes_sent_with_the_job(tmp_path):
    """On a cluster, a worker's machine may lack the driver's model file: the job carries its bytes."""
    from dataclasses import replace

    from emolens.batch.shard import _model_file
    from emolens.batch.spec import JobSpec, file_sha256
    from emolens.core.errors import ModelError
    from emolens.workspace import Workspace

    fast = Workspace.default().models.path("fast")
    spec = JobSpec(
        output=str(tmp_path), input_sha256="", n_images=1, shard_size=1, model="fast",
        model_path=str(fast), model_sha256=file_sha256(fast), labels=[], detector="retinaface",
        min_face_size=20, detection_threshold=0.6, max_faces=100, max_side=1600, max_pixels=10**8, embedder=None,
    )  # fmt: skip
    assert _model_file(spec) == str(fast)  # the same file here: used in place
    elsewhere = replace(spec, model_path=str(tmp_path / "not-on-this-machine.onnx"))
    with pytest.raises(ModelError, match="missing or different on this worker"):
        _model_file(elsewhere)
    copy = _model_file(replace(elsewhere, model_bytes=fast.read_bytes()))
    assert copy != str(fast) and file_sha256(copy) == spec.model_sha256


def _children(pid: int) -> dict[int, str]:
    """The live child processes of ``pid`` (from /proc), with their command lines."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue  # it ended while we looked
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
def test_workers_die_with_a_driver_killed_with_sigkill(photos, home, tmp_path):
    """kill -9 of `emolens batch` alone (not its process group): its worker processes, which hold
    the models, end within seconds instead of running on unowned."""
    out = tmp_path / "out"
    cmd = _cli("batch", photos, out, "--workers", "2", "--shard-size", "1", "-q")
    proc = subprocess.Popen(cmd, env=_env(home), stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        workers: dict[int, str] = {}
        while len(workers) < 2 or not list(out.glob("shard-*.parquet")):
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended or made no progress"
            workers = {p: c for p, c in _children(proc.pid).items() if "spawn_main" in c}
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in workers if _alive(p)], "workers outlived their driver"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the session, on failure


def test_cli_ray_run_is_quiet_and_says_why_it_starts_slowly(tmp_path):
    """A successful `batch --ray`: no Ray warning or core_worker line on the terminal (they go to
    OUTPUT/_emolens_batch/ray.log), and a line saying the local Ray instance's start-up comes first."""
    pytest.importorskip("ray")
    photos = tmp_path / "photos"
    photos.mkdir()
    for k in range(3):
        shutil.copy(SRC / "emolens" / "assets" / "examples" / "astronaut.jpg", photos / f"{k}.jpg")
    proc = run_cli("batch", photos, tmp_path / "out", "--ray", "--workers", "1", "-q", home=tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    assert "starting a local Ray instance first" in proc.stderr
    ours = ("starting a local Ray instance", "3 images in 1 shard")
    noise = [line for line in proc.stderr.splitlines() if ("WARNING" in line or ".cc:" in line or "Ray" in line)
             and not line.startswith(ours)]  # fmt: skip
    assert noise == [], noise
    assert (tmp_path / "out" / "_emolens_batch" / "ray.log").is_file()  # where they went
    assert "3 images: 3 faces" in proc.stderr
