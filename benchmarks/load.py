"""A bounded load test of `emolens serve` on loopback: N concurrent clients for a fixed time.

Method: the server is started as a subprocess (`emolens serve`, one worker process) with a
throw-away $EMOLENS_HOME, and is ready when /readyz answers 200. Then --clients asyncio tasks,
sharing one httpx.AsyncClient with a connection each, post the built-in example photo
(astronaut.jpg, 512x512 JPEG, one face) to /api/v1/analyze back to back: each sends its next
request as soon as its previous answer arrives (a closed loop). The first --warmup seconds are
not counted; then every request that *starts* within --duration seconds is counted when it
ends. An error is any answer other than 200 with exactly one face, or any transport error.
Latency is measured at the client, request sent to answer read. The clients run on the same
machine as the server and take CPU from it.

    python benchmarks/load.py [--clients 8] [--duration 30] [--serve-threads 2] [--threads 1]

With --shadow MODEL, a second server runs beside the first with that shadow model (on
--shadow-share of the requests), and every run is made on both, alternately (without, with,
--repeats times), so that both see the same machine load; the table then has a shadow column and
the shadow server's counts (faces stored, samples skipped because its queue was full) follow.

    python benchmarks/load.py --clients 1 4 --duration 20 --shadow accurate --shadow-share 1 --repeats 2

For several workers and PostgreSQL, see benchmarks/load_team.py (it reuses this script's parts).

Exits 1 when any request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "src" / "emolens" / "assets" / "examples" / "astronaut.jpg"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    port: int,
    home: str,
    serve_threads: int,
    threads: int,
    shadow: str | None = None,
    share: float = 1.0,
    workers: int = 1,
    database_url: str | None = None,
) -> subprocess.Popen:
    env = {
        **os.environ,
        "EMOLENS_HOME": home,
        "EMOLENS_SERVE_THREADS": str(serve_threads),
        "EMOLENS_THREADS": str(threads),
        "EMOLENS_SERVE_QUEUE": "1000",
    }
    for key in ("EMOLENS_CONFIG", "EMOLENS_SHADOW_MODEL", "EMOLENS_DATABASE_URL"):
        env.pop(key, None)
    if shadow:
        env.update(EMOLENS_SHADOW_MODEL=shadow, EMOLENS_SHADOW_SHARE=str(share))
    if database_url:
        env["EMOLENS_DATABASE_URL"] = database_url
    cmd = [sys.executable, "-m", "emolens.cli", "serve", "--port", str(port), "--log-level", "warning"]
    cmd += ["--workers", str(workers)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_ready(url: str, proc: subprocess.Popen | None, workers: int = 1, timeout: float = 180) -> None:
    """Until ``workers`` different worker processes have answered /readyz with 200 (each new
    connection goes to whichever worker accepts it)."""
    deadline = time.monotonic() + timeout
    ready: set[int] = set()
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the server exited: {proc.stderr.read()}")
        try:
            with httpx.Client(base_url=url, timeout=5) as c:
                if c.get("/readyz").status_code == 200:
                    ready.add(c.get("/healthz").json().get("pid", 0))
                    if len(ready) >= workers:
                        return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"only {len(ready)} of {workers} workers became ready")


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, int(round(q / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


async def run_load(url: str, clients: int, warmup: float, duration: float) -> dict:
    data = EXAMPLE.read_bytes()
    latencies: list[float] = []
    errors: dict[str, int] = {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        t_start = time.perf_counter()
        t_count, t_stop = t_start + warmup, t_start + warmup + duration

        async def worker() -> None:
            while True:
                t0 = time.perf_counter()
                if t0 >= t_stop:
                    return
                problem = None
                try:
                    r = await client.post("/api/v1/analyze", files={"image": ("astronaut.jpg", data, "image/jpeg")})
                    if r.status_code != 200:
                        problem = f"HTTP {r.status_code}"
                    elif len(r.json()["faces"]) != 1:
                        problem = "wrong face count"
                except httpx.HTTPError as exc:
                    problem = type(exc).__name__
                t1 = time.perf_counter()
                if t0 >= t_count:
                    if problem:
                        errors[problem] = errors.get(problem, 0) + 1
                    else:
                        latencies.append(t1 - t0)

        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - t_count
    latencies.sort()
    return {
        "clients": clients,
        "requests": len(latencies) + sum(errors.values()),
        "ok": len(latencies),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "elapsed_s": elapsed,
        "throughput": len(latencies) / elapsed,
        "p50_ms": 1e3 * percentile(latencies, 50),
        "p90_ms": 1e3 * percentile(latencies, 90),
        "p99_ms": 1e3 * percentile(latencies, 99),
        "max_ms": 1e3 * latencies[-1] if latencies else float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--clients", type=int, nargs="+", default=[8], help="concurrent clients; several values run in turn"
    )
    ap.add_argument("--duration", type=float, default=30.0, help="counted seconds per run")
    ap.add_argument("--warmup", type=float, default=3.0, help="uncounted seconds before each run")
    ap.add_argument("--serve-threads", type=int, default=2, help="EMOLENS_SERVE_THREADS: analyses at once")
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="EMOLENS_THREADS: ONNX Runtime threads per analysis; 0: cores / serve threads",
    )
    ap.add_argument("--url", help="load an already running server instead of starting one")
    ap.add_argument("--shadow", help="also run every load on a second server with this shadow model")
    ap.add_argument("--shadow-share", type=float, default=1.0, help="EMOLENS_SHADOW_SHARE of the shadow server")
    ap.add_argument("--repeats", type=int, default=1, help="with --shadow: alternate runs per client count")
    args = ap.parse_args()

    procs = []
    load_start = os.getloadavg()[0]
    shadow_status = None
    with tempfile.TemporaryDirectory(prefix="emolens-load-") as home, tempfile.TemporaryDirectory() as home2:
        if args.url:
            urls = {"": args.url.rstrip("/")}
        else:
            urls = {}
            for name, h, shadow in (("none", home, None), (args.shadow, home2, args.shadow)):
                if name is None:
                    continue
                port = free_port()
                urls[name] = f"http://127.0.0.1:{port}"
                procs.append(start_server(port, h, args.serve_threads, args.threads, shadow, args.shadow_share))
        try:
            for url, proc in zip(urls.values(), procs or [None], strict=False):
                wait_ready(url, proc)
            rows = []
            for n in args.clients:
                for _ in range(args.repeats if args.shadow else 1):
                    for name, url in urls.items():  # alternate: both servers see the same machine load
                        rows.append({"shadow": name, **asyncio.run(run_load(url, n, args.warmup, args.duration))})
            if args.shadow:
                shadow_status = httpx.get(f"{urls[args.shadow]}/api/v1/shadow", timeout=30).json()
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=30)

    print(f"## Load: POST /api/v1/analyze, example photo (512x512 JPEG, 1 face), {args.duration:g} s per run\n")
    shadow_col = "shadow model | " if args.shadow else ""
    print(f"| {shadow_col}clients | requests | throughput | p50 | p90 | p99 | max | errors |")
    print("|---" * (8 + bool(args.shadow)) + "|")
    for r in rows:
        cell = f"{r['shadow']} (share {args.shadow_share:g}) | " if args.shadow and r["shadow"] != "none" else ""
        cell = cell or ("none | " if args.shadow else "")
        print(
            f"| {cell}{r['clients']} | {r['requests']} | {r['throughput']:.1f} req/s | {r['p50_ms']:.0f} ms | "
            f"{r['p90_ms']:.0f} ms | {r['p99_ms']:.0f} ms | {r['max_ms']:.0f} ms | {r['errors']} |"
        )
    if shadow_status:
        st, rep = shadow_status["status"] or {}, shadow_status["report"]
        print(
            f"\nShadow server: {st.get('sampled')} requests sampled, {st.get('stored')} faces compared and stored, "
            f"{st.get('skipped')} skipped (queue full), {st.get('failed')} failed, {st.get('pending')} still pending "
            f"at the end; agreement with the active model {rep.get('agreement') or 0:.1%} on {rep.get('faces')} faces."
        )
    import onnxruntime

    threads = args.threads or max(1, (os.cpu_count() or 1) // args.serve_threads)
    load_end = os.getloadavg()[0]
    busy = (
        " (above the core count: other processes shared the CPU)" if max(load_start, load_end) > os.cpu_count() else ""
    )
    servers = (
        "Two server processes (without, with the shadow), loaded in turn," if args.shadow else "One server process"
    )
    print(
        f"\n{servers} on 127.0.0.1 (`emolens serve`), {args.serve_threads} analysis threads "
        f"(EMOLENS_SERVE_THREADS), {threads} ONNX Runtime thread(s) each (EMOLENS_THREADS); closed-loop "
        f"httpx clients in the same machine; {args.warmup:g} s warm-up not counted. ONNX Runtime "
        f"{onnxruntime.__version__}, Python {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} logical cores; load average {load_start:.1f} at start, {load_end:.1f} at end{busy}."
    )
    failed = {k: v for r in rows for k, v in r["error_kinds"].items()}
    if failed:
        print(f"\nerrors: {failed}")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
