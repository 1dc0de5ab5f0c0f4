"""The server half of the second attack-and-fault review, made repeatable: files by path, keys on
the on-device app, the Host header, shadow faces, uploads that expire for real, a database that
is slow, full or gone, ambiguous ids, and the API docs offline. Real server on loopback, real
SQLite file (and a real closed port where PostgreSQL should be)."""

from __future__ import annotations

import re
import socket
import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import event

from test_serve import ASTRONAUT, assert_error, running_server

# A run of bytes from inside the example JPEG: present in the database's files while the upload is kept.
MARKER = ASTRONAUT[len(ASTRONAUT) // 2 : len(ASTRONAUT) // 2 + 64]


def analyze(c: httpx.Client, **kwargs) -> httpx.Response:
    return c.post("/api/v1/analyze", files={"image": ("a.jpg", ASTRONAUT, "image/jpeg")}, **kwargs)


def key(app, scope: str) -> str:
    from emolens.store.keys import KeyStore

    return KeyStore(app.state.emolens.db_url).create(f"test-{scope}", scope)[1]


def database_bytes(home: Path) -> bytes:
    return b"".join(p.read_bytes() for p in home.glob("emolens.db*") if p.is_file())


# -- 1. no file by path; /app follows the read-key rule; the Host header is checked ------------


def test_app_serves_registered_model_names_only_never_a_file(tmp_path, monkeypatch):
    """The server runs from its home, as the reviewer's did: its database must not be reachable as a
    "model" (it was, without a key), nor may odd names give a 500."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.chdir(home)
    with running_server(home) as (url, app), httpx.Client(base_url=url, timeout=60) as c:
        assert (home / "emolens.db").is_file()
        for name in ("emolens.db", "emolens.db-wal", "./emolens.db", str(home / "emolens.db"), "emolens", ".."):
            r = c.get("/app/config.json", params={"model": name})
            assert_error(r, 404)
        sha = __import__("hashlib").sha256((home / "emolens.db").read_bytes()).hexdigest()
        assert_error(c.get(f"/app/models/emolens.db-{sha[:16]}.onnx"), 404)
        for name in ("adaptive", "fast*0", "fast*nan", "fast+accurate", "fast,accurate"):
            r = c.get("/app/config.json", params={"model": name})
            assert 400 <= r.status_code < 500 and "one model" in r.json()["error"]["message"], (name, r.text)
        for name in ("x" * 5000, "v99", "v" + "9" * 40, ""):
            assert c.get("/app/config.json", params={"model": name}).status_code in (404, 422), name
        assert_error(c.get("/app/models/adaptive-0000000000000000.onnx"), 422)
        # Registered names still work: shipped, and the registry's active version by name.
        for name in ("fast", "fast-int8", "active"):
            model = c.get("/app/config.json", params={"model": name}).json()["model"]
            assert c.get(model["url"]).status_code == 200, name


def test_app_data_needs_the_read_key_when_the_api_does(tmp_path):
    with running_server(tmp_path / "home", api_read_key_required=True) as (url, app):
        read = key(app, "read")
        with httpx.Client(base_url=url, timeout=60) as c:
            assert_error(c.get("/app/config.json"), 401)
            config = c.get("/app/config.json", headers={"X-API-Key": read}).json()
            assert_error(c.get(config["model"]["url"]), 401)
            assert c.get(config["model"]["url"], headers={"X-API-Key": read}).status_code == 200
            assert c.get("/app/").status_code == 200  # the page itself holds no data


def test_host_header_must_name_the_server(tmp_path):
    """A page on attacker.example that resolves its name to 127.0.0.1 (DNS rebinding) sends its own
    name as Host: refused before any route. Probes that address the server by IP still work."""
    with running_server(tmp_path / "home") as (url, app):
        port = url.rsplit(":", 1)[1]
        with httpx.Client(base_url=url, timeout=60) as c:
            for host in ("attacker.example", f"attacker.example:{port}", "127.0.0.1.nip.io"):
                r = c.get("/app/config.json", headers={"Host": host})
                assert_error(r, 400, "host_not_allowed")
                assert_error(c.get("/api/v1/models", headers={"Host": host}), 400)
            for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST"):
                assert c.get("/api/v1/models", headers={"Host": host}).status_code == 200, host
            assert c.get("/healthz", headers={"Host": "10.1.2.3:8000"}).status_code == 200
    names = ["emolens.example", "*.corp.example"]
    with running_server(tmp_path / "home2", allowed_hosts=names) as (url, _), httpx.Client(base_url=url) as c:
        assert c.get("/api/v1/models", headers={"Host": "emolens.example"}).status_code == 200
        assert c.get("/api/v1/models", headers={"Host": "a.corp.example:443"}).status_code == 200
        assert_error(c.get("/api/v1/models", headers={"Host": "localhost"}), 400)


def test_serve_allows_the_address_it_binds():
    from emolens.cli.serve import bound_names

    assert bound_names("127.0.0.1") == ["localhost", "127.0.0.1", "::1"]
    assert "192.168.1.20" in bound_names("192.168.1.20")
    wildcard = bound_names("0.0.0.0")
    assert socket.gethostname() in wildcard and "0.0.0.0" not in wildcard


@pytest.mark.parametrize(("model", "served"), [("adaptive", "fast"), ("fast-int8+fast", "fast-int8")])
def test_app_config_of_a_routed_or_ensemble_server_names_the_model_it_sends(tmp_path, model, served):
    """The app runs one ONNX file: the server's model for clear faces (adaptive) or the first member
    of an ensemble, and the config says so. It was a 500."""
    with running_server(tmp_path / "home", model=model) as (url, _), httpx.Client(base_url=url, timeout=60) as c:
        r = c.get("/app/config.json")
        assert r.status_code == 200, r.text
        config = r.json()["model"]
        assert config["name"] == served and config["server_model"] == model and config["note"], config
        assert c.get(config["url"]).status_code == 200
        assert c.get("/app/sw.js").status_code == 200


# -- 2. shadow faces need the personal-read key --------------------------------------------------


def test_shadow_disagreements_and_crops_need_the_personal_read_key(tmp_path):
    with running_server(tmp_path / "home") as (url, app), httpx.Client(base_url=url, timeout=60) as c:
        read = {"X-API-Key": key(app, "read")}
        query = {"active": "fast", "shadow": "robust"}
        assert_error(c.get("/api/v1/shadow/disagreements", params=query), 401)
        assert c.get("/api/v1/shadow/disagreements", params=query, headers=read).status_code == 200
        crop = "/api/v1/shadow/crops/" + "a" * 64 + ".png"
        assert_error(c.get(crop), 401)
        assert_error(c.get(crop, headers=read), 404)
        assert c.get("/api/v1/shadow").status_code == 200  # the report holds counts only


# -- 3. uploads: swept on a timer, capped, deleted for real, erased with a person -----------------


def test_uploads_are_swept_on_a_timer_and_leave_no_copy(tmp_path):
    home = tmp_path / "home"
    with running_server(home, analysis_ttl_s=2) as (url, app), httpx.Client(base_url=url, timeout=60) as c:
        store = app.state.emolens.analyses.store
        for _ in range(3):
            assert analyze(c).status_code == 200
        assert store.count() == 3 and MARKER in database_bytes(home)
        full = len(database_bytes(home))
        deadline = time.monotonic() + 30
        while store.count() and time.monotonic() < deadline:  # no request comes: only the timer sweeps
            time.sleep(0.2)
        assert store.count() == 0
        deadline = time.monotonic() + 10
        while MARKER in database_bytes(home) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert MARKER not in database_bytes(home)  # zeroed, not just unlinked from the table
        assert len(database_bytes(home)) <= full - 2 * len(ASTRONAUT)  # and the space given back


def test_uploads_are_capped_in_bytes(tmp_path):
    cap_mb = 2.5 * len(ASTRONAUT) / 1e6
    with running_server(tmp_path / "home", analysis_cache_mb=cap_mb) as (url, app):
        with httpx.Client(base_url=url, timeout=60) as c:
            ids = [analyze(c).json()["analysis_id"] for _ in range(4)]
        store = app.state.emolens.analyses.store
        assert store.count() == 2
        assert store.get(ids[0]) is None and store.get(ids[-1]) is not None  # the oldest went first


def test_erasing_a_person_erases_the_recent_uploads(emolens_home):
    from emolens.store.analyses import AnalysisStore
    from emolens.store.people import PeopleStore
    from emolens.workspace import get_settings

    url = get_settings().db_url
    uploads = AnalysisStore(url)
    uploads.put("k" * 32, {}, ASTRONAUT)
    people = PeopleStore(url)
    with people.transaction() as rows:
        rows.person("alice", create=True, name="Alice")
    with people.transaction() as rows:
        row, _ = rows.person("alice")
        counts, _ = rows.delete_person(row)
    assert counts["recent_uploads"] == 1 and uploads.count() == 0
    uploads.sweep()
    assert MARKER not in database_bytes(emolens_home)


# -- 4. a slow database never freezes the server ---------------------------------------------------


def test_a_locked_database_answers_503_and_healthz_stays_up(tmp_path):
    home = tmp_path / "home"
    with running_server(home, database_timeout_s=2, request_timeout_s=60) as (url, _):
        holder = sqlite3.connect(home / "emolens.db", timeout=1, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            with httpx.Client(base_url=url, timeout=60) as c:
                answer: list[httpx.Response] = []
                t = threading.Thread(target=lambda: answer.append(analyze(c)))
                t.start()
                with httpx.Client(base_url=url, timeout=5) as probe:  # answered while the write waits
                    for _ in range(10):
                        assert probe.get("/healthz").status_code == 200
                        time.sleep(0.2)
                t.join(60)
                assert_error(answer[0], 503, "database_unavailable", "did not answer")
        finally:
            holder.execute("ROLLBACK")
            holder.close()


def _postgres_processes(server) -> list[int]:
    """The server's postmaster and its children (backends, workers), by pid."""
    import subprocess

    main = int((server.folder / "data" / "postmaster.pid").read_text().split()[0])
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(main)], capture_output=True, text=True).stdout
    return [main, *(int(p) for p in out.split())]


def test_a_hung_postgresql_leaves_the_server_answering(tmp_path, postgres_server):
    """PostgreSQL stopped dead (SIGSTOP: it accepts nothing and answers nothing): requests that need
    it get 503 or 504 in time, /healthz and /readyz answer at once, and all recovers after."""
    import os
    import signal

    url_db = postgres_server.new_database()
    settings = {"database_url": url_db, "database_timeout_s": 2, "request_timeout_s": 10}
    with running_server(tmp_path / "home", **settings) as (url, _), httpx.Client(base_url=url, timeout=30) as c:
        assert c.get("/api/v1/feedback/stats").status_code == 200
        pids = _postgres_processes(postgres_server)
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            assert_error(analyze(c), 503, "database_unavailable")  # the analysis itself needs no database
            assert_error(c.get("/api/v1/feedback/stats"), 504, "request_timeout")
            with httpx.Client(base_url=url, timeout=5) as probe:
                assert probe.get("/healthz").status_code == 200
                ready = probe.get("/readyz", timeout=15)
                assert ready.status_code == 503 and "did not answer" in ready.json()["checks"]["database"]
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        deadline = time.monotonic() + 60
        while c.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert analyze(c).status_code == 200


# -- 5. storage errors are 507 / 503 with the reason, and /readyz tells --------------------------


def test_a_full_database_is_507_and_readyz_says_so(tmp_path):
    from emolens.store.db import get_engine

    with running_server(tmp_path / "home") as (url, app), httpx.Client(base_url=url, timeout=60) as c:
        engine = get_engine(app.state.emolens.db_url)

        def full(dbapi_conn, _record) -> None:  # SQLite's own "database or disk is full"
            pages = dbapi_conn.execute("PRAGMA page_count").fetchone()[0]
            dbapi_conn.execute(f"PRAGMA max_page_count={pages}")

        event.listen(engine, "connect", full)
        engine.dispose()
        try:
            r = analyze(c)
            assert_error(r, 507, "storage", "full")
            ready = c.get("/readyz")
            assert ready.status_code == 503 and "full" in ready.json()["checks"]["storage"], ready.text
        finally:
            event.remove(engine, "connect", full)
            engine.dispose()
        assert analyze(c).status_code == 200
        assert c.get("/readyz").json()["checks"]["storage"] == "ok"


def test_a_database_that_is_down_is_503_and_readyz_hides_where_it_is(tmp_path):
    pytest.importorskip("psycopg", reason="needs the postgres extra")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    db = f"postgresql+psycopg://emolens:secret@127.0.0.1:{port}/emolens"
    with (
        running_server(tmp_path / "home", wait="/healthz", database_url=db) as (url, _),
        httpx.Client(base_url=url, timeout=60) as c,
    ):
        assert_error(c.get("/api/v1/feedback/stats"), 503, "database_unavailable")
        assert_error(analyze(c), 503, "database_unavailable")
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["database"].startswith("error")
        assert str(port) not in ready.text and "127.0.0.1" not in ready.text and "secret" not in ready.text


# -- 7. an ambiguous attendance-session prefix is a 409 naming the candidates ----------------------


def test_an_ambiguous_session_prefix_is_a_409_listing_the_candidates(tmp_path):
    from emolens.store.people import SessionRow

    with running_server(tmp_path / "home") as (url, app), httpx.Client(base_url=url, timeout=60) as c:
        from emolens.store.db import session

        with session(app.state.emolens.db_url) as s:
            for uid in ("abc111111111", "abc222222222"):
                s.add(SessionRow(uid=uid, name=uid, started_at=datetime.now(UTC), version=1, threshold=0.5))
        admin = {"X-API-Key": key(app, "admin")}
        for method, path, kwargs in (
            ("GET", "/api/v1/attendance/sessions/abc/report", {}),
            ("POST", "/api/v1/attendance/sessions/abc/stop", {}),
            ("POST", "/api/v1/attendance/sessions/abc/images", {"files": {"image": ("a.jpg", ASTRONAUT)}}),
        ):
            r = c.request(method, path, headers=admin, **kwargs)
            err = assert_error(r, 409, "ambiguous")
            assert "abc111111111" in err["message"] and "abc222222222" in err["message"], err
        assert c.get("/api/v1/attendance/sessions/abc1/report", headers=admin).status_code == 200


# -- 37.2: the API docs work offline and load nothing from elsewhere -------------------------------


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_api_docs_load_only_same_origin_assets(tmp_path, page):
    with running_server(tmp_path / "home") as (url, _), httpx.Client(base_url=url, timeout=60) as c:
        r = c.get(page)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "http" not in csp, csp
        refs = re.findall(r'(?:src|href)="([^"]+)"', r.text)
        assert refs and all(ref.startswith("/") and not ref.startswith("//") for ref in refs), refs
        assert "<script>" not in r.text  # no inline script: the CSP allows none
        for ref in refs:
            asset = c.get(ref)
            assert asset.status_code == 200 and asset.content, ref
        own = " ".join(c.get(ref).text for ref in refs if ref.startswith("/static/"))
        assert "/openapi.json" in r.text + own


# -- 8. keys in a query are redacted by their decoded name -----------------------------------------


def test_the_access_log_redacts_a_key_whose_name_is_percent_encoded():
    from emolens.serve.logs import redact

    for target in ("/api/v1/feedback?k%65y=emk_secret", "/api/v1/live?a=1&%6Bey=emk_secret", "/x?API_KEY=emk_secret"):
        assert "emk_secret" not in redact(target) and "REDACTED" in redact(target), target


# -- issue 35: every route declares the key it needs ---------------------------------------------

PERSONAL = re.compile(
    r"^/api/v1/(feedback(/\{uid\}.*|/export)?$|people|identify|attendance|shadow/(disagreements|crops))"
)
OPEN = {"/healthz", "/readyz", "/metrics", "/", "/docs", "/redoc", "/docs-assets/{filename}", "/app", "/app/"}
OPEN |= {"/app/sw.js", "/app/{filename}", "/app/vendor/{build}/{filename}"}  # code, no data


def test_every_route_declares_the_key_it_needs(tmp_path):
    """Each route names one key dependency (``deps.ReadKey``, ``PersonalReadKey``, ``WriteKey``...):
    writes need write or admin, personal data the personal-read key, the rest the read rule; only
    probes, pages and code are open."""
    from fastapi.routing import APIRoute, APIWebSocketRoute

    from emolens.core.settings import Settings
    from emolens.serve import create_app

    def flat(routes, prefix: str = ""):
        for r in routes:
            if hasattr(r, "original_router"):  # FastAPI's included routers
                yield from flat(r.original_router.routes, prefix + r.include_context.prefix)
            elif isinstance(r, APIRoute) and not isinstance(r, APIWebSocketRoute):
                yield prefix, r

    app = create_app(Settings(home=tmp_path / "home"))
    strong = {"require_write", "require_admin"}
    personal = {"personal_read_access", "require_read"} | strong
    checked = 0
    for prefix, route in flat(app.routes):
        checked += 1
        assert not prefix, prefix  # paths below carry their routers' prefixes already
        keys = {d.call.__name__ for d in route.dependant.dependencies if d.call is not None}
        keys &= {"read_access", "personal_read_access", "require_read"} | strong
        where = f"{sorted(route.methods)} {route.path}"
        if route.path in OPEN:
            assert not keys, where
            continue
        assert len(keys) == 1, (where, keys)
        if route.path in ("/api/v1/analyze", "/api/v1/identify"):  # reads, by upload
            assert keys == ({"personal_read_access"} if "identify" in route.path else {"read_access"}), where
        elif route.methods & {"POST", "DELETE", "PUT", "PATCH"}:
            assert keys <= strong, (where, keys)
        elif PERSONAL.match(route.path) and route.path != "/api/v1/feedback/stats":
            assert keys <= personal, (where, keys)
    assert checked >= 40
