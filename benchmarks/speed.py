"""Speed of the analyzer on this machine: detection, classification per face, end to end.

Method: every figure is the median of --repeats timed runs after --warmup untimed ones, in one
process, ONNX Runtime limited to --threads intra-op threads. Detection runs on the built-in
example photo resized to 640x480. Classification runs the emotion model alone on aligned
48x48 crops at batch 1 and batch 64 (per-face time = batch time / batch size). End to end is
decode + detect + align + classify of the example JPEG (one face) and of a group photo when
the shared datasets are present.

    python benchmarks/speed.py [--model fast] [--detector retinaface] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "src" / "emolens" / "assets" / "examples" / "astronaut.jpg"
GROUP = ROOT.parent / "shared" / "datasets" / "photos" / "compreface" / "015_6.jpg"


NOTES_HEADING = "## Notes"


def write_result(path: Path, lines: list[str]) -> str:
    """Write a results file from a script's ``lines``, keeping the hand-written section that starts
    with ``## Notes`` in the file it replaces (the script's tables change, the notes on them stay)."""
    notes = ""
    if path.is_file():
        old = path.read_text()
        at = old.find("\n" + NOTES_HEADING)
        notes = old[at:] if at >= 0 else ""
    text = "\n".join(lines).rstrip("\n") + "\n" + notes
    path.write_text(text)
    return text


def median_ms(fn, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="fast")
    ap.add_argument("--detector", default="retinaface")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()
    cv2.setNumThreads(args.threads)

    from emolens import Analyzer, load_image
    from emolens.image.align import align_face
    from emolens.workspace import Workspace

    analyzer = Analyzer(model=args.model, detector=args.detector, threads=args.threads)
    model = Workspace.default().models.load(args.model, args.threads)
    image = load_image(EXAMPLE)
    vga = cv2.resize(image, (640, 480), interpolation=cv2.INTER_AREA)
    face = analyzer.detector(image)[0]
    crop = align_face(image, face.box, face.landmarks, model.meta.input.size, model.meta.input.channels)
    rows = []

    det = median_ms(lambda: analyzer.detector(vga), args.repeats, args.warmup)
    rows.append((f"detection ({args.detector}), 640x480", f"{det:.1f} ms", f"{1000 / det:.1f} images/s"))
    for bs in (1, 64):
        batch = np.repeat(crop[None], bs, axis=0)
        t = median_ms(
            lambda b=batch, n=bs: model.predict(b, batch_size=n), args.repeats * (4 if bs == 1 else 1), args.warmup
        )
        rows.append((f"classification, batch {bs}", f"{t / bs:.3f} ms/face", f"{1000 * bs / t:,.0f} faces/s"))
    align = median_ms(lambda: align_face(image, face.box, face.landmarks, 48, 1), args.repeats, args.warmup)
    rows.append(("alignment, one face", f"{align:.3f} ms", ""))
    e2e = median_ms(lambda: analyzer(str(EXAMPLE)), args.repeats, args.warmup)
    rows.append(("end to end, example 512x512 JPEG, 1 face", f"{e2e:.1f} ms", f"{1000 / e2e:.1f} images/s"))
    if GROUP.exists():
        n = len(analyzer(str(GROUP)))
        g = median_ms(lambda: analyzer(str(GROUP)), max(args.repeats // 3, 5), 2)
        rows.append((f"end to end, group photo {GROUP.name}, {n} faces", f"{g:.1f} ms", f"{1000 / g:.1f} images/s"))

    card = model.card
    print(
        f"## Speed: model `{args.model}` ({card.get('arch', '?')}, {card.get('mflops', '?')} MFLOPs), "
        f"detector `{args.detector}`\n"
    )
    print("| what | time | throughput |\n|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")
    import onnxruntime

    print(
        f"\nMedian of {args.repeats} runs after {args.warmup} warm-up runs; ONNX Runtime {onnxruntime.__version__}, "
        f"{args.threads} intra-op threads; {platform.processor() or platform.machine()}, {os.cpu_count()} logical "
        f"cores, load average at end {os.getloadavg()[0]:.1f}."
    )


if __name__ == "__main__":
    main()
