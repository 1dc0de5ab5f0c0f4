"""Video throughput: frames per second, end to end, for 640x480 clips with one and with five faces.

Method: each clip is composed from real face photos (the built-in astronaut; with the shared
datasets present, five different LFW people for the five-face clip) pasted on a still background
and moving along known paths, written as mp4v at 25 FPS, --frames frames long. Each
configuration then analyses the whole file through the public API (``VideoAnalyzer.run``):
decode + follow (optical flow) + detect + align + classify + smooth, one frame after another, in
one process pinned to --threads CPU cores, ONNX Runtime and OpenCV limited to as many threads.
FPS = frames / wall-clock seconds, after a warm-up pass of 20 frames; each
configuration runs --repeats passes and the best is reported (the one least disturbed by other
processes; every pass is listed). "with writing" adds the
time spent drawing each annotated frame and encoding it (mp4v), timed separately in the same
pass. The track count is checked against the number of faces, so speed never comes from losing
them.

    python benchmarks/video.py [--frames 300] [--threads 2] [--every 1 3 5] [--md benchmarks/results/video.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LFW = ROOT.parent / "shared" / "datasets" / "identity" / "lfw" / "people"
LFW_PEOPLE = ["Al_Gore", "Adrien_Brody", "Ai_Sugiyama", "Alan_Greenspan", "Alejandro_Toledo"]


def pin(threads: int) -> str:
    """Run on ``threads`` cores only, like the 2-core machine the goal is set for."""
    cv2.setNumThreads(threads)
    os.environ["EMOLENS_THREADS"] = str(threads)
    if hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))[:threads]
        os.sched_setaffinity(0, cores)
        return f"pinned to cores {cores}"
    return "not pinned (no sched_setaffinity here)"


def five_patches(side: int = 100) -> tuple[list[np.ndarray], str]:
    from emolens.image.io import load_image
    from emolens.video.synthetic import astronaut_patch, face_patch

    files = [next(iter(sorted((LFW / n).glob("*.jpg"))), None) if (LFW / n).is_dir() else None for n in LFW_PEOPLE]
    if all(files):
        return [face_patch(load_image(f), (50, 40, 200, 190), side) for f in files], "five LFW people"
    # Without the shared data: the astronaut, mirrored and at a few sizes (still a real face).
    sizes = [side, side - 10, side + 10, side - 5, side + 5]
    return [astronaut_patch(s, mirror=bool(i % 2)) for i, s in enumerate(sizes)], "the astronaut x5"


def compose(folder: Path, frames: int) -> list[tuple[str, Path, int]]:
    from emolens.video.synthetic import astronaut_patch, compose_clip

    one = folder / "one.mp4"
    compose_clip(one, [astronaut_patch(150)], [(30, 40)], [(440, 290)], frames, wobble=15)
    five = folder / "five.mp4"
    patches, who = five_patches()
    # Two rows that never meet: three faces drift right along the top, two drift left below.
    starts = [(10, 20), (220, 30), (430, 10), (420, 300), (150, 330)]
    ends = [(110, 60), (320, 20), (520, 50), (300, 320), (40, 300)]
    compose_clip(five, patches, starts, ends, frames, wobble=10)
    return [("1 face (the astronaut)", one, 1), (f"5 faces ({who})", five, 5)]


def measure(path: Path, faces: int, every: int, max_side: int, threads: int, repeats: int, warmup: int = 20) -> dict:
    """The best of ``repeats`` passes over the clip (the one least disturbed by other processes)."""
    from emolens.video.pipeline import VideoAnalyzer

    va = VideoAnalyzer(detect_every=every, max_side=max_side, threads=threads).warmup()
    for _ in va.run(path, max_frames=warmup):
        pass
    passes = [one_pass(va, path) for _ in range(repeats)]
    best = max(passes, key=lambda r: r["fps"])
    return {**best, "faces": faces, "method": va.describe(), "all_fps": [round(r["fps"], 1) for r in passes]}


def one_pass(va, path: Path) -> dict:
    from emolens.video.writer import AnnotatedVideoWriter

    stages: dict[str, float] = {}
    ids: set[int] = set()
    frames, writing, writing_cpu = 0, 0.0, 0.0
    with tempfile.TemporaryDirectory() as tmp, AnnotatedVideoWriter(Path(tmp) / "a.mp4", 25) as writer:
        start, start_cpu = time.perf_counter(), time.process_time()
        for res in va.run(path):
            frames += 1
            for k, v in res.timings_ms.items():
                stages[k] = stages.get(k, 0.0) + v
            ids.update(f.track_id for f in res)
            t, c = time.perf_counter(), time.process_time()
            writer.write(res)
            writing += time.perf_counter() - t
            writing_cpu += time.process_time() - c
        total, total_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return {
        "fps": frames / (total - writing),
        "fps_write": frames / total,
        # CPU seconds of this process (all its threads) per frame: what the work costs, whatever
        # else runs on the machine. ONNX Runtime's threads spin while waiting, so this overstates.
        "cpu_ms": (total_cpu - writing_cpu) / frames * 1e3,
        "ms": {k: v / frames for k, v in stages.items()},
        "tracks": len(ids),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--every", type=int, nargs="+", default=[1, 3, 5])
    ap.add_argument("--max-side", type=int, default=640, help="detector input side for video")
    ap.add_argument("--baseline", action="store_true", help="also detect every frame at the image default (1600)")
    ap.add_argument("--repeats", type=int, default=3, help="passes per configuration; the best is reported")
    ap.add_argument("--md", type=Path, help="write the table as Markdown here")
    args = ap.parse_args()
    pinned = pin(args.threads)
    load_before = os.getloadavg()

    import onnxruntime as ort

    configs = [(e, args.max_side) for e in args.every] + ([(1, 1600)] if args.baseline else [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, path, faces in compose(Path(tmp), args.frames):
            for every, side in configs:
                r = measure(path, faces, every, side, args.threads, args.repeats if side == args.max_side else 1)
                what = "every frame" if every == 1 else f"every {every} frames"
                ms = r["ms"]
                stage = " / ".join(f"{ms.get(k, 0):.1f}" for k in ("decode", "track", "detect", "classify"))
                rows.append(
                    f"| {name} | detect {what}, max side {side} | **{r['fps']:.1f}** | {r['fps_write']:.1f} "
                    f"| {stage} | {r['cpu_ms']:.1f} | {r['tracks']} of {r['faces']} | {r['all_fps']} |"
                )
                print(rows[-1], flush=True)
    load_after = os.getloadavg()
    lines = [
        f"## Video throughput: 640x480, {args.frames} frames, {args.threads} CPU cores",
        "",
        "| clip | method | FPS | FPS with writing | ms/frame: decode / follow / detect / classify "
        "| CPU ms/frame | tracks | FPS of each pass |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Stage times are wall-clock means over all frames (detection runs on 1 frame in N); CPU ms/frame is "
        "the process's CPU time (all threads) per frame, without writing. "
        f"ONNX Runtime {ort.__version__}, OpenCV "
        f"{cv2.__version__}, {args.threads} intra-op threads, {pinned}; {platform.machine()}, "
        f"{os.cpu_count()} logical cores; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after "
        "(other processes may share these cores).",
        "",
        "Method: " + " ".join(line.strip() for line in __doc__.split("Method:")[1].split("\n\n")[0].splitlines()),
        "",
    ]
    text = "\n".join(lines)
    print("\n" + text)
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(text)


if __name__ == "__main__":
    main()
