"""The on-device web app (/app/) in headless Chromium: speed, cold start, download size, agreement.

Method: `emolens serve`'s app runs on loopback in this process; Debian's Chromium (headless,
--disable-gpu, so ONNX Runtime Web's WASM backend) opens /app/?threads=2 (2 WASM threads, the
page cross-origin isolated). Figures:

- frames/s: the in-browser pipeline (RetinaFace, alignment, emotion model) on a 640x480 frame with
  one face (the shipped example, letterboxed) and with five (compreface/014_5.jpg, cropped), median
  of --repeats calls after --warmup; frames/s = 1000 / median ms. Frame capture is not included.
- cold start: a fresh browser profile (empty HTTP cache, no service worker) from navigation to the
  first result on the example photo; then the same after the first visit (service worker cache).
- download: bytes on the wire for the first visit (page requests plus the service worker's
  precache, gzip where the server sends it), and the precache list by file.
- agreement: every photo of ../shared/datasets/photos decoded by the browser and analysed on the
  device, against the Python pipeline (`Analyzer(model=...)`, the same two-pass face search) on
  Python's decode of the file: faces matched by IoU >= 0.5, same label, largest probability
  difference.

    python benchmarks/on_device.py [--model fast] [--repeats 20] [--warmup 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import tempfile
import threading
import time
from pathlib import Path

import cv2
import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "src" / "emolens" / "assets" / "examples" / "astronaut.jpg"
PHOTOS = ROOT.parent / "shared" / "datasets" / "photos"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run", "--disable-sync"]


def serve(home: Path):
    import uvicorn

    os.environ["EMOLENS_HOME"] = str(home)
    from emolens.core.settings import Settings
    from emolens.serve import create_app

    app = ByteCounter(create_app(Settings(threads=2)))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    for _ in range(600):
        try:
            if httpx.get(url + "/readyz").status_code == 200:
                return url, server, app
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server did not start")


def frame(path: Path, faces: int) -> np.ndarray:
    from emolens.image.io import load_image

    im = load_image(path)
    h, w = im.shape[:2]
    if faces == 1:  # letterbox: the whole face visible
        s = min(640 / w, 480 / h)
        r = cv2.resize(im, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
        out = np.zeros((480, 640, 3), np.uint8)
        y0, x0 = (480 - r.shape[0]) // 2, (640 - r.shape[1]) // 2
        out[y0 : y0 + r.shape[0], x0 : x0 + r.shape[1]] = r
        return out
    s = max(640 / w, 480 / h)
    r = cv2.resize(im, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    y0, x0 = (r.shape[0] - 480) // 2, (r.shape[1] - 640) // 2
    return np.ascontiguousarray(r[y0 : y0 + 480, x0 : x0 + 640])


TIME_JS = """async ([b64, w, h, repeats, warmup]) => {
  const data = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const img = {width: w, height: h, data};
  let faces = 0;
  for (let i = 0; i < warmup; i++) faces = (await window.emolensApp.analyze(img)).faces.length;
  const t = [], parts = {};
  for (let i = 0; i < repeats; i++) {
    const t0 = performance.now();
    const r = await window.emolensApp.analyze(img);
    t.push(performance.now() - t0);
    for (const [k, v] of Object.entries(r.timings_ms)) (parts[k] = parts[k] || []).push(v);
  }
  const med = (a) => a.sort((x, y) => x - y)[a.length >> 1];
  const split = Object.fromEntries(Object.entries(parts).map(([k, v]) => [k, med(v)]));
  t.sort((a, b) => a - b);
  return {faces, median: t[t.length >> 1], p90: t[Math.floor(t.length * 0.9)], split};
}"""


class ByteCounter:
    """ASGI wrapper: bytes of response bodies the server sends (what the browser downloads,
    service worker included)."""

    def __init__(self, app):
        self.app, self.bytes, self.requests = app, 0, 0

    async def __call__(self, scope, receive, send):
        async def counted(message):
            if message["type"] == "http.response.body":
                self.bytes += len(message.get("body", b""))
            await send(message)

        if scope["type"] == "http":
            self.requests += 1
        await self.app(scope, receive, counted)


def iou(a, b) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def agreement(py, js: list[dict]) -> tuple[int, int, float]:
    """Python's faces matched to the browser's by IoU >= 0.5: (matched, same label, largest probability difference)."""
    used, matched, same, dp = set(), 0, 0, 0.0
    for f in py:
        best = max(((iou(f.box, g["box"]), k) for k, g in enumerate(js) if k not in used), default=(0.0, -1))
        if best[0] >= 0.5:
            used.add(best[1])
            g = js[best[1]]
            matched += 1
            same += g["label"] == f.label
            dp = max(dp, max(abs(g["probs"][k] - v) for k, v in f.probs.items()))
    return matched, same, dp


def _totals(t: dict) -> str:
    return (
        f"faces: Python {t['py']}, browser {t['js']}, matched {t['matched']}; same label on {t['same']} of "
        f"{t['matched']} matched faces; largest probability difference {t['dp']:.4f}."
    )


def main() -> None:
    import base64

    from playwright.sync_api import sync_playwright

    from emolens import Analyzer
    from emolens.webapp import build_info

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="fast")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "on_device.md")
    a = ap.parse_args()
    if build_info() is None:
        raise SystemExit("the web app's runtime is not built: run scripts/build_webapp.sh")
    load = os.getloadavg()
    home = Path(tempfile.mkdtemp(prefix="emolens-bench-"))
    url, server, counter = serve(home)
    app_url = f"{url}/app/?threads=2&model={a.model}"
    lines = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)

        # Cold start and download size: a fresh profile.
        ctx = browser.new_context()
        page = ctx.new_page()
        counter.bytes = counter.requests = 0
        t0 = time.perf_counter()
        page.goto(app_url)
        page.wait_for_selector("body[data-ready='true']", timeout=120_000)
        t_ready = time.perf_counter() - t0
        page.set_input_files("#file", str(EXAMPLE))
        page.wait_for_selector("#view[data-boxes='1']", timeout=120_000)
        t_first = time.perf_counter() - t0
        page.evaluate("navigator.serviceWorker.ready.then(() => true)")
        page.wait_for_timeout(2000)  # the precache finishes
        first_visit = counter.bytes, counter.requests
        backend = page.get_attribute("body", "data-backend"), page.get_attribute("body", "data-threads")
        page.reload()
        t1 = time.perf_counter()
        page.wait_for_selector("body[data-ready='true']", timeout=120_000)
        page.set_input_files("#file", str(EXAMPLE))
        page.wait_for_selector("#view[data-boxes='1']", timeout=120_000)
        t_warm = time.perf_counter() - t1
        sw = httpx.get(f"{url}/app/sw.js").text
        precache = __import__("json").loads(sw.split("const PRECACHE = ", 1)[1].split(";", 1)[0])
        listed = {}
        for path in precache:
            r = httpx.get(url + path, headers={"Accept-Encoding": "gzip"})
            listed[path] = int(r.headers.get("content-length") or len(r.content))

        # Frames per second, 640x480, one and five faces.
        fps = {}
        for label, path, n in (("1 face", EXAMPLE, 1), ("5 faces", PHOTOS / "compreface" / "014_5.jpg", 5)):
            if not path.is_file():
                continue
            f = frame(path, n)
            r = page.evaluate(TIME_JS, [base64.b64encode(f.tobytes()).decode(), 640, 480, a.repeats, a.warmup])
            fps[label] = r
        ctx.close()

        # Agreement with the Python pipeline on the shared photos: both search in two passes (native
        # size, or a little under, first; then the regions of possible small faces enlarged).
        analyzers = {"default": Analyzer(model=a.model, threads=2)}
        rows = []
        totals = {k: {"py": 0, "js": 0, "matched": 0, "same": 0, "dp": 0.0} for k in analyzers}
        if PHOTOS.is_dir():
            ctx = browser.new_context()
            page = ctx.new_page()
            page.goto(app_url)
            page.wait_for_selector("body[data-ready='true']", timeout=120_000)
            for path in sorted(PHOTOS.glob("*/*.jpg")):
                page.evaluate("document.getElementById('view').dataset.boxes = 'x'")
                page.set_input_files("#file", str(path))
                page.wait_for_selector("#view:not([data-boxes='x'])", timeout=300_000)
                js = page.evaluate("window.emolensApp.state.last")["faces"]
                for key, analyzer in analyzers.items():
                    py = analyzer(path)
                    matched, same, dp = agreement(py, js)
                    if key == "default":
                        name = f"{path.parent.name}/{path.name}"
                        rows.append(f"| {name} | {len(py)} | {len(js)} | {matched} | {same} | {dp:.4f} |")
                    t = totals[key]
                    for k, v in (("py", len(py)), ("js", len(js)), ("matched", matched), ("same", same)):
                        t[k] += v
                    t["dp"] = max(t["dp"], dp)
            ctx.close()
        browser.close()
    server.should_exit = True

    info = build_info()
    gpu_mb = sum(v["gzip_bytes"] for k, v in info["files"].items() if "webgpu" in k or "asyncify" in k) / 1e6
    # The Python pipeline on the same frame, on the same machine, at the same time: a yardstick for the load.
    analyzer = Analyzer(model=a.model, threads=2)
    f = frame(EXAMPLE, 1)
    times = []
    for i in range(a.warmup + a.repeats):
        t = time.perf_counter()
        analyzer(f)
        if i >= a.warmup:
            times.append((time.perf_counter() - t) * 1e3)
    python_ms = sorted(times)[len(times) // 2]
    lines += [
        "# On-device web app (`/app/`) in headless Chromium",
        "",
        __doc__.split("\n\n", 1)[1].split("    python")[0].strip(),
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, load average {load[0]:.2f} at the start "
        f"{'(other jobs were running)' if load[0] > (os.cpu_count() or 1) else '(a quiet machine)'}; "
        f"Chromium {browser.version}, onnxruntime-web {info['version']}, "
        f"backend {backend[0]} with {backend[1]} threads; model `{a.model}`.",
        "",
        "| frame (640x480) | faces found | median ms | p90 ms | frames/s |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {k} | {v['faces']} | {v['median']:.1f} | {v['p90']:.1f} | {1000 / v['median']:.1f} |"
            for k, v in fps.items()
        ),
        "",
        "Median ms by step (RetinaFace's input in JavaScript, the network in ONNX Runtime Web, anchors and NMS, "
        "alignment, the emotion model):",
        "",
        "| frame | " + " | ".join(next(iter(fps.values()))["split"]) + " |",
        "|---|" + "---:|" * len(next(iter(fps.values()))["split"]),
        *(f"| {k} | " + " | ".join(f"{x:.1f}" for x in v["split"].values()) + " |" for k, v in fps.items()),
        "",
        f"Yardstick: the Python pipeline (ONNX Runtime, 2 threads) on the same 1-face frame, in the same run: "
        f"{python_ms:.1f} ms median (`benchmarks/results/speed.md` has it on an idle machine); "
        f"the browser took {fps['1 face']['median'] / python_ms:.1f}x as long in the same conditions.",
        "",
        "| start | seconds |",
        "|---|---:|",
        f"| cold (empty cache): page to models loaded | {t_ready:.2f} |",
        f"| cold: page to first result on the example photo | {t_first:.2f} |",
        f"| second visit (service worker cache): page to first result | {t_warm:.2f} |",
        "",
        f"Download on the first visit, counted by the server (page, runtime, models and the service worker's "
        f"precache, until the first result): {first_visit[0] / 1e6:.2f} MB in {first_visit[1]} requests. "
        "What the service worker keeps for offline use (bytes as sent):",
        "",
        "| file | bytes |",
        "|---|---:|",
        *(f"| `{k}` | {v:,} |" for k, v in listed.items()),
        f"| **total** | **{sum(listed.values()):,}** |",
        "",
        "The WebGPU runtime (`ort.webgpu.min.mjs` + `ort-wasm-simd-threaded.asyncify.wasm`, "
        f"{gpu_mb:.1f} MB "
        "gzipped) is fetched only by browsers with a WebGPU adapter.",
        "",
        "## Agreement with the Python pipeline",
        "",
        "Python's default pipeline, the same two-pass face search: " + _totals(totals["default"]),
        "",
        "| photo | faces (Python) | faces (browser) | matched | same label | max abs prob diff |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
    ]
    a.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
