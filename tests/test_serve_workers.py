"""`emolens serve --workers 3` as a team would run it: three processes on one port sharing one
database (SQLite, then PostgreSQL). Feedback by analysis id works whichever worker answers, a
promotion is seen by every worker, metrics add up, and a job started twice runs once."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "src" / "emolens" / "assets" / "examples" / "astronaut.jpg"
WORKERS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str, env: dict) -> str:
    proc = subprocess.run([sys.executable, "-m", "emolens.cli", *args], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture
def team(emolens_home, database_url, shared_datasets, tmp_path):
    """Three workers on one port, with small real replay and validation sets for fine-tuning."""
    fer = shared_datasets / "fer2013"
    val = np.load(fer / "val.npz")
    classes = np.array([str(c) for c in val["classes"]])
    idx = np.random.default_rng(0).permutation(len(val["labels"]))
    for name, part in (("replay", idx[:300]), ("base", idx[300:500])):
        np.savez(tmp_path / f"{name}.npz", images=val["images"][part], labels=val["labels"][part], classes=classes)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMOLENS_", "PROMETHEUS_"))}
    env |= {
        "EMOLENS_HOME": str(emolens_home),
        "EMOLENS_MIN_FEEDBACK": "5",
        "EMOLENS_REPLAY_DATA": str(tmp_path / "replay.npz"),
        "EMOLENS_BASE_VAL_DATA": str(tmp_path / "base.npz"),
        "EMOLENS_THREADS": "1",
    }
    if database_url.startswith("postgresql"):
        env["EMOLENS_DATABASE_URL"] = database_url
    token = re.search(r"emk_[A-Za-z0-9_-]+", cli("keys", "create", "ci", "--scope", "admin", env=env)).group(0)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "emolens.cli", "serve", "--port", str(port), "--workers", str(WORKERS)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        workers = connections_to_every_worker(url, server)
        yield {"url": url, "workers": workers, "key": {"X-API-Key": token}}
    finally:
        for c in locals().get("workers", {}).values():
            c.close()
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def connections_to_every_worker(url: str, server: subprocess.Popen) -> dict[int, httpx.Client]:
    """One kept-alive connection to each worker (a connection stays with the worker that accepted it)."""
    found: dict[int, httpx.Client] = {}
    deadline = time.monotonic() + 150
    while len(found) < WORKERS:
        assert server.poll() is None, server.stderr.read()
        assert time.monotonic() < deadline, f"only {len(found)} of {WORKERS} workers answered"
        client = httpx.Client(base_url=url, timeout=60)
        try:
            if client.get("/readyz").status_code == 200:
                pid = client.get("/healthz").json()["pid"]
                if pid not in found:
                    found[pid] = client
                    continue
        except httpx.TransportError:
            pass
        client.close()
        time.sleep(0.2)
    return found


def analyze(client: httpx.Client) -> dict:
    r = client.post("/api/v1/analyze", files={"image": ("a.jpg", EXAMPLE.read_bytes(), "image/jpeg")})
    assert r.status_code == 200, r.text
    return r.json()


def test_three_workers_share_analyses_models_metrics_and_jobs(team):
    workers = list(team["workers"].values())
    key = team["key"]

    # Feedback names an analysis that another worker made.
    stored = 0
    for i, maker in enumerate(workers):
        for j in range(2):
            analysis = analyze(maker)
            other = workers[(i + 1 + j) % len(workers)]
            body = {"analysis_id": analysis["analysis_id"], "face": 0, "label": "sad"}
            r = other.post("/api/v1/feedback", json=body, headers=key)
            assert r.status_code in (200, 201), r.text
            stored += 1

    # Metrics: whichever worker answers, the count covers all of them.
    for w in workers:
        text = w.get("/metrics").text
        assert re.search(r"^emolens_analyses_total 6\.0$", text, re.M), text[:2000]

    # A promotion made through one worker is what every worker analyses with.
    r = workers[0].post("/api/v1/models/accurate/promote", headers=key)
    assert r.status_code == 200, r.text
    promoted = r.json()["name"]
    assert {analyze(w)["model"] for w in workers} == {promoted}

    # The same fine-tuning started on two workers at once runs once.
    answers: list[httpx.Response] = []

    def start(w: httpx.Client) -> None:
        answers.append(w.post("/api/v1/models/finetune", json={"epochs": 1}, headers=key))

    threads = [threading.Thread(target=start, args=(w,)) for w in workers[:2]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in answers)
    assert codes == [202, 409], [r.text for r in answers]
    job_id = next(r.json()["id"] for r in answers if r.status_code == 202)
    for w in workers:  # every worker lists the one job, and sees it end
        assert [j["id"] for j in w.get("/api/v1/jobs").json()] == [job_id]
    deadline = time.monotonic() + 300
    while (job := workers[-1].get(f"/api/v1/jobs/{job_id}").json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(1)
    assert job["status"] in ("succeeded", "failed") and job["finished_at"]
    assert stored == 6
