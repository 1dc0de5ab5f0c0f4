"""Batch throughput: images/s and faces/s of `emolens batch`, locally with 1 and 2 processes and on
Ray Data with 1 and 2 workers; scaling efficiency; the cost split; and, on paper, 100 million images.

Method: the input is a folder of real photos from ../shared/datasets: the 24 group and portrait
photos of photos/dlib_voc and photos/compreface under 2,000 px (0 to 25 faces each) and the first
image of --lfw LFW people (250x250, one face each, sometimes more in the background). Each
configuration analyses the whole folder through the public API (``run_batch``) into a fresh
output folder, shards of --shard-size images, model ``fast``, detector ``retinaface``, every
worker with 1 ONNX Runtime thread (so N workers use N cores). Figures:
- wall: from the start of the run to the last shard written, worker start-up included;
- images/s and faces/s: all images (faces) / wall;
- steady images/s: all images / (wall - start-up), start-up being the time until the first shard's
  work began (its report's time less its own processing time): model loading and process or actor
  start excluded;
- scaling efficiency: steady rate with 2 workers / (2 x the rate with 1); it needs an otherwise
  idle machine, so the table also gives the workers' CPU time per image (process CPU time, all
  threads, measured around each shard), which other load does not inflate: if it stays flat from
  1 to 2 workers, adding workers adds no work per image;
- cost split: time in each stage summed over workers (decode, detect, align, classify, write),
  as a share of their total.
Ray runs on a local Ray instance started for the benchmark (num_cpus=2); its start-up is not in
the wall time, the actors' start (model loading) is.

    python benchmarks/batch.py [--lfw 216] [--shard-size 16] [--md benchmarks/results/batch.md]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets"


def build_input(folder: Path, n_lfw: int) -> tuple[int, int]:
    """Copy the photos into one folder; returns (group photos, LFW portraits)."""
    from PIL import Image

    groups = 0
    for sub in ("photos/dlib_voc", "photos/compreface"):
        for f in sorted((DATA / sub).glob("*.jpg")):
            with Image.open(f) as im:
                if max(im.size) > 2000:  # the 4-7k px CompreFace photos: decode-bound, another workload
                    continue
            shutil.copyfile(f, folder / f"group_{f.name}")
            groups += 1
    people = sorted((DATA / "identity" / "lfw" / "people").iterdir())[:n_lfw]
    for p in people:
        first = sorted(p.glob("*.jpg"))[0]
        shutil.copyfile(first, folder / f"lfw_{first.name}")
    return groups, len(people)


def run(name: str, folder: Path, out: Path, options, settings) -> dict:
    from emolens.batch import run_batch

    times: list[tuple[float, float]] = []
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    summary = run_batch(
        folder, out, options, settings, on_shard=lambda r: times.append((time.perf_counter(), sum(r.seconds.values())))
    )
    wall = time.perf_counter() - t0
    first = times[0][0]
    # Start-up ends when the first shard's work began: its report's time less its own processing time.
    # (Ray returns results in bursts, so the spacing of reports does not measure its rate.)
    startup = first - t0 - times[0][1]
    steady = summary.images_run / (wall - startup)
    stage = {k: v for k, v in summary.stage_seconds.items() if k != "embed"}
    total = sum(stage.values())
    row = {
        "name": name,
        "workers": summary.workers,
        "images": summary.images_run,
        "faces": summary.faces_run,
        "wall": wall,
        "first": first - t0,
        "startup": startup,
        "images_s": summary.images_run / wall,
        "faces_s": summary.faces_run / wall,
        "steady": steady,
        "split": {k: v / total for k, v in stage.items()},
        "stage_ms_per_image": total / summary.images_run * 1e3,
        "cpu_ms_per_image": summary.cpu_seconds / summary.images_run * 1e3,
        "bytes": sum(p.stat().st_size for p in out.glob("shard-*.parquet")),
        "rows": summary.faces + summary.no_face + summary.failed,
        "load": (load_before, os.getloadavg()[0]),
    }
    print(
        f"{name}: {row['images_s']:.1f} images/s, {row['faces_s']:.1f} faces/s, steady {steady:.1f} images/s, "
        f"wall {wall:.1f} s (start-up {startup:.1f} s), load {row['load'][0]:.1f} -> {row['load'][1]:.1f}",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lfw", type=int, default=216, help="LFW portraits added to the 24 group photos")
    parser.add_argument("--shard-size", type=int, default=16)
    parser.add_argument("--md", type=Path, default=ROOT / "benchmarks" / "results" / "batch.md")
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()

    import onnxruntime
    import pyarrow

    from emolens.batch import BatchOptions
    from emolens.core.settings import Settings

    work = Path(tempfile.mkdtemp(prefix="emolens-batch-bench-"))
    os.environ["EMOLENS_HOME"] = str(work / "home")
    folder = work / "photos"
    folder.mkdir()
    n_groups, n_lfw = build_input(folder, args.lfw)
    settings = Settings(threads=1, model="fast")
    rows = []
    started = time.strftime("%H:%M", time.gmtime())
    for workers in (1, 2):
        opts = BatchOptions(workers=workers, shard_size=args.shard_size)
        rows.append(
            run(f"local, {workers} process{'es' if workers > 1 else ''}", folder, work / f"l{workers}", opts, settings)
        )
    ray_version = ""
    if not args.no_ray:
        import ray

        ray_version = ray.__version__
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            for workers in (1, 2):
                opts = BatchOptions(workers=workers, shard_size=args.shard_size, ray=True)
                rows.append(
                    run(
                        f"Ray Data, {workers} worker{'s' if workers > 1 else ''}",
                        folder,
                        work / f"r{workers}",
                        opts,
                        settings,
                    )
                )
        finally:
            ray.shutdown()
    ended = time.strftime("%H:%M", time.gmtime())
    md = render(rows, n_groups, n_lfw, args, onnxruntime.__version__, pyarrow.__version__, ray_version, started, ended)
    args.md.parent.mkdir(parents=True, exist_ok=True)
    args.md.write_text(md)
    print(md)
    shutil.rmtree(work, ignore_errors=True)


def render(rows, n_groups, n_lfw, args, ort_version, pa_version, ray_version, started, ended) -> str:
    by = {r["name"]: r for r in rows}
    out = [
        f"## Batch throughput: {rows[0]['images']} real photos, {rows[0]['faces']} faces, 2 CPU cores",
        "",
        "| configuration | images/s | faces/s | steady images/s | wall s | start-up s | scaling efficiency |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        one = by.get(r["name"].replace("2 processes", "1 process").replace("2 workers", "1 worker"))
        eff = f"{r['steady'] / (2 * one['steady']):.0%}" if r["workers"] == 2 and one else ""
        out.append(
            f"| {r['name']} | **{r['images_s']:.1f}** | {r['faces_s']:.1f} | {r['steady']:.1f} | {r['wall']:.1f} "
            f"| {r['startup']:.1f} | {eff} |"
        )
    out += [
        "",
        "Cost split (time in each stage summed over workers, share of the total) and CPU time per image:",
        "",
        "| configuration | decode | detect | align | classify | write | stage ms/image | CPU ms/image "
        "| load before → after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        s = r["split"]
        out.append(
            f"| {r['name']} | "
            + " | ".join(f"{s.get(k, 0):.1%}" for k in ("decode", "detect", "align", "classify", "write"))
            + f" | {r['stage_ms_per_image']:.1f} | {r['cpu_ms_per_image']:.1f}"
            + f" | {r['load'][0]:.1f} → {r['load'][1]:.1f} |"
        )
    base = by["local, 1 process"]
    eff2 = by["local, 2 processes"]["steady"] / (2 * base["steady"])
    cpu_s = base["cpu_ms_per_image"] / 1e3
    cpu_flat = base["cpu_ms_per_image"] / by["local, 2 processes"]["cpu_ms_per_image"]
    bytes_per_row = base["bytes"] / base["rows"]
    rows_per_image = base["rows"] / base["images"]
    n = 100_000_000
    core_hours = n * cpu_s / 3600
    eff = 0.8  # assumed: see the text
    out += [
        "",
        f"Input: {n_groups} group and portrait photos (photos/dlib_voc and the CompreFace photos under 2,000 px) and "
        f"{n_lfw} LFW portraits (250x250), shards of {args.shard_size} images; model `fast`, detector `retinaface`, "
        "1 ONNX Runtime thread per worker. "
        f"ONNX Runtime {ort_version}, pyarrow {pa_version}"
        + (f", Ray {ray_version}" if ray_version else "")
        + f"; {platform.machine()}, {os.cpu_count()} logical cores, shared with other work: the load average "
        f"before and after each configuration is in the table ({started}-{ended} UTC). 'stage ms/image' is "
        "wall-clock time inside the stages, which other processes on the machine inflate; 'CPU ms/image' is "
        "the workers' own CPU time, which they do not.",
        "",
        "### 100 million images, on paper",
        "",
        f"- **Compute.** An image of this mix costs {base['cpu_ms_per_image']:.0f} ms of CPU time in a 1-thread "
        f"worker: 100 million images are **{core_hours:,.0f} core-hours**. The CPU time per image with 2 workers "
        f"is {1 / cpu_flat:.0%} of that with 1: workers share nothing but the output folder, so the job scales "
        "with cores until storage or the driver limits it. The wall-clock scaling efficiency measured here "
        f"({eff2:.0%}) reflects the shared machine (see its load), not the job; assuming {eff:.0%} on a "
        f"cluster, that is {core_hours / eff / 24:,.0f} cores for a day, e.g. "
        f"**{math.ceil(core_hours / eff / 24 / 64):,} node(s) of 64 cores for 24 hours** or "
        f"{math.ceil(core_hours / eff / 8 / 64):,} such nodes for 8 hours. Detection is "
        f"{base['split'].get('detect', 0):.0%} of the stage time: it, not classification, sets the size of the "
        "cluster.",
        f"- **On an idle machine.** CPU time bounds the rate at {1000 / base['cpu_ms_per_image']:.0f} images/s "
        f"a core ({2000 / base['cpu_ms_per_image']:.0f} on these 2 cores): a ceiling derived from the CPU time, "
        "not a measurement; the wall-clock rates above were measured with the machine shared (see its load).",
        f"- **Output.** {bytes_per_row:,.0f} bytes a row (zstd Parquet, {rows_per_image:.1f} rows an image here): "
        f"about {n * rows_per_image * bytes_per_row / 1e9:,.0f} GB for 100 million images.",
        "- **What changes first.** (1) The plan: the driver holds the whole manifest (ids and paths, "
        "about 10 GB of Python strings for 100 million) and hands each shard's list to Ray; at that size the "
        "manifest should stay a Parquet file that workers read by row range. (2) Shard files: 256 images a "
        "shard make 390,000 files, and a resume checks each; shards of 4,096 (24,000 files) suit a "
        "cluster. (3) Reading the inputs: at ~150 KB a photo, 100 million are 15 TB, 170 MB/s for 24 hours, "
        "so the images must sit on storage every worker reaches (object store or shared file system, the "
        "same for the OUTPUT folder). (4) Detection on CPUs dominates the cost; a GPU detector would move "
        "the bottleneck to decoding.",
        "",
        "Method:" + __doc__.split("Method:")[1].split("\n\n")[0],
    ]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
