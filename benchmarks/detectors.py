"""Benchmark every registered face detector on the shared photo sets and print a Markdown table.

    .venv/bin/python benchmarks/detectors.py [--photos DIR] [--repeats 5] [--detectors retinaface,haar]

Measures, per backend, with its default options (score_threshold 0.6, min_face_size 20) except
where the table says otherwise:

- recall on ``dlib_voc/boxes.csv``: detections and ground-truth boxes are matched one-to-one,
  greedily by decreasing IoU; a ground-truth face counts as found when its match has IoU >= 0.4.
  The boxes omit some small background faces, so extra detections there are not counted.
- on ``compreface/faces.csv``: the share of images whose detected count equals ``n_faces``, and
  the share of true faces whose nose point lies inside at least one detected box.
- false detections: all detections on the face-free ``compreface/017_0.jpg`` and ``dlib_voc/dogs.jpg``.
- latency: median wall time of ``detect`` over N runs, after one warm-up run, on
  ``compreface/000_5.jpg`` (5 faces) resized to 640x480.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emolens import load_image  # the package's export: the same before and after a move of modules
from emolens.detect import Face, create_detector, list_detectors

REPO = Path(__file__).resolve().parents[1]
IOU_MATCH = 0.4
FACE_FREE = ("compreface/017_0.jpg", "dlib_voc/dogs.jpg")
LATENCY_IMAGE = "compreface/000_5.jpg"
# dlib-cnn runs at several seconds per VGA image on CPU (dlib-bin has no BLAS): benchmark it on a
# smaller working copy so the whole run stays within a few minutes.
SLOW_MAX_SIDE = {"dlib-cnn": 800}
SLOW_REPEATS = {"dlib-cnn": 2}


@dataclass
class Result:
    name: str
    landmarks: bool
    max_side: int
    found: int = 0
    gt_boxes: int = 0
    count_ok: int = 0
    count_images: int = 0
    noses_in: int = 0
    noses: int = 0
    false_detections: dict[str, int] | None = None
    latency_ms: float = float("nan")
    repeats: int = 0
    seconds: float = 0.0


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4), both x1, y1, x2, y2."""
    a, b = a[:, None, :], b[None, :, :]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-9)


def matched_count(truth: np.ndarray, faces: list[Face], threshold: float = IOU_MATCH) -> int:
    """Ground-truth boxes matched one-to-one to detections, greedily by decreasing IoU."""
    if len(truth) == 0 or not faces:
        return 0
    iou = iou_matrix(truth, np.stack([f.box for f in faces]))
    found = 0
    while iou.size and iou.max() >= threshold:
        i, j = np.unravel_index(np.argmax(iou), iou.shape)
        found += 1
        iou[i, :] = -1
        iou[:, j] = -1
    return found


def read_voc(photos: Path) -> dict[str, np.ndarray]:
    boxes: dict[str, list] = {}
    with open(photos / "dlib_voc" / "boxes.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get("ignore", "0") == "1":
                continue
            x, y, w, h = (float(row[k]) for k in ("left", "top", "width", "height"))
            boxes.setdefault(row["image"], []).append([x, y, x + w, y + h])
    return {k: np.asarray(v, dtype=np.float32) for k, v in boxes.items()}


def read_compreface(photos: Path) -> dict[str, np.ndarray]:
    noses = {}
    with open(photos / "compreface" / "faces.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            pts = [tuple(map(float, p.split(","))) for p in row["nose_points_xy"].split(";") if p]
            assert len(pts) == int(row["n_faces"]), row
            noses[row["image"]] = np.asarray(pts, dtype=np.float32).reshape(-1, 2)
    return noses


def noses_inside(noses: np.ndarray, faces: list[Face]) -> int:
    if not faces or len(noses) == 0:
        return 0
    boxes = np.stack([f.box for f in faces])
    x, y = noses[:, None, 0], noses[:, None, 1]
    inside = (x >= boxes[:, 0]) & (x <= boxes[:, 2]) & (y >= boxes[:, 1]) & (y <= boxes[:, 3])
    return int(inside.any(axis=1).sum())


def bench(name: str, images: dict[str, np.ndarray], voc, noses, repeats: int) -> Result:
    max_side = SLOW_MAX_SIDE.get(name, 1600)
    det = create_detector(name, max_side=max_side)
    res = Result(name, det.has_landmarks, max_side)
    start = time.perf_counter()
    for image, truth in voc.items():
        res.found += matched_count(truth, det(images[f"dlib_voc/{image}"]))
        res.gt_boxes += len(truth)
    for image, pts in noses.items():
        faces = det(images[f"compreface/{image}"])
        res.count_ok += len(faces) == len(pts)
        res.count_images += 1
        res.noses_in += noses_inside(pts, faces)
        res.noses += len(pts)
    res.false_detections = {key: len(det(images[key])) for key in FACE_FREE}

    import cv2

    frame = cv2.resize(images[LATENCY_IMAGE], (640, 480), interpolation=cv2.INTER_AREA)
    det(frame)  # warm-up: loads the model, caches sizes
    res.repeats = SLOW_REPEATS.get(name, repeats)
    times = []
    for _ in range(res.repeats):
        t = time.perf_counter()
        det(frame)
        times.append((time.perf_counter() - t) * 1000)
    res.latency_ms = statistics.median(times)
    res.seconds = time.perf_counter() - start
    return res


def environment() -> str:
    import cv2
    import onnxruntime

    from emolens.workspace import Workspace

    threads = Workspace.default().settings.threads
    ort_threads = f"{threads}" if threads > 0 else f"ONNX Runtime default (all {os.cpu_count()} cores)"
    lines = [
        f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, "
        f"load average at start {os.getloadavg()[0]:.1f}",
        f"Python {platform.python_version()}, onnxruntime {onnxruntime.__version__} (intra-op threads: "
        f"{ort_threads}), OpenCV {cv2.__version__} ({cv2.getNumThreads()} threads)",
    ]
    try:
        import dlib

        lines.append(
            f"dlib {dlib.__version__} (one thread; BLAS: {dlib.DLIB_USE_BLAS}, AVX: {dlib.USE_AVX_INSTRUCTIONS})"
        )
    except ImportError:
        lines.append("dlib not installed: the dlib backends fail")
    return "\n".join(f"- {line}" for line in lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "datasets" / "photos")
    ap.add_argument("--repeats", type=int, default=5, help="latency runs per backend (dlib-cnn: 2)")
    ap.add_argument("--detectors", default="", help="comma-separated names (default: all registered)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "detectors.md")
    ap.add_argument("--no-save", action="store_true", help="print only")
    args = ap.parse_args(argv)

    if not (args.photos / "compreface" / "faces.csv").is_file():
        print(f"photo sets not found under {args.photos}; pass --photos DIR", file=sys.stderr)
        return 2
    names = [n for n in args.detectors.split(",") if n] or list_detectors()
    voc, noses = read_voc(args.photos), read_compreface(args.photos)
    keys = {f"dlib_voc/{k}" for k in voc} | {f"compreface/{k}" for k in noses} | set(FACE_FREE)
    images = {k: load_image(args.photos / k) for k in sorted(keys)}

    results = []
    for name in names:
        print(f"benchmarking {name} ...", file=sys.stderr, flush=True)
        results.append(bench(name, images, voc, noses, args.repeats))

    lines = [
        "## Face detectors",
        "",
        f"Photos: `{args.photos.name}/` — dlib_voc ({len(voc)} images, {results[0].gt_boxes} boxed faces), "
        f"compreface ({len(noses)} images, {results[0].noses} faces, 6 of them 3000-7360 px wide); "
        "default options (score_threshold 0.6, min_face_size 20).",
        "",
        f"- **VOC recall**: boxed faces matched one-to-one (greedy by IoU) to a detection with IoU >= {IOU_MATCH}.",
        "- **count exact**: compreface images whose number of detections equals the true count.",
        "- **noses in box**: compreface faces whose annotated nose point lies inside a detected box.",
        f"- **false det.**: detections on the two face-free photos ({', '.join(FACE_FREE)}).",
        f"- **latency**: median `detect` time over N runs after a warm-up, `{LATENCY_IMAGE}` resized to 640x480.",
        "- **max side**: images are downscaled to this longest side before detection.",
        "",
        "| detector | landmarks | VOC recall | count exact | noses in box | false det. | latency 640x480 "
        "| max side | run time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        fp = sum(r.false_detections.values())
        where = ", ".join(f"{Path(k).name}: {n}" for k, n in r.false_detections.items() if n)
        false_det = f"{fp} ({where})" if where else f"{fp}"
        lines.append(
            f"| {r.name} | {'5 points' if r.landmarks else 'no'} | {r.found}/{r.gt_boxes} ({r.found / r.gt_boxes:.0%}) "
            f"| {r.count_ok}/{r.count_images} | {r.noses_in}/{r.noses} ({r.noses_in / r.noses:.0%}) "
            f"| {false_det} | {r.latency_ms:.0f} ms (N={r.repeats}) | {r.max_side} | {r.seconds:.0f} s |"
        )
    lines += ["", environment(), ""]
    text = "\n".join(lines)
    print(text)
    if not args.no_save:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
