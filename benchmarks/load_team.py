"""The load test for a team deployment: `emolens serve --workers W` on SQLite and on PostgreSQL.

Method: as benchmarks/load.py (closed-loop clients posting the example photo to /api/v1/analyze,
warm-up not counted, latency at the client), for every pair of --workers and --database in one
run. Each server gets a throw-away $EMOLENS_HOME and, for PostgreSQL, a fresh database on a
throw-away PostgreSQL server (initdb + pg_ctl, see tests/pg.py); it is ready when every worker has
answered /readyz with 200. Every analysis is also written to the database (kept for feedback by
analysis id), so the database is on the measured path.

    python benchmarks/load_team.py --workers 1 2 3 --database sqlite postgresql --clients 8 --duration 20

Exits 1 when any request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests")]

from load import free_port, run_load, start_server, wait_ready  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3], help="server processes, in turn")
    ap.add_argument("--database", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    ap.add_argument("--clients", type=int, nargs="+", default=[8], help="concurrent clients, in turn")
    ap.add_argument("--duration", type=float, default=20.0, help="counted seconds per run")
    ap.add_argument("--warmup", type=float, default=3.0, help="uncounted seconds before each run")
    ap.add_argument("--serve-threads", type=int, default=2, help="EMOLENS_SERVE_THREADS per worker")
    ap.add_argument("--threads", type=int, default=1, help="EMOLENS_THREADS: ONNX Runtime threads per analysis")
    args = ap.parse_args()

    load_start = os.getloadavg()[0]
    rows = []
    pg = None
    if "postgresql" in args.database:
        import pg as pg_helper  # the tests' throw-away PostgreSQL server

        pg = pg_helper.start()
    try:
        for database in args.database:
            for workers in args.workers:
                with tempfile.TemporaryDirectory(prefix="emolens-load-") as home:
                    port = free_port()
                    url = f"http://127.0.0.1:{port}"
                    db_url = pg.new_database() if database == "postgresql" else None
                    proc = start_server(
                        port, home, args.serve_threads, args.threads, workers=workers, database_url=db_url
                    )
                    try:
                        wait_ready(url, proc, workers)
                        for n in args.clients:
                            r = asyncio.run(run_load(url, n, args.warmup, args.duration))
                            rows.append({"database": database, "workers": workers, **r})
                    finally:
                        proc.terminate()
                        proc.wait(timeout=60)
    finally:
        if pg:
            pg.stop()

    print(f"## Load by workers and database: POST /api/v1/analyze, example photo, {args.duration:g} s per run\n")
    print("| database | workers | clients | requests | throughput | p50 | p99 | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['database']} | {r['workers']} | {r['clients']} | {r['requests']} | {r['throughput']:.1f} req/s | "
            f"{r['p50_ms']:.0f} ms | {r['p99_ms']:.0f} ms | {r['errors']} |"
        )
    import onnxruntime

    load_end = os.getloadavg()[0]
    print(
        f"\nEach worker: {args.serve_threads} analysis threads of {args.threads} ONNX Runtime thread(s); clients on "
        f"the same machine. ONNX Runtime {onnxruntime.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} logical cores; load average {load_start:.1f} at start, {load_end:.1f} at end"
        + (
            " (above the core count: other processes shared the CPU)."
            if max(load_start, load_end) > os.cpu_count()
            else "."
        )
    )
    failed = {k: v for r in rows for k, v in r["error_kinds"].items()}
    if failed:
        print(f"\nerrors: {failed}")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
