"""End-to-end speed of the analyzer, before and after a change, side by side in one run.

    python benchmarks/end_to_end.py [--before REV] [--rounds 12] [--calls 5] [--threads 2]
                                    [--mediapipe DIR] [--md benchmarks/results/end_to_end.md]

Method: the code of ``--before`` (a git revision; its ``src/`` is extracted with ``git archive``
into a temporary folder) and the working tree's code each run in a worker process of their own,
with ONNX Runtime and OpenCV limited to ``--threads`` threads and the shipped ``fast`` model. The
parent sends both workers the same requests in turn, alternating which goes first, for
``--rounds`` rounds of ``--calls`` timed calls per case (after 3 untimed warm-up calls), so that
both see the same machine load; each figure is the median of all its calls. Only one worker
computes at a time. Cases (numpy RGB in, so decoding apart, as in the goals):

- one face: the built-in astronaut photo resized to 640x480;
- 8 faces: ``photos/compreface/016_8.jpg`` (800x533);
- crowd: ``photos/dlib_voc/bald_guys.jpg`` resized to 1024x797 (24 faces, 48-131 px);
- folder: throughput of ``Analyzer.stream`` over 40 JPEG portraits at 640x480 (LFW photos
  enlarged; the astronaut when the shared data is absent), decoding included.

The time split runs the steps one by one (detect, then align every face, then classify all crops
in one batch). Recall: the checks of ``benchmarks/detectors.py`` (RetinaFace, default options),
plus the VOC photos shrunk so that their boxed faces measure about 20 px and 30 px (small faces,
``min_face_size`` 10 and 20: the caller asks for them). Video: ``benchmarks/video.py``'s one-face and five-face clips,
150 frames, detection on every frame, once per round in each worker, best pass reported.
Physical bound: the detector's multiply-adds (x2 = FLOPs) at the input sizes it used, counted from
the ONNX graph's Conv/Gemm shapes, divided by this CPU's float32 rate measured with a 1024x1024
matrix product (numpy/OpenBLAS) on the same threads: the time the detector would need if every
operation ran at matrix-product speed (counting needs ``onnx``, in the ``export`` extra).
With ``--mediapipe DIR`` (a folder where
``pip install --no-deps --target DIR mediapipe==0.10.14`` put mediapipe, which cannot live in the
project's environment), BlazeFace short and full range are measured on the same speed and recall
checks and their eye/nose points compared with RetinaFace's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "datasets" / "photos"
LFW = ROOT.parent / "shared" / "datasets" / "identity" / "lfw" / "people"
DEFAULT_BEFORE = "ca9394e"  # main before issue 19's speed work
CASES = ("one", "eight", "crowd")
CASE_NAMES = {
    "one": "640x480, one face (astronaut)",
    "eight": "800x533, 8 faces (016_8.jpg)",
    "crowd": "1024x797, crowd (bald_guys.jpg)",
}
GOALS = {"one": "≤ 20 ms", "eight": "≤ 35 ms", "crowd": "≤ 50 ms", "folder": "≥ 50 images/s"}


# --- worker --------------------------------------------------------------------------------------
class Worker:
    """Runs in a process of its own, on one version of the code; answers one JSON request per line."""

    def __init__(self, threads: int, folder: Path, clips: Path):
        import cv2

        cv2.setNumThreads(threads)
        from emolens import Analyzer, load_image

        self.cv2, self.load_image = cv2, load_image
        self.analyzer = Analyzer(model="fast", detector="retinaface", threads=threads)
        self.threads = threads
        self.folder, self.clips = folder, clips
        self.images = {"one": cv2.resize(load_image(ROOT / "src/emolens/assets/examples/astronaut.jpg"), (640, 480))}
        if PHOTOS.is_dir():
            self.images["eight"] = load_image(PHOTOS / "compreface" / "016_8.jpg")
            crowd = load_image(PHOTOS / "dlib_voc" / "bald_guys.jpg")
            self.images["crowd"] = cv2.resize(crowd, (1024, 797), interpolation=cv2.INTER_AREA)
        for img in self.images.values():
            self.analyzer(img)

    def handle(self, req: dict) -> dict:
        return getattr(self, "do_" + req["op"])(**req.get("args", {}))

    def do_case(self, case: str, calls: int) -> dict:
        import importlib

        try:
            align_face = importlib.import_module("emolens.image.align").align_face
        except ImportError:  # the code before the layers' folders had it at the top
            align_face = importlib.import_module("emolens" + ".align").align_face

        image, an = self.images[case], self.analyzer
        e2e, det, ali, cls = [], [], [], []
        model = an.model
        spec = model.meta.input
        for _ in range(calls):
            t = time.perf_counter()
            res = an(image)
            e2e.append((time.perf_counter() - t) * 1e3)
        for _ in range(calls):
            t0 = time.perf_counter()
            faces = an.detector(image)
            t1 = time.perf_counter()
            crops = [align_face(image, f.box, f.landmarks, spec.size, spec.channels) for f in faces]
            t2 = time.perf_counter()
            if crops:
                model.predict(np.stack(crops))
            t3 = time.perf_counter()
            det.append((t1 - t0) * 1e3)
            ali.append((t2 - t1) * 1e3)
            cls.append((t3 - t2) * 1e3)
        return {"e2e": e2e, "detect": det, "align": ali, "classify": cls, "faces": len(res)}

    def _passes(self, image: np.ndarray) -> list:
        """The network input sizes (h, w) of the last detection of ``image``."""
        det = self.analyzer.detector
        if hasattr(det, "last_passes"):
            return [list(p) for p in det.last_passes]
        # The code before issue 19 ran one pass, at the scale its _upscale chose, padded to 32.
        h, w = image.shape[:2]
        f = det._upscale(image)
        return [[-(-round(h * f) // 32) * 32, -(-round(w * f) // 32) * 32]]

    def do_warm(self, case: str) -> dict:
        for _ in range(3):
            self.analyzer(self.images[case])
        return {}

    def do_folder(self, repeats: int) -> dict:
        files = sorted(self.folder.glob("*.jpg"))
        rates = []
        for _ in range(repeats):
            t = time.perf_counter()
            n = sum(1 for r in self.analyzer.stream(files) if not isinstance(r, Exception))
            rates.append(n / (time.perf_counter() - t))
        return {"rates": rates}

    def do_recall(self) -> dict:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        import detectors as d

        images = {}
        for sub in ("dlib_voc", "compreface"):
            for p in sorted((PHOTOS / sub).glob("*.jpg")):
                images[f"{sub}/{p.name}"] = self.load_image(p)
        voc, noses = d.read_voc(PHOTOS), d.read_compreface(PHOTOS)
        r = d.bench("retinaface", images, voc, noses, repeats=1)
        out = {
            "voc": f"{r.found}/{r.gt_boxes}",
            "count": f"{r.count_ok}/{r.count_images}",
            "noses": f"{r.noses_in}/{r.noses}",
            "false": sum(r.false_detections.values()),
        }
        from emolens.detect import create_detector

        for target, min_face_size in ((20, 10), (30, 20)):  # the caller asks for faces this small
            det = create_detector("retinaface", threads=self.threads, min_face_size=min_face_size)
            found = total = 0
            for name, truth in voc.items():
                image = images[f"dlib_voc/{name}"]
                sizes = np.minimum(truth[:, 2] - truth[:, 0], truth[:, 3] - truth[:, 1])
                s = target / float(np.median(sizes))
                small = self.cv2.resize(image, None, fx=s, fy=s, interpolation=self.cv2.INTER_AREA)
                found += d.matched_count(truth * s, det(small))
                total += len(truth)
            out[f"voc{target}"] = f"{found}/{total}"
        return out

    def do_video(self) -> dict:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        import video

        out = {}
        for name, faces in (("one.mp4", 1), ("five.mp4", 5)):
            r = video.measure(self.clips / name, faces, 1, 640, self.threads, repeats=1, warmup=10)
            out[name] = {"fps": r["fps"], "tracks": r["tracks"]}
        return out

    def do_flops(self) -> dict:
        """The detector's FLOPs at each input size seen in the cases, and this CPU's matmul rate."""
        import onnx
        from onnx import shape_inference
        from retinaface.weights import WEIGHTS

        sizes = {}
        for case in self.images:
            self.analyzer.detector(self.images[case])
            sizes[case] = self._passes(self.images[case])
        flops = {}
        base = onnx.load_from_string(WEIGHTS) if isinstance(WEIGHTS, bytes) else onnx.load(WEIGHTS)
        for passes in sizes.values():
            for h, w in passes:
                if (h, w) not in flops:
                    flops[(h, w)] = _conv_flops(base, shape_inference, h, w)
        a = np.random.rand(1024, 1024).astype(np.float32)
        times = []
        for _ in range(15):
            t = time.perf_counter()
            a @ a
            times.append(time.perf_counter() - t)
        rate = 2 * 1024**3 / statistics.median(times)
        return {
            "sizes": sizes,
            "flops": {f"{h}x{w}": v for (h, w), v in flops.items()},
            "gflops_rate": rate / 1e9,
        }

    def do_mediapipe(self, path: str) -> dict:
        return _mediapipe(path, self)


def _conv_flops(model, shape_inference, h: int, w: int) -> float:
    import copy

    m = copy.deepcopy(model)
    dims = m.graph.input[0].type.tensor_type.shape.dim
    for d, v in zip(dims, (1, 3, h, w), strict=True):
        d.ClearField("dim_param")
        d.dim_value = v
    m = shape_inference.infer_shapes(m)
    shapes = {}
    for vi in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input):
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    inits = {i.name: list(i.dims) for i in m.graph.initializer}
    total = 0.0
    for node in m.graph.node:
        if node.op_type == "Conv":
            wshape = inits.get(node.input[1])
            out = shapes.get(node.output[0])
            if wshape and out:
                # out elements x (in channels per group x kernel area) multiply-adds
                total += 2 * float(np.prod(out)) * float(np.prod(wshape[1:]))
        elif node.op_type == "ConvTranspose":
            pass  # none in this graph
    return total


def _mediapipe(path: str, worker: Worker) -> dict:
    """BlazeFace (mediapipe 0.10.14) on the speed and recall checks; eye/nose points against RetinaFace."""
    sys.path.append(path)
    # mediapipe 0.10.14 calls a protobuf method that protobuf 5+ removed; same behaviour, new name.
    from google.protobuf import message_factory, symbol_database

    symbol_database.SymbolDatabase.GetPrototype = lambda self, d: message_factory.GetMessageClass(d)
    import mediapipe as mp

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import detectors as d
    from emolens.detect import Face

    voc, noses = d.read_voc(PHOTOS), d.read_compreface(PHOTOS)
    retina = worker.analyzer.detector
    out = {}
    for model_selection, name in ((0, "blazeface-short"), (1, "blazeface-full")):
        fd = mp.solutions.face_detection.FaceDetection(model_selection=model_selection, min_detection_confidence=0.5)

        def detect(image, fd=fd):
            h, w = image.shape[:2]
            res = fd.process(np.ascontiguousarray(image))
            faces = []
            for det in res.detections or []:
                bb = det.location_data.relative_bounding_box
                box = np.array([bb.xmin * w, bb.ymin * h, (bb.xmin + bb.width) * w, (bb.ymin + bb.height) * h])
                kp = np.array([[k.x * w, k.y * h] for k in det.location_data.relative_keypoints[:3]])
                faces.append(Face(box=box, score=det.score[0], landmarks=kp))
            return faces

        found = total = count_ok = noses_in = n_noses = 0
        for image, truth in voc.items():
            found += d.matched_count(truth, detect(worker.load_image(PHOTOS / "dlib_voc" / image)))
            total += len(truth)
        errors = []
        for image, pts in noses.items():
            im = worker.load_image(PHOTOS / "compreface" / image)
            if max(im.shape[:2]) > 1600:  # as the analyzer's max_side
                s = 1600 / max(im.shape[:2])
                im = worker.cv2.resize(im, None, fx=s, fy=s, interpolation=worker.cv2.INTER_AREA)
                pts = pts * s
            faces = detect(im)
            count_ok += len(faces) == len(pts)
            noses_in += d.noses_inside(pts, faces)
            n_noses += len(pts)
            ref = retina(im)
            for f in faces:  # landmark agreement with RetinaFace's eyes and nose, per interocular distance
                if not ref:
                    break
                r = min(ref, key=lambda g, f=f: float(np.abs(g.box - f.box).sum()))
                if d.iou_matrix(f.box[None], r.box[None])[0, 0] < 0.5:
                    continue
                eyes = np.linalg.norm(r.landmarks[0] - r.landmarks[1])
                # BlazeFace's keypoints: the subject's right eye (image left) first, as RetinaFace's.
                errors.append(float(np.linalg.norm(f.landmarks - r.landmarks[:3], axis=1).mean() / eyes))
        false = sum(len(detect(worker.load_image(PHOTOS / k))) for k in d.FACE_FREE)
        times, retina_times = [], []
        img = worker.images["one"]
        for _ in range(3):
            detect(img)
        for _ in range(30):  # alternating with RetinaFace, so both see the same load
            t = time.perf_counter()
            detect(img)
            times.append((time.perf_counter() - t) * 1e3)
            t = time.perf_counter()
            retina(img)
            retina_times.append((time.perf_counter() - t) * 1e3)
        out[name] = {
            "voc": f"{found}/{total}",
            "count": f"{count_ok}/{len(noses)}",
            "noses": f"{noses_in}/{n_noses}",
            "false": false,
            "ms": statistics.median(times),
            "retina_ms": statistics.median(retina_times),
            "landmark_err": statistics.median(errors) if errors else float("nan"),
            "landmark_n": len(errors),
        }
    return out


def worker_main(threads: int, folder: Path, clips: Path) -> None:
    w = Worker(threads, folder, clips)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        try:
            print(json.dumps({"ok": w.handle(json.loads(line))}), flush=True)
        except Exception as exc:  # report to the parent, keep serving
            print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)


# --- parent --------------------------------------------------------------------------------------
class Proc:
    def __init__(self, label: str, src: Path, args, folder: Path, clips: Path):
        env = {**os.environ, "PYTHONPATH": str(src), "EMOLENS_THREADS": str(args.threads)}
        env["OMP_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = str(args.threads)
        env["EMOLENS_HOME"] = tempfile.mkdtemp(prefix="emolens-e2e-")
        cmd = [sys.executable, __file__, "--worker", "--threads", str(args.threads)]
        cmd += ["--folder", str(folder), "--clips", str(clips)]
        self.label = label
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        assert json.loads(self.p.stdout.readline()).get("ready"), label

    def ask(self, op: str, **kw) -> dict:
        self.p.stdin.write(json.dumps({"op": op, "args": kw}) + "\n")
        self.p.stdin.flush()
        reply = json.loads(self.p.stdout.readline())
        if "error" in reply:
            raise RuntimeError(f"{self.label}: {op}: {reply['error']}")
        return reply["ok"]

    def close(self) -> None:
        self.p.stdin.close()
        self.p.wait(timeout=60)


def make_folder(folder: Path) -> str:
    import cv2

    from emolens.image.io import load_image

    people = sorted(LFW.glob("*/*.jpg"))[:40] if LFW.is_dir() else []
    if people:
        for i, p in enumerate(people):
            im = cv2.resize(load_image(p), (640, 480), interpolation=cv2.INTER_CUBIC)
            cv2.imwrite(str(folder / f"{i:03d}.jpg"), cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
        return "40 LFW photos enlarged to 640x480"
    im = cv2.resize(load_image(ROOT / "src/emolens/assets/examples/astronaut.jpg"), (640, 480))
    for i in range(40):
        cv2.imwrite(str(folder / f"{i:03d}.jpg"), cv2.cvtColor(np.roll(im, i * 7, axis=1), cv2.COLOR_RGB2BGR))
    return "the astronaut at 640x480, shifted, x40"


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def med(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", default=DEFAULT_BEFORE, help="git revision to compare with")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--video-rounds", type=int, default=2, help="0 skips the video check")
    ap.add_argument("--mediapipe", type=Path, help="folder holding mediapipe 0.10.14 (pip --target)")
    ap.add_argument("--md", type=Path)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--clips", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker_main(args.threads, args.folder, args.clips)

    start, load_before = time.time(), uptime()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        old = tmp / "before"
        old.mkdir()
        archive = subprocess.run(["git", "archive", args.before, "src"], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        folder, clips = tmp / "folder", tmp / "clips"
        folder.mkdir(), clips.mkdir()
        folder_what = make_folder(folder)
        if args.video_rounds:
            sys.path.insert(0, str(ROOT / "benchmarks"))
            import video

            video.compose(clips, 150)
        procs = [Proc("before", old / "src", args, folder, clips), Proc("after", ROOT / "src", args, folder, clips)]
        cases = [c for c in CASES if c == "one" or PHOTOS.is_dir()]
        acc = {p.label: {c: {} for c in cases} for p in procs}
        folder_rates = {p.label: [] for p in procs}
        video_fps = {p.label: {} for p in procs}
        for p in procs:
            for c in cases:
                p.ask("warm", case=c)
        for r in range(args.rounds):
            order = procs if r % 2 == 0 else procs[::-1]
            for c in cases:
                for p in order:
                    res = p.ask("case", case=c, calls=args.calls)
                    for k, v in res.items():
                        if isinstance(v, list) and k != "passes":
                            acc[p.label][c].setdefault(k, []).extend(v)
                        else:
                            acc[p.label][c][k] = v
            if r % 3 == 0:
                for p in order:
                    folder_rates[p.label] += p.ask("folder", repeats=1)["rates"]
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
        for r in range(args.video_rounds):
            for p in procs if r % 2 == 0 else procs[::-1]:
                for k, v in p.ask("video").items():
                    video_fps[p.label].setdefault(k, []).append(v)
        recall = {p.label: p.ask("recall") for p in procs} if PHOTOS.is_dir() else {}
        flops = {p.label: p.ask("flops") for p in procs}
        mp = procs[1].ask("mediapipe", path=str(args.mediapipe)) if args.mediapipe else None
        for p in procs:
            p.close()
    load_after = uptime()
    md = report(args, rev.stdout.strip(), acc, folder_rates, folder_what, video_fps, recall, flops, mp)
    md += (
        f"\nMachine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, Python "
        f"{platform.python_version()}; {args.threads} threads for ONNX Runtime and OpenCV in each worker. "
        f"Load before: `{load_before}`; after: `{load_after}`. Run time {time.time() - start:.0f} s.\n"
    )
    print(md)
    if args.md:
        from speed import write_result  # benchmarks/ is on the path when a script here runs

        write_result(args.md, [md])  # keeps the file's hand-written notes


def report(args, rev, acc, folder_rates, folder_what, video_fps, recall, flops, mp) -> str:
    b, a = "before", "after"
    n = args.rounds * args.calls
    lines = [
        f"## End to end: before (`{args.before}`) and after (`{rev}` + working tree), one run, interleaved\n",
        f"Median of {n} calls per cell ({args.rounds} alternating rounds of {args.calls}); numpy RGB in "
        f"(no decoding) except the folder; `fast` model, RetinaFace, default options, {args.threads} threads.\n",
        "| case | goal | before | after | faces before / after | detector input before → after |",
        "|---|---|---:|---:|---|---|",
    ]
    for c, d in acc[a].items():
        db = acc[b][c]
        lines.append(
            f"| {CASE_NAMES[c]} | {GOALS[c]} | {med(db['e2e']):.1f} ms | **{med(d['e2e']):.1f} ms** | "
            f"{db['faces']} / {d['faces']} | {_passes(flops[b]['sizes'].get(c))} → "
            f"{_passes(flops[a]['sizes'].get(c))} |"
        )
    fb, fa = folder_rates[b], folder_rates[a]
    lines.append(
        f"| folder of 640x480 JPEGs ({folder_what}), `Analyzer.stream` | {GOALS['folder']} | "
        f"{med(fb):.1f} images/s | **{med(fa):.1f} images/s** | | |"
    )
    lines += ["", "### Time split (ms, median; steps run one by one)\n"]
    lines += [
        "| case | version | detect | align (all faces) | classify (one batch) | sum |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for c in acc[a]:
        for v in (b, a):
            d = acc[v][c]
            parts = [med(d[k]) for k in ("detect", "align", "classify")]
            lines.append(
                f"| {CASE_NAMES[c]} | {v} | " + " | ".join(f"{x:.2f}" for x in parts) + f" | {sum(parts):.1f} |"
            )
    lines.append("\nDecoding (folder case, in the analyzer's timings) is apart from these; see the folder row.")
    if recall:
        lines += ["", "### Recall (`benchmarks/detectors.py` checks; small faces: VOC photos shrunk)\n"]
        lines += [
            "| version | VOC recall | count exact | noses in box | false det. | VOC faces ~20 px, min_face_size 10 "
            "| VOC faces ~30 px, default min_face_size 20 |",
            "|---|---|---|---|---|---|---|",
        ]
        for v in (b, a):
            r = recall[v]
            lines.append(
                f"| {v} | {r['voc']} | {r['count']} | {r['noses']} | {r['false']} | {r['voc20']} | {r['voc30']} |"
            )
    if any(video_fps.values()):
        lines += ["", "### Video (benchmarks/video.py clips, 640x480, 150 frames, detect every frame; best pass)\n"]
        lines += ["| clip | before FPS | after FPS | tracks before / after |", "|---|---:|---:|---|"]
        for clip in video_fps[a]:
            vb, va = video_fps[b][clip], video_fps[a][clip]
            lines.append(
                f"| {clip} | {max(x['fps'] for x in vb):.1f} | **{max(x['fps'] for x in va):.1f}** | "
                f"{vb[-1]['tracks']} / {va[-1]['tracks']} |"
            )
    lines += ["", "### Physical bound (detector FLOPs at its input size / this CPU's matmul rate)\n"]
    rate_b, rate_a = flops[b]["gflops_rate"], flops[a]["gflops_rate"]
    rate = max(rate_b, rate_a)
    lines += [
        f"float32 matrix product (1024x1024, numpy): {rate_b:.0f} / {rate_a:.0f} GFLOP/s in the two workers; "
        f"the bound uses the higher, {rate:.0f}.\n",
        "| case | version | detector input(s) | GFLOPs | bound at matmul rate | measured detect | achieved GFLOP/s |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for c in acc[a]:
        for v in (b, a):
            passes = flops[v]["sizes"].get(c) or []
            g = sum(flops[v]["flops"][f"{h}x{w}"] for h, w in passes) / 1e9
            det = med(acc[v][c]["detect"])
            lines.append(
                f"| {CASE_NAMES[c]} | {v} | {_passes(passes)} | {g:.2f} | {g / rate * 1e3:.1f} ms | {det:.1f} ms | "
                f"{g / det * 1e3:.1f} |"
            )
    if mp:
        lines += ["", "### BlazeFace (mediapipe 0.10.14) against RetinaFace\n"]
        lines += [
            "| detector | VOC recall | count exact | noses in box | false det. | 640x480 latency, alternating "
            "| eye/nose error vs RetinaFace |",
            "|---|---|---|---|---|---:|---:|",
        ]
        r = recall.get(a, {})
        lines.append(
            f"| retinaface (after) | {r.get('voc')} | {r.get('count')} | {r.get('noses')} | {r.get('false')} | "
            "see below | – |"
        )
        for name, m in mp.items():
            lines.append(
                f"| {name} | {m['voc']} | {m['count']} | {m['noses']} | {m['false']} | "
                f"{m['ms']:.1f} ms (RetinaFace {m['retina_ms']:.1f} ms) | "
                f"{m['landmark_err']:.2f} x interocular (n={m['landmark_n']}) |"
            )
    return "\n".join(lines) + "\n"


def _passes(passes) -> str:
    if not passes:
        return "?"
    return " + ".join(f"{w}x{h}" for h, w in passes)


if __name__ == "__main__":
    main()
